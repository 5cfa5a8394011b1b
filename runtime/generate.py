"""Generation in gpt-fast's layers: `prefill` and `decode_one` run the graph on a KV cache, `decode_n` and
`decode_steps` yield token ids, `stream_generate`, `generate` and `generate_batch` turn them into text and
Responses. One rule, `_advance`, decides when and why a row stops, on every path."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from onnx_edge.errors import GenerationError
from onnx_edge.runtime.sampling import SamplingParams, apply_repetition_penalty, bad_option, make_sampler
from onnx_edge.runtime.session import DecoderSession, KVCache
from onnx_edge.runtime.streaming import StreamDetokenizer

Picker = Callable[[np.ndarray], np.ndarray]  # (B, vocab) logits -> (B,) int64 token ids


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


def _check_prompts(model, prompts: list[list[int]], max_new_tokens: int, truncate: bool) -> list[list[int]]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise bad_option("max_new_tokens", "a positive integer", max_new_tokens)
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


def _check_stop(stop) -> tuple[str, ...]:
    """`stop` as one string or a list of strings -> a tuple of non-empty strings (a string is one stop string,
    never its characters)."""
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise bad_option("stop", "a string or a list of non-empty strings", stop)
    return tuple(stop)


def _cancelled(cancel) -> bool:
    return cancel is not None and cancel.is_set()


# -- token ids ------------------------------------------------------------------------------------------
def prefill(session: DecoderSession, cache: KVCache, mask: np.ndarray, ids: np.ndarray,
            positions: np.ndarray) -> np.ndarray:
    """Run ids (B, S) at positions (B, S) on top of `cache`, whose rows [0, cache.length) hold what came before
    (nothing, or a reused prefix); return the last position's logits (B, vocab). `mask` (B, capacity) is the
    request's whole attention mask: this run uses its first cache.length + S columns."""
    logits = session.step(ids, mask[:, :cache.length + ids.shape[1]], positions, cache)  # (B, 1, vocab)
    if cache.token_ids is not None:  # batch 1: what the cache holds, for the next request's prefix reuse
        cache.token_ids.extend(int(t) for t in ids[0])
    return logits[:, -1, :]


def decode_one(session: DecoderSession, cache: KVCache, mask: np.ndarray, tokens: np.ndarray,
               positions: np.ndarray) -> np.ndarray:
    """One cached step: tokens (B,) at positions (B, 1) -> the next logits (B, vocab). The same graph call as
    the prefill, one token long."""
    return prefill(session, cache, mask, tokens[:, None], positions)


def decode_n(session: DecoderSession, cache: KVCache, mask: np.ndarray, tokens: np.ndarray, positions: np.ndarray,
             n: int, pick: Picker, cancel=None) -> Iterator[np.ndarray]:
    """Feed tokens (B,) at positions (B, 1), then each picked token in turn: yield n (B,) token ids, one step
    each, until `cancel` is set (checked before every step)."""
    for _ in range(n):
        if _cancelled(cancel):
            return
        tokens = pick(decode_one(session, cache, mask, tokens, positions))
        positions = positions + 1  # (B, 1)
        yield tokens


