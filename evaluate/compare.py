"""`onnx-edge compare`: several variants of one model side by side — size, quality against a reference
(perplexity, KL divergence, top-1 agreement), greedy-generation agreement and speed. Torch-free.

Quality comes from `evaluate/quality.py` (token_windows, window_logits/log_softmax, score_window, aggregate)
and speed from each variant's `speed()` (bench's measurement in a fresh process): this module only
orchestrates them. Variants come from variants.describe (onnx-edge folders; genai_engine.py for
onnxruntime-genai folders, llama_cpp_engine.py for .gguf files) or, for `pytorch:SOURCE`, from
onnx_edge.export.torch_reference, built by the CLI and handed in, so nothing here imports torch. The report
and its table are report.py's.

Every variant opens an Engine (engine.py): `forward(ids, mask, positions, past)` returns (logits, cache) and
`empty_cache(batch)` the empty past; `greedy(ids, n)` returns n greedy tokens with eos ignored. The reference
runs first (its scored logits kept as float32, spilled to a temporary file when large), then each variant is
loaded alone, scored and released: only two models are ever in memory.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from onnx_edge.evaluate.bench import BenchParams, library_versions
from onnx_edge.evaluate.cpu import cpu_isa
from onnx_edge.evaluate.engine import CompareError, Variant
from onnx_edge.evaluate.report import CompareReport, VariantResult
from onnx_edge.progress import Steps


# Encoded by every variant's tokenizer: equal ids = the same tokenizer, for all practical purposes.
PROBE_TEXT = ("Hello, world! The quick brown fox jumps over 13 lazy dogs.\n\tdef f(x): return x ** 2  # ok\n"
              "naïve café, Straße, 東京, emoji 🙂, <b>tags</b> and   spaces.")
DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three uses of a paperclip.",
    "Translate 'good morning' into Spanish and German.",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the mountains,",
    "Give me one tip for writing clear emails.",
)
SPILL_BYTES = 1 << 30  # reference logits larger than this go to a temporary file instead of memory


# --------------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------------


@dataclass
class GenerationAgreement:
    """Greedy tokens (eos ignored) of a variant against the reference's on the same prompts."""

    prompts: int
    gen_tokens: int
    matched: list[int]  # per prompt: tokens equal to the reference's before the first divergence
    mean_matched: float
    min_matched: int
    identical: float  # share of prompts whose gen_tokens tokens all equal the reference's
    tokens: list[list[int]] = field(default_factory=list)


def agreement(reference: list[list[int]], candidate: list[list[int]], gen_tokens: int) -> GenerationAgreement:
    matched = []
    for ref, cand in zip(reference, candidate):
        n = 0
        for a, b in zip(ref, cand):
            if a != b:
                break
            n += 1
        matched.append(n)
    return GenerationAgreement(prompts=len(matched), gen_tokens=gen_tokens, matched=matched,
                               mean_matched=float(np.mean(matched)), min_matched=int(min(matched)),
                               identical=sum(m == gen_tokens for m in matched) / len(matched),
                               tokens=[list(c) for c in candidate])


@dataclass(frozen=True)
class CompareOptions:
    """What compare measures; checked once, by compare()."""

    text: str | None = None  # evaluation text (None: quality.evaluation_text())
    text_label: str = "pydoc_data.topics (evaluation half)"
    context: int = 256
    eval_windows: int = 8  # at most; a short text gives fewer
    prompts: Sequence[str] | None = None  # None: DEFAULT_PROMPTS
    agreement_tokens: int = 32  # greedy tokens per prompt for generation agreement (eos ignored)
    speed: bool = True
    bench: BenchParams = field(default_factory=BenchParams)  # the speed measurement (checked when it is made)


def check_compatible(variants: list[Variant], reference: Variant) -> None:
    """One vocabulary and one tokenizer for all, or a one-line CompareError naming the odd one out."""
    for v in variants:
        if v.vocab_size != reference.vocab_size:
            raise CompareError(f"{v.name} has a vocabulary of {v.vocab_size} tokens but the reference "
                               f"{reference.name} has {reference.vocab_size}: compare needs variants of one model")
    probe = reference.encode(PROBE_TEXT)
    for v in variants:
        if v is reference or (v.tokenizer_sha256 and v.tokenizer_sha256 == reference.tokenizer_sha256):
            continue
        if v.encode(PROBE_TEXT) != probe:
            raise CompareError(f"{v.name} tokenizes differently from the reference {reference.name} "
                               f"(a probe text encodes to other ids): compare needs variants of one model")


def pick_reference(variants: list[Variant], reference: Variant | None) -> Variant:
    """--reference, else the fp32 variant, else the first one."""
    if reference is not None:
        return reference
    return next((v for v in variants if v.precision == "fp32"), variants[0])


