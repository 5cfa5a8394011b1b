"""Quality metrics of a model against a reference on the same token windows: KL divergence, top-1
agreement, perplexity. One implementation, used by quantize's report and by compare.

Scoring rule (as llama.cpp's perplexity tool): each window of `context` tokens is run from an empty
cache and only its second half is scored, so every scored token sees at least context/2 tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from onnx_edge.errors import GenerationError

SCORING_RULE = "windows of {context} tokens from an empty cache; the second half of each window is scored"


def _topics(parity: int) -> str:
    """Python's bundled pydoc topics (English prose, offline everywhere), split by key so that
    calibration (parity 0) and evaluation (parity 1) never share text."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for i, k in enumerate(sorted(topics)) if i % 2 == parity)


def calibration_text() -> str:
    return _topics(0)


def evaluation_text() -> str:
    return _topics(1)


def token_windows(tokenizer, text: str, context: int, max_windows: int) -> np.ndarray:
    """(W, context) int64 windows cut from the tokenized text, evenly spread over it."""
    if context < 4:
        raise GenerationError(f"context must be at least 4 tokens, got {context}")
    if max_windows < 1:
        raise GenerationError(f"max_windows must be at least 1, got {max_windows}")
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    available = len(ids) // context
    if available == 0:
        raise GenerationError(f"the evaluation text has {len(ids)} tokens, fewer than one window of {context}")
    picks = np.linspace(0, available - 1, num=min(max_windows, available)).round().astype(int)
    return np.stack([ids[p * context:(p + 1) * context] for p in picks])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def window_logits(session, window: np.ndarray) -> np.ndarray:
    """Logits (context, vocab) for one window run from an empty cache, as the model returns them (compare
    keeps the reference's float32 logits instead of float64 log-probabilities: half the memory, same scores)."""
    ids = window[None]  # (1, C)
    logits, _ = session.forward(ids, np.ones_like(ids), np.arange(ids.shape[1], dtype=np.int64)[None],
                                session.empty_cache(1))
    return logits[0]


def window_logprobs(session, window: np.ndarray) -> np.ndarray:
    """Log-probabilities (context, vocab) for one window run from an empty cache."""
    return log_softmax(window_logits(session, window))


def scored_rows(context: int) -> slice:
    """The rows of a window's (context, vocab) outputs that score_window reads (see SCORING_RULE)."""
    return slice(context // 2, context - 1)


@dataclass
class WindowScore:
    """Per-token sums for one window's scored half."""

    tokens: int
    kl_sum: float
    top1_agree: int
    nll_ref_sum: float
    nll_sum: float


def score_window(ref_logp: np.ndarray, logp: np.ndarray, window: np.ndarray) -> WindowScore:
    """ref_logp/logp (C, V); position t predicts window[t + 1]; the second half is scored."""
    c = window.shape[0]
    rows = np.arange(c // 2, c - 1)
    targets = window[rows + 1]
    p_ref = np.exp(ref_logp[rows])
    kl = np.sum(p_ref * (ref_logp[rows] - logp[rows]), axis=-1)  # (R,) KL(ref || candidate)
    agree = np.argmax(ref_logp[rows], -1) == np.argmax(logp[rows], -1)
    return WindowScore(tokens=len(rows), kl_sum=float(np.maximum(kl, 0).sum()), top1_agree=int(agree.sum()),
                       nll_ref_sum=float(-ref_logp[rows, targets].sum()), nll_sum=float(-logp[rows, targets].sum()))


@dataclass
class QualityReport:
    kl: float  # mean KL(reference || candidate) per scored token, nats
    top1: float  # share of scored tokens whose argmax agrees with the reference
    perplexity: float
    perplexity_reference: float
    tokens: int
    windows: int
    context: int
    per_window_kl: list[float] = field(default_factory=list)
    text: str = "pydoc_data.topics (evaluation half)"
    scoring: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare_sessions(reference, candidate, windows: np.ndarray, text_label: str, on_window=None) -> QualityReport:
    """Run both sessions on every window and aggregate. Sessions expose DecoderSession.forward."""
    scores = []
    for window in windows:
        scores.append(score_window(window_logprobs(reference, window), window_logprobs(candidate, window), window))
        if on_window:
            on_window()
    return aggregate(scores, windows.shape[1], text_label)


def aggregate(scores: list[WindowScore], context: int, text_label: str) -> QualityReport:
    n = sum(s.tokens for s in scores)
    return QualityReport(
        kl=sum(s.kl_sum for s in scores) / n,
        top1=sum(s.top1_agree for s in scores) / n,
        perplexity=float(np.exp(sum(s.nll_sum for s in scores) / n)),
        perplexity_reference=float(np.exp(sum(s.nll_ref_sum for s in scores) / n)),
        tokens=n, windows=len(scores), context=context,
        per_window_kl=[s.kl_sum / s.tokens for s in scores], text=text_label,
        scoring=SCORING_RULE.format(context=context),
    )