def _left_pad(prompts: list[list[int]], pad_id: int, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids (B, S) and positions (B, S) of the left-padded prompts, and the request's mask (B, capacity): 0 for
    each row's padding, 1 for everything after it (prompt, then generated tokens), so every step's mask is a
    prefix of it and nothing is allocated per step."""
    b, longest = len(prompts), max(len(p) for p in prompts)
    ids = np.full((b, longest), pad_id, dtype=np.int64)  # (B, S)
    mask = np.ones((b, capacity), dtype=np.int64)  # (B, capacity), capacity >= S
    for row, p in enumerate(prompts):
        ids[row, longest - len(p):] = p
        mask[row, :longest - len(p)] = 0
    positions = np.clip(np.cumsum(mask[:, :longest], axis=1) - 1, 0, None)  # (B, S): pads share position 0
    return ids, positions, mask


def _picker(params: SamplingParams, prompts: list[list[int]]) -> Picker:
    """The sampler, after the repetition penalty over each row's tokens so far (prompt and output) when on."""
    sampler = make_sampler(params)
    if params.repetition_penalty == 1.0:
        return sampler
    history = [list(p) for p in prompts]

    def pick(logits: np.ndarray) -> np.ndarray:
        tokens = sampler(apply_repetition_penalty(logits, history, params.repetition_penalty))  # (B,)
        for seen, t in zip(history, tokens):
            seen.append(int(t))
        return tokens

    return pick


def decode_steps(model, prompts: list[list[int]], params: SamplingParams, max_new_tokens: int,
                 cancel=None) -> Iterator[np.ndarray]:
    """Yield (B,) token ids per step: the prefill's, then decode_n's; max_new_tokens of them, fewer where the
    context ends, none after `cancel` is set. No stop rule: eos is a token like any other here (bench and
    evaluate take exactly n greedy tokens); the text paths below stop rows with `_advance`.

    The cache is allocated once for prompt + new tokens (capped at the context) and written in place
    (see DecoderSession.step). Only the last position's logits are computed. A batch-1 request whose tokens
    start with the tokens of the previous batch-1 request (a chat's next turn) reuses that request's cache
    for the shared prefix and prefills only the rest; the result is the same as a fresh run."""
    session = model.session
    longest = max(len(p) for p in prompts)
    budget = min(max_new_tokens, model.shape.context_length - longest)
    if budget <= 0 or _cancelled(cancel):
        return
    pick = _picker(params, prompts)
    capacity = longest + budget - 1  # the last picked token is never fed back
    pad_id = model.shape.pad_token_id if model.shape.pad_token_id is not None else 0
    ids, positions, mask = _left_pad(prompts, pad_id, capacity)
    if len(prompts) == 1:
        cache, reused = session.cache_for(list(prompts[0]), capacity)
        cache.token_ids = list(prompts[0][:reused])
    else:
        cache, reused = session.new_cache(len(prompts), capacity), 0
    try:
        tokens = pick(prefill(session, cache, mask, ids[:, reused:], positions[:, reused:]))
        yield tokens
        positions, left = positions[:, -1:] + 1, budget - 1
        switch = model.shape.longrope_original_max
        if switch is not None and ids.shape[1] <= switch < ids.shape[1] + left:
            # longrope (phi3): transformers' generate (Phi3ForCausalLM.prepare_inputs_for_generation) drops the
            # cache when the sequence first reaches switch + 1 tokens and recomputes all of it, so every key is
            # rotated with the long factors from then on. The same here: decode up to that step, then re-prefill.
            seen, before = [ids, tokens[:, None]], switch - ids.shape[1]
            for tokens in decode_n(session, cache, mask, tokens, positions, before, pick, cancel):
                seen.append(tokens[:, None])
                yield tokens
            if len(seen) < before + 2:  # cancelled
                return
            everything = np.concatenate(seen, axis=1)  # (B, switch + 1)
            cache.length = 0
            if cache.token_ids is not None:
                cache.token_ids = []
            positions = np.clip(np.cumsum(mask[:, :switch + 1], axis=1) - 1, 0, None)
            tokens = pick(prefill(session, cache, mask, everything, positions))
            yield tokens
            positions, left = positions[:, -1:] + 1, left - before - 1
        yield from decode_n(session, cache, mask, tokens, positions, left, pick, cancel)
    finally:
        session.keep(cache)  # batch 1 only: the next turn of a chat can start from it


# -- text -----------------------------------------------------------------------------------------------
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


@dataclass
class _Row:
    """One sequence's output as it grows; `reason` is set once it stops."""

    detok: StreamDetokenizer
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # cut before the first stop string once one appears
    emitted: int = 0  # text[:emitted] has gone out as chunks
    reason: str | None = None


def _advance(row: _Row, token: int | None, eos_ids: set[int], stops: tuple[str, ...], cancel) -> None:
    """The one stop rule, for a single prompt and every batch row: feed `token` to a running `row` (None: the
    decode loop has ended) and set row.reason when it stops. An eos token (left out of the output) or a stop
    string in the text (the text cut before it) -> "stop"; the loop ending first -> "cancelled" if `cancel`
    is set, else "length" (max_new_tokens or the context used up)."""
    if row.reason is not None:
        return
    if token is not None and token in eos_ids:
        row.reason = "stop"
        return
    if token is None:
        row.text += row.detok.flush()
    else:
        row.tokens.append(token)
        row.text += row.detok.add(token)
    cut = _stop_at(row.text, stops)
    if cut is not None:
        row.text, row.reason = row.text[:cut], "stop"
    elif token is None:
        row.reason = "cancelled" if _cancelled(cancel) else "length"


def _response(row: _Row, prompt_tokens: int, timing: _Timing, decoded: int) -> Response:
    return Response(text=row.text, token_ids=row.tokens, finish_reason=row.reason, prompt_tokens=prompt_tokens,
                    generated_tokens=len(row.tokens), ttft_s=timing.ttft(), decode_tps=timing.decode_tps(decoded),
                    total_s=time.perf_counter() - timing.start)


def stream_generate(model, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
                    stop=(), truncate: bool = False, cancel=None) -> Iterator[Chunk]:
    """Text pieces for one prompt as its tokens come (text that could still become a stop string is held
    back); the last chunk carries the Response."""
    (prompt_ids,), stops = _check_prompts(model, [prompt_ids], max_new_tokens, truncate), _check_stop(stop)
    timing, row = _Timing(), _Row(StreamDetokenizer(model.tokenizer))
    for step in decode_steps(model, [prompt_ids], params, max_new_tokens, cancel):
        timing.tick()
        token = int(step[0])
        _advance(row, token, model.eos_ids, stops, cancel)
        if row.reason is not None:
            break
        safe = len(row.text) - _held_back(row.text, stops)
        if safe > row.emitted:
            yield Chunk(row.text[row.emitted:safe], token)
            row.emitted = safe
    _advance(row, None, model.eos_ids, stops, cancel)
    yield Chunk(row.text[row.emitted:], None, _response(row, len(prompt_ids), timing, len(row.tokens)))


def generate(model, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int,
             stop=(), truncate: bool = False, cancel=None) -> Response:
    """One prompt's Response: stream_generate's chunks, collected."""
    for chunk in stream_generate(model, prompt_ids, params, max_new_tokens, stop, truncate, cancel):
        pass
    return chunk.response


def generate_batch(model, prompts: list[list[int]], params: SamplingParams, max_new_tokens: int,
                   stop=(), truncate: bool = False, cancel=None) -> list[Response]:
    """B prompts in one left-padded batch; rows stop independently, by the same rule as a single prompt."""
    prompts, stops = _check_prompts(model, prompts, max_new_tokens, truncate), _check_stop(stop)
    timing, rows = _Timing(), [_Row(StreamDetokenizer(model.tokenizer)) for _ in prompts]
    for step in decode_steps(model, prompts, params, max_new_tokens, cancel):
        timing.tick()
        for row, token in zip(rows, step):
            _advance(row, int(token), model.eos_ids, stops, cancel)
        if all(row.reason is not None for row in rows):
            break
    for row in rows:
        _advance(row, None, model.eos_ids, stops, cancel)
    longest = max(len(row.tokens) for row in rows)
    return [_response(row, len(p), timing, longest) for row, p in zip(rows, prompts)]
