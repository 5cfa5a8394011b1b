"""Choose the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition penalty.

Pure numpy so the runtime stays torch-free; each sampler owns its RNG so one seed reproduces a run.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from onnx_edge.errors import GenerationError


def _is_real(value) -> bool:
    # bool is an int subclass; True as a temperature is a caller bug, not 1.0.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def bad_option(name: str, rule: str, value) -> GenerationError:
    """The error for a generation option a caller set, named as its CLI flag (the keyword is the flag's name with
    underscores: top_p is --top-p)."""
    return GenerationError(f"--{name.replace('_', '-')} must be {rule}, got {value!r}"[:200])


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; the defaults are plain greedy decoding. Checked once, when built (frozen, so every
    later reader trusts it; `dataclasses.replace` builds, and so checks, a new one)."""

    temperature: float = 0.0  # 0 = greedy (argmax); everything else below is then ignored
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    seed: int | None = None  # None = fresh OS entropy each sampler

    def __post_init__(self) -> None:
        """Raise GenerationError naming the first bad field; store Fractions and numpy scalars as plain float /
        int."""
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            if _is_real(getattr(self, name)):
                object.__setattr__(self, name, float(getattr(self, name)))
        t = self.temperature
        # `not x >= 0` is also true for NaN, so NaN never slips through a range check.
        if not _is_real(t) or not math.isfinite(t) or not t >= 0:
            raise bad_option("temperature", "a finite number >= 0", t)
        if not _is_int(self.top_k) or self.top_k < 0:
            raise bad_option("top_k", "an integer >= 0 (0 = off)", self.top_k)
        p = self.top_p
        if not _is_real(p) or not (0 < p <= 1):
            raise bad_option("top_p", "a number in (0, 1]", p)
        m = self.min_p
        if not _is_real(m) or not (0 <= m < 1):
            raise bad_option("min_p", "a number in [0, 1)", m)
        r = self.repetition_penalty
        if not _is_real(r) or not math.isfinite(r) or r <= 0:
            raise bad_option("repetition_penalty", "a finite number > 0", r)
        # numpy's SeedSequence rejects negative seeds; say so in our terms instead.
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise bad_option("seed", "an integer >= 0 or None", self.seed)
        object.__setattr__(self, "top_k", int(self.top_k))
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))


def _check_logits(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits)
    if x.ndim != 2 or x.shape[-1] == 0:
        raise ValueError(f"logits must have shape (batch, vocab), got {x.shape}")
    return x


def _refuse_nan(values: np.ndarray) -> None:
    """`values`: one per row that is NaN if its row holds a NaN (argmax picks, row maxima): O(batch), so the
    per-token path never scans the logits a second time."""
    if np.isnan(values).any():
        raise GenerationError("the model produced NaN logits: its weights are likely broken (re-export it, or "
                              "run `onnx-edge verify` on the folder)")


def _greedy(logits: np.ndarray) -> np.ndarray:
    x = _check_logits(logits)
    ids = np.argmax(x, axis=-1)  # argmax returns a NaN's index when the row has one
    _refuse_nan(x[np.arange(x.shape[0]), ids])
    return ids.astype(np.int64)


def filtered_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Probabilities (float64, rows sum to 1) after temperature, top-k, top-p and min-p; needs temperature > 0."""
    z = _check_logits(logits).astype(np.float64)
    row_max = z.max(axis=-1, keepdims=True)  # NaN wherever a row holds one
    _refuse_nan(row_max)
    # Subtract the row max before dividing: a tiny temperature would otherwise overflow to inf - inf.
    z = (z - row_max) / float(params.temperature)
    z = np.nan_to_num(z, nan=-np.inf, neginf=-np.inf)
    vocab = z.shape[-1]
    if 0 < params.top_k < vocab:
        # k-th largest per row; ties with it are kept, as Hugging Face does.
        kth = np.partition(z, vocab - params.top_k, axis=-1)[:, vocab - params.top_k, None]
        z = np.where(z >= kth, z, -np.inf)
    top = z.max(axis=-1, keepdims=True)
    if not np.isfinite(top).all():
        raise ValueError("every row of logits needs a finite maximum (got NaN, +inf or an all -inf row)")
    probs = np.exp(z - top)  # subtracting the max keeps exp from overflowing; -inf becomes 0
    probs /= probs.sum(axis=-1, keepdims=True)
    if params.top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # Keep a token while the mass before it is still short of top_p: the smallest set reaching
        # top_p, and the top token always (the mass before it is 0 < top_p).
        before = np.cumsum(sorted_p, axis=-1) - sorted_p
        keep = np.empty_like(sorted_p, dtype=bool)
        np.put_along_axis(keep, order, before < params.top_p, axis=-1)
        probs = np.where(keep, probs, 0.0)
    if params.min_p > 0.0:
        # Relative to the row's best token, so renormalising above does not change who survives.
        probs = np.where(probs >= params.min_p * probs.max(axis=-1, keepdims=True), probs, 0.0)
    return probs / probs.sum(axis=-1, keepdims=True)


def make_sampler(params: SamplingParams) -> Callable[[np.ndarray], np.ndarray]:
    """A function (batch, vocab) logits -> (batch,) int64 token ids; same seed and inputs, same ids."""
    if params.temperature == 0:
        return _greedy
    # One generator per batch row, each seeded alike: a row of a seeded batch draws exactly what the same
    # prompt draws alone (with seed None every row gets fresh OS entropy).
    rngs: list[np.random.Generator] = []

    def sample(logits: np.ndarray) -> np.ndarray:
        probs = filtered_probs(logits, params)
        cdf = np.cumsum(probs, axis=-1)
        while len(rngs) < probs.shape[0]:
            rngs.append(np.random.Generator(np.random.PCG64(params.seed)))
        u = np.array([rng.random() for rng in rngs[:probs.shape[0]]])  # (B,)
        # Inverse-CDF draw for every row at once. (1 - u) lies in (0, 1], so the target is > 0 and
        # the first index whose cdf reaches it always has nonzero probability.
        target = (1.0 - u)[:, None] * cdf[:, -1:]
        return np.argmax(cdf >= target, axis=-1).astype(np.int64)

    return sample


def apply_repetition_penalty(
    logits: np.ndarray, token_history: Sequence[Sequence[int]] | np.ndarray, penalty: float
) -> np.ndarray:
    """Hugging Face's penalty: seen tokens' positive logits / penalty, negative ones * penalty; returns a copy.
    `penalty` comes checked from SamplingParams."""
    out = np.array(_check_logits(logits), copy=True)
    if len(token_history) != out.shape[0]:
        raise ValueError(f"token_history has {len(token_history)} rows but logits has {out.shape[0]}")
    if penalty == 1.0:
        return out
    vocab = out.shape[-1]
    for row, history in enumerate(token_history):
        # unique: a token seen five times is penalised once, as in Hugging Face.
        ids = np.unique(np.asarray(history, dtype=np.int64).reshape(-1))
        if ids.size == 0:
            continue
        if ids[0] < 0 or ids[-1] >= vocab:
            raise ValueError(f"token_history row {row} has ids outside [0, {vocab})")
        seen = out[row, ids]
        out[row, ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    # An extreme penalty can push logits past float32's range; keep them finite so sampling stays defined.
    info = np.finfo(out.dtype) if np.issubdtype(out.dtype, np.floating) else None
    return np.clip(out, info.min, info.max) if info is not None else out
