"""Check an exported graph against the PyTorch model: logits for the prefill and cached decode
steps, then a greedy continuation that must match token for token."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from onnx_edge.runtime.session import DecoderSession

PROMPT = "The capital of France is Paris, and the capital of Germany is"


@dataclass
class ValidationReport:
    prefill_tokens: int
    decode_steps: int
    max_abs_diff: float  # over prefill and every decode step
    step_max_abs_diff: list[float]
    tolerance: float
    greedy_tokens: int
    greedy_match: bool
    greedy_reference: list[int] = field(default_factory=list)
    greedy_onnx: list[int] = field(default_factory=list)
    near_tie_at: int | None = None  # a divergence where PyTorch's own top-2 gap is within tolerance
    passed: bool = False

    def to_dict(self):
        return asdict(self)


def _cache_kw(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); use whichever this version takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_out(result):
    return getattr(result, "cache", None) or result.past_key_values


def validate(loaded, session: DecoderSession, decode_steps: int = 3, greedy_tokens: int = 16,
             on_step=None) -> ValidationReport:
    import torch

    model, tok = loaded.model, loaded.tokenizer
    ids = np.array([tok(PROMPT, add_special_tokens=False)["input_ids"]], dtype=np.int64)  # (1, S)
    if ids.shape[1] == 0:
        ids = np.arange(1, 9, dtype=np.int64)[None]
    ids = ids % session.shape.vocab_size

    diffs, ref_max = [], 0.0
    t_out = o_out = None
    tokens = ids
    with torch.inference_mode():
        # Prefill, then decode steps fed with the same token on both sides.
        t_cache, o_cache = None, session.empty_cache(1)
        past_len = 0
        for step in range(decode_steps + 1):
            n = tokens.shape[1]
            mask = np.ones((1, past_len + n), dtype=np.int64)
            pos = np.arange(past_len, past_len + n, dtype=np.int64)[None]
            t_res = model(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                          position_ids=torch.from_numpy(pos), use_cache=True, **{_cache_kw(model): t_cache})
            t_out, t_cache = t_res.logits.float().numpy(), _cache_out(t_res)
            o_out, o_cache = session.forward(tokens, mask, pos, o_cache)
            diffs.append(float(np.max(np.abs(t_out - o_out))))
            ref_max = max(ref_max, float(np.max(np.abs(t_out))))
            past_len += n
            tokens = np.argmax(t_out[:, -1:], axis=-1).astype(np.int64)  # (1, 1)
            if on_step:
                on_step()
        tolerance = 1e-4 * max(1.0, ref_max) + 1e-4
        ref_tokens, ref_logits = _greedy_torch(model, ids, greedy_tokens)
    onnx_tokens = _greedy_onnx(session, ids, greedy_tokens)
    match = ref_tokens == onnx_tokens
    near_tie = None
    if not match:
        t = next(i for i, (a, b) in enumerate(zip(ref_tokens, onnx_tokens)) if a != b)
        gap = float(ref_logits[t][ref_tokens[t]] - ref_logits[t][onnx_tokens[t]])
        near_tie = t if gap <= tolerance else None
    max_diff = max(diffs)
    report = ValidationReport(
        prefill_tokens=int(ids.shape[1]), decode_steps=decode_steps, max_abs_diff=max_diff,
        step_max_abs_diff=diffs, tolerance=tolerance, greedy_tokens=greedy_tokens, greedy_match=match,
        greedy_reference=ref_tokens, greedy_onnx=onnx_tokens, near_tie_at=near_tie,
    )
    report.passed = max_diff <= tolerance and (match or near_tie is not None)
    return report


def _greedy_torch(model, ids: np.ndarray, n: int) -> tuple[list[int], list[np.ndarray]]:
    import torch

    out, logits_seen, cache = [], [], None
    tokens, past = torch.from_numpy(ids), 0
    for _ in range(n):
        s = tokens.shape[1]
        res = model(input_ids=tokens, attention_mask=torch.ones(1, past + s, dtype=torch.long),
                    position_ids=torch.arange(past, past + s)[None], use_cache=True, **{_cache_kw(model): cache})
        last = res.logits[0, -1].float().numpy()
        cache, past = _cache_out(res), past + s
        out.append(int(np.argmax(last)))
        logits_seen.append(last)
        tokens = torch.tensor([[out[-1]]])
    return out, logits_seen


def _greedy_onnx(session: DecoderSession, ids: np.ndarray, n: int) -> list[int]:
    out, cache, tokens, past = [], session.empty_cache(1), ids, 0
    for _ in range(n):
        s = tokens.shape[1]
        logits, cache = session.forward(tokens, np.ones((1, past + s), np.int64),
                                        np.arange(past, past + s, dtype=np.int64)[None], cache)
        past += s
        out.append(int(np.argmax(logits[0, -1])))
        tokens = np.array([[out[-1]]], dtype=np.int64)
    return out
