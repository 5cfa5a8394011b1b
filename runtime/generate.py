"""Generation, layered: `decode_steps` yields token ids per step (prefill, then cached decode),
`stream_generate` turns one sequence into text chunks, `generate_batch` collects Responses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from onnx_edge.errors import GenerationError
from onnx_edge.runtime.sampling import SamplingParams, apply_repetition_penalty, make_sampler
from onnx_edge.runtime.streaming import StreamDetokenizer


@dataclass
class Response:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (eos or stop string), "length", or "cancelled"
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float  # prompt in -> first token out (the prefill)
    decode_tps: float  # generated tokens after the first, per second
    total_s: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Chunk:
    text: str  # the new piece; never a split UTF-8 character
    token_id: int | None
    response: Response | None = None  # set on the last chunk only


@dataclass
class _Timing:
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now

    def ttft(self) -> float:
        return (self.first or time.perf_counter()) - self.start

    def decode_tps(self, n: int) -> float:
        if n < 2 or self.first is None or self.last == self.first:
            return 0.0
        return (n - 1) / (self.last - self.first)


def _check_lengths(model, prompts: list[list[int]], max_new_tokens: int, truncate: bool) -> list[list[int]]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise GenerationError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    ctx = model.shape.context_length
    out = []
    for ids in prompts:
        if not ids:
            raise GenerationError("prompt is empty (it encodes to no tokens)")
        if len(ids) >= ctx:
            if not truncate:
                raise GenerationError(
                    f"prompt is {len(ids)} tokens but the context window is {ctx}; shorten it or allow truncation"
                )
            ids = ids[-(ctx - 1):]  # keep the end: it is what the answer continues
        out.append(list(ids))
    return out


def decode_steps(model, prompts: list[list[int]], params: SamplingParams, max_new_tokens: int,
                 cancel=None) -> Iterator[np.ndarray]:
    """Yield (B,) sampled token ids per step. Prompts are left-padded; the KV cache is carried between steps.

    The cache is allocated once for prompt + new tokens (capped at the context) and written in place
    (see DecoderSession.step). Only the last position's logits are computed. A batch-1 request whose tokens
    start with the tokens of the previous batch-1 request (a chat's next turn) reuses that request's cache
    for the shared prefix and prefills only the rest; the result is the same as a fresh run."""
    params.validate()
    sampler = make_sampler(params)
    sess = model.session
    b = len(prompts)
    longest = max(len(p) for p in prompts)
    budget = min(max_new_tokens, model.shape.context_length - longest)
    if budget <= 0:
        return
    pad_id = model.shape.pad_token_id if model.shape.pad_token_id is not None else 0
    ids = np.full((b, longest), pad_id, dtype=np.int64)  # (B, S) left-padded
    mask = np.zeros((b, longest), dtype=np.int64)  # (B, S)
    for row, p in enumerate(prompts):
        ids[row, longest - len(p):] = p
        mask[row, longest - len(p):] = 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)  # (B, S): pads share position 0
    history = [list(p) for p in prompts]
    # The last sampled token is never fed back, so prompt + budget - 1 rows are written at most.
    capacity = longest + budget - 1
    if b == 1:
        cache, reused = sess.cache_for(list(prompts[0]), capacity)
        cache.token_ids = list(prompts[0][:reused])
    else:
        cache, reused = sess.new_cache(b, capacity), 0
    # Every mask this request will use is a prefix of one (B, capacity) array: no per-step allocation.
    full_mask = np.ones((b, max(capacity, longest)), dtype=np.int64)
    full_mask[:, :longest] = mask
    ids, positions = ids[:, reused:], positions[:, reused:]
    total = longest
    try:
        for step in range(budget):
            if cancel is not None and cancel.is_set():
                return
            logits = sess.step(ids, full_mask[:, :total], positions, cache)
            if cache.token_ids is not None:
                cache.token_ids.extend(int(t) for t in ids[0])
            last = logits[:, -1, :]  # (B, vocab)
            if params.repetition_penalty != 1.0:
                last = apply_repetition_penalty(last, history, params.repetition_penalty)
            tokens = np.asarray(sampler(last), dtype=np.int64)  # (B,)
            for row, t in enumerate(tokens):
                history[row].append(int(t))
            yield tokens
            ids = tokens[:, None]  # (B, 1)
            positions = positions[:, -1:] + 1  # (B, 1)
            total += 1
    finally:
        sess.keep(cache)  # batch 1 only: the next turn of a chat can start from it


def _stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the text's tail that could still grow into a stop string (not safe to emit yet)."""
    keep = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    return keep


def stream_generate(model, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                    stop=(), truncate: bool = False, cancel=None) -> Iterator[Chunk]:
    stops = tuple(stop or ())
    (prompt_ids,) = _check_lengths(model, [prompt_ids], max_new_tokens, truncate)
    params.validate()
    detok = StreamDetokenizer(model.tokenizer, skip_special_tokens=True)
    timing, tokens, text, emitted = _Timing(), [], "", 0
    reason = "length"
    for step in decode_steps(model, [prompt_ids], params, max_new_tokens, cancel):
        timing.tick()
        token = int(step[0])
        if token in model.eos_ids:
            reason = "stop"
            break
        tokens.append(token)
        text += detok.add(token)
        cut = _stop_at(text, stops)
        if cut is not None:
            text, reason = text[:cut], "stop"
            break
        safe = len(text) - _held_back(text, stops)
        if safe > emitted:
            yield Chunk(text[emitted:safe], token)
            emitted = safe
    else:
        if cancel is not None and cancel.is_set():
            reason = "cancelled"
    if reason != "stop":
        text += detok.flush()
        cut = _stop_at(text, stops)
        if cut is not None:
            text, reason = text[:cut], "stop"
    end = time.perf_counter()
    response = Response(text=text, token_ids=tokens, finish_reason=reason, prompt_tokens=len(prompt_ids),
                        generated_tokens=len(tokens),
                        ttft_s=timing.ttft(), decode_tps=timing.decode_tps(len(tokens)),
                        total_s=end - timing.start)
    yield Chunk(text[emitted:], None, response)


def generate_batch(model, prompts: list[list[int]], params: SamplingParams, max_new_tokens: int,
                   stop=(), truncate: bool = False, cancel=None) -> list[Response]:
    """Batch of B prompts; rows finish independently (eos, stop string, length)."""
    if len(prompts) == 1:
        *_, last = stream_generate(model, prompts[0], params, max_new_tokens, stop, truncate, cancel)
        return [last.response]
    stops = tuple(stop or ())
    prompts = _check_lengths(model, prompts, max_new_tokens, truncate)
    timing = _Timing()
    out = [[] for _ in prompts]
    reasons = [None] * len(prompts)
    for step in decode_steps(model, prompts, params, max_new_tokens, cancel):
        timing.tick()
        for row, t in enumerate(step):
            if reasons[row] is not None:
                continue
            if int(t) in model.eos_ids:
                reasons[row] = "stop"
            else:
                out[row].append(int(t))
                if stops and _stop_at(model.tokenizer.decode(out[row]), stops) is not None:
                    reasons[row] = "stop"
        if all(r is not None for r in reasons):
            break
    end = time.perf_counter()
    responses = []
    for row, tokens in enumerate(out):
        text = model.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _stop_at(text, stops)
        if cut is not None:
            text = text[:cut]
        responses.append(Response(
            text=text, token_ids=tokens, finish_reason=reasons[row] or "length", prompt_tokens=len(prompts[row]),
            generated_tokens=len(tokens), ttft_s=timing.ttft(), decode_tps=timing.decode_tps(max(map(len, out))),
            total_s=end - timing.start))
    return responses