def display_names(variants: list[Variant]) -> list[Variant]:
    """The variants under names that tell them apart: folder names, made longer only where two read the same."""
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        names = [f"{Path(v.path).parent.name}/{Path(v.path).name}" if v.path else v.name for v in variants]
    if len(set(names)) < len(names):
        names = [v.spec for v in variants]
    return [v if v.name == name else replace(v, name=name) for v, name in zip(variants, names)]


def _check_positive(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CompareError(f"{name} must be an integer >= {low}, got {value!r}")


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (UTF-8); blank lines are skipped."""
    from onnx_edge.textfile import read_utf8

    text = read_utf8(Path(path), CompareError)
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CompareError(f"{path}: no prompts (one per line)")
    return prompts


def encode_prompts(encoder: Variant, prompts: list[str]) -> tuple[list[list[int]], bool]:
    """Token ids of each prompt: the chat template applied when the encoding variant has one (as generate
    does by default), else the plain text with the tokenizer's special tokens."""
    if encoder.chat_template:
        from onnx_edge.runtime.chat import render_chat

        out = []
        for p in prompts:
            text = render_chat(encoder.chat_template, [{"role": "user", "content": p}], add_generation_prompt=True,
                               bos_token=encoder.bos_token, eos_token=encoder.eos_token)
            out.append(encoder.encode(text, False))
        return out, True
    return [encoder.encode(p, True) for p in prompts], False


class _LogitStore:
    """The reference's scored rows (float32 logits) for every window; in memory, or a temporary file when big."""

    def __init__(self, windows: int, context: int, vocab: int):
        from onnx_edge.evaluate.quality import scored_rows

        self.rows = scored_rows(context)
        self.context, self.vocab = context, vocab
        n_rows = len(range(context)[self.rows])
        shape = (windows, n_rows, vocab)
        self._tmp = None
        if math.prod(shape) * 4 > SPILL_BYTES:
            self._tmp = tempfile.TemporaryDirectory(prefix="onnx-edge-compare-")
            self.data = np.lib.format.open_memmap(os.path.join(self._tmp.name, "reference.npy"), mode="w+",
                                                  dtype=np.float32, shape=shape)
        else:
            self.data = np.empty(shape, dtype=np.float32)

    def put(self, i: int, logits: np.ndarray) -> None:
        self.data[i] = logits[self.rows]

    def logprobs(self, i: int) -> np.ndarray:
        """(context, vocab) log-probabilities, exact in the scored rows (the others are never read)."""
        from onnx_edge.evaluate.quality import log_softmax

        full = np.zeros((self.context, self.vocab), dtype=np.float32)
        full[self.rows] = self.data[i]
        return log_softmax(full)

    def close(self) -> None:
        self.data = None
        if self._tmp is not None:
            self._tmp.cleanup()


def compare(variants: list[Variant], reference: Variant | None = None, options: CompareOptions | None = None,
            progress: bool = False) -> CompareReport:
    """Score every variant against the reference (see the module docstring)."""
    from onnx_edge.evaluate.quality import aggregate, evaluation_text, log_softmax, score_window, token_windows

    opts = options or CompareOptions()
    start = time.perf_counter()
    if not variants:
        raise CompareError("give at least one variant")
    for name in ("context", "eval_windows", "agreement_tokens"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(opts, name))
    paths = [os.path.realpath(v.path) for v in variants if v.path]
    if len(set(paths)) < len(paths):
        raise CompareError("the same variant is given twice")
    if reference is not None and reference.path:  # --reference naming one of the variants: that variant
        same = [v for v in variants if v.path and os.path.realpath(v.path) == os.path.realpath(reference.path)]
        reference = same[0] if same else reference
    ref = pick_reference(variants, reference)
    rows = list(variants) if any(v is ref for v in variants) else [ref, *variants]
    at = next(i for i, v in enumerate(rows) if v is ref)
    rows = display_names(rows)
    ref = rows[at]
    check_compatible(rows, ref)

    context = min([opts.context] + [v.context_length for v in rows])
    text = opts.text if opts.text is not None else evaluation_text()
    encoder = next((v for v in [ref, *rows] if v.runtime_tokenizer), ref)
    windows = token_windows(ref.tokenizer, text, context, opts.eval_windows)
    prompts = list(opts.prompts) if opts.prompts is not None else list(DEFAULT_PROMPTS)
    if not prompts:
        raise CompareError("no prompts")
    prompt_ids, chat = encode_prompts(encoder, prompts)
    needed = max(len(p) for p in prompt_ids) + opts.agreement_tokens
    for v in rows:
        if needed > v.context_length:
            raise CompareError(f"the longest prompt ({needed - opts.agreement_tokens} tokens) + {opts.agreement_tokens} generated "
                               f"tokens exceed {v.name}'s context of {v.context_length}; use shorter prompts or "
                               f"fewer --agreement-tokens")
    speed_rows = [v for v in rows if v.speed_worker] if opts.speed else []
    for v in speed_rows:
        opts.bench.check_context(v.context_length)

    n_windows, n_prompts = len(windows), len(prompt_ids)
    others = [v for v in rows if v is not ref]
    total = (1 + len(others)) * (n_windows + n_prompts + 1) + len(speed_rows)
    bar = Steps(total, enabled=progress, title="compare")
    open_ctx = max(context, needed)
    store = _LogitStore(n_windows, context, ref.vocab_size)
    results: dict[int, VariantResult] = {}
    try:
        # 1. the reference: its scored logits and greedy tokens, kept; its own row scores it against itself.
        with bar.step(f"load {ref.name} (reference)"):
            engine = ref.open(open_ctx)
        def score_ref(i, window, logits):
            store.put(i, logits)
            logp = store.logprobs(i)
            return score_window(logp, logp, window)

        try:
            scores, ref_tokens = _evaluate(engine, f"{ref.name} (reference)", windows, prompt_ids, bar,
                                           opts.agreement_tokens, score_ref)
        finally:
            engine.close()
            del engine
        ref_quality = aggregate(scores, context, opts.text_label)
        results[id(ref)] = VariantResult(ref.describe(), True, ref_quality.to_dict(),
                                         _generation(ref, ref_tokens, ref_tokens, opts.agreement_tokens))
        # 2. each variant alone against the stored reference.
        for v in others:
            with bar.step(f"load {v.name}"):
                engine = v.open(open_ctx)
            try:
                scores, tokens = _evaluate(engine, v.name, windows, prompt_ids, bar, opts.agreement_tokens,
                                           lambda i, window, logits: score_window(store.logprobs(i),
                                                                                  log_softmax(logits), window))
            finally:
                engine.close()
                del engine
            results[id(v)] = VariantResult(v.describe(), False, aggregate(scores, context, opts.text_label).to_dict(),
                                           _generation(v, ref_tokens, tokens, opts.agreement_tokens))
        # 3. speed, each model in a fresh process (bench's own measurement); what else ran then is recorded.
        host = {"cores": os.cpu_count(), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
        for v in rows:
            if not opts.speed:
                results[id(v)].speed_note = "skipped (--no-speed)"
            elif not v.speed_worker:
                results[id(v)].speed_note = v.speed_note
            else:
                with bar.step(f"speed: {v.name}"):
                    results[id(v)].speed = v.speed(opts.bench).to_dict()
    finally:
        store.close()
        bar.close()
    ordered = [results[id(v)] for v in rows]
    return CompareReport(
        reference=ref.describe(), variants=ordered, text=opts.text_label, scoring=ref_quality.scoring,
        context=context, windows=n_windows, scored_tokens=ref_quality.tokens, prompts=prompts, chat=chat,
        gen_tokens=opts.agreement_tokens,
        speed=(dict(provider=opts.bench.provider, prompt_tokens=opts.bench.prompt_tokens,
                    gen_tokens=opts.bench.gen_tokens, runs=opts.bench.runs, warmup=opts.bench.warmup)
               if opts.speed else None),
        created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), seconds=round(time.perf_counter() - start, 2),
        versions=library_versions(), machine=cpu_isa(), host=host if opts.speed else {})


def _generation(v: Variant, reference: list[list[int]], tokens: list[list[int]], gen_tokens: int) -> dict:
    """Agreement with the reference's greedy tokens, plus the first prompt's answer as text (the report shows
    what the numbers mean in words)."""
    return dict(asdict(agreement(reference, tokens, gen_tokens)), sample=v.decode(tokens[0]) if tokens else None)


def _evaluate(engine, label: str, windows, prompt_ids, bar, gen_tokens: int, score):
    """One engine over every window (`score(i, window, logits)` -> WindowScore) and every prompt (greedy)."""
    from onnx_edge.evaluate.quality import window_logits

    scores = []
    for i, window in enumerate(windows):
        with bar.step(f"{label}: window {i + 1}/{len(windows)}"):
            scores.append(score(i, window, window_logits(engine, window)))
    tokens = []
    for j, ids in enumerate(prompt_ids):
        with bar.step(f"{label}: prompt {j + 1}/{len(prompt_ids)}"):
            tokens.append(engine.greedy(ids, gen_tokens))
    return scores, tokens
