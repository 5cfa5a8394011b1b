"""Runtime generation on a tiny exported llama: stopping, streaming, sampling, chat, batch, pipeline."""

from __future__ import annotations

import threading

import pytest

from onnx_edge.errors import GenerationError
from onnx_edge.runtime import load, pipeline


@pytest.fixture(scope="module")
def model(exported_models):
    return load(exported_models("llama"), provider="cpu")


def test_response_fields(model):
    r = model.generate("Hello there", chat=False, max_new_tokens=8)
    assert r.finish_reason in ("stop", "length")
    assert r.prompt_tokens == len(model.encode("Hello there", chat=False))
    assert r.generated_tokens == len(r.token_ids) <= 8
    assert r.ttft_s > 0 and r.total_s >= r.ttft_s
    assert set(r.to_dict()) >= {"text", "token_ids", "finish_reason", "prompt_tokens", "generated_tokens",
                                "ttft_s", "decode_tps"}
    assert r.text == model.tokenizer.decode(r.token_ids)


def _outcome(r):
    return r.token_ids, r.text, r.finish_reason, r.generated_tokens


def _batch_row(model, prompt, **kw):
    """`prompt`'s row of a batch with a longer prompt beside it (so it is left-padded)."""
    return model.generate_batch([prompt, "The quick brown fox jumps over"], chat=False, **kw)[0]


def test_length_and_eos_stop(model):
    free = model.generate("Hello there", chat=False, max_new_tokens=6)
    model_eos = set(model.eos_ids)
    try:
        model.eos_ids = set()
        r = model.generate("Hello there", chat=False, max_new_tokens=6)
        assert r.finish_reason == "length" and r.generated_tokens == 6
        assert _outcome(_batch_row(model, "Hello there", max_new_tokens=6)) == _outcome(r)
        # Make the third greedy token an eos: generation stops before it, reason "stop".
        model.eos_ids = {r.token_ids[2]}
        stopped = model.generate("Hello there", chat=False, max_new_tokens=6)
        assert stopped.finish_reason == "stop"
        assert stopped.token_ids == r.token_ids[:r.token_ids.index(r.token_ids[2])]
        assert _outcome(_batch_row(model, "Hello there", max_new_tokens=6)) == _outcome(stopped)
    finally:
        model.eos_ids = model_eos
    assert free.token_ids == r.token_ids[:len(free.token_ids)]


def test_stop_string_cuts_text_in_stream_and_generate(model):
    model.eos_ids, saved = set(), model.eos_ids
    try:
        full = model.generate("The", chat=False, max_new_tokens=20)
        assert len(full.text) > 6
        stop = full.text[3:6]
        r = model.generate("The", chat=False, max_new_tokens=20, stop=[stop])
        assert r.finish_reason == "stop" and r.text == full.text[:full.text.find(stop)]
        pieces = list(model.stream("The", chat=False, max_new_tokens=20, stop=[stop]))
        assert "".join(c.text for c in pieces) == r.text
        assert pieces[-1].response.finish_reason == "stop"
        batch = model.generate_batch(["The", "A"], chat=False, max_new_tokens=20, stop=[stop])
        assert batch[0].text == r.text
        assert _outcome(batch[0]) == _outcome(r)  # same text, stopped at the same token
        assert _outcome(_batch_row(model, "The", max_new_tokens=20, stop=[stop])) == _outcome(r)
    finally:
        model.eos_ids = saved


def test_stream_equals_generate(model):
    r = model.generate("Once upon a time", chat=False, max_new_tokens=16)
    chunks = list(model.stream("Once upon a time", chat=False, max_new_tokens=16))
    assert "".join(c.text for c in chunks) == r.text
    assert chunks[-1].response.token_ids == r.token_ids
    assert all(c.response is None for c in chunks[:-1])


def test_seeded_sampling_is_reproducible(model):
    kw = dict(chat=False, max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    a, b = model.generate("Hello", **kw), model.generate("Hello", **kw)
    assert a.token_ids == b.token_ids
    others = {tuple(model.generate("Hello", **dict(kw, seed=s)).token_ids) for s in range(8, 14)}
    assert len(others) > 1  # different seeds explore different continuations


def test_chat_messages_use_the_template(model):
    msgs = [{"role": "user", "content": "hi"}]
    ids = model.encode(messages=msgs)
    text = model.tokenizer.decode(ids, skip_special_tokens=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.encode("hi") == ids  # a plain prompt is one user turn when a template exists
    assert model.encode("hi", chat=False) != ids


def test_context_window_is_enforced(model):
    long_prompt = "word " * 400  # > 256 tokens, the tiny model's context
    with pytest.raises(GenerationError, match="context window"):
        model.generate(long_prompt, chat=False, max_new_tokens=4)
    r = model.generate(long_prompt, chat=False, max_new_tokens=4, truncate=True)
    assert r.prompt_tokens == model.shape.context_length - 1
    assert r.finish_reason in ("length", "stop") and r.generated_tokens <= 1  # context full after one token


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                                 dict(min_p=1.0), dict(repetition_penalty=0.0), dict(max_new_tokens=0)])
def test_invalid_generation_values(model, bad):
    with pytest.raises(GenerationError):
        model.generate("hi", chat=False, **bad)


def test_empty_prompt_is_refused(model):
    with pytest.raises(GenerationError, match="empty"):
        model.generate("", chat=False)


def test_cancel_stops_generation(model):
    cancel = threading.Event()
    model.eos_ids, saved = set(), model.eos_ids
    try:
        got = []
        for chunk in model.stream("Hello", chat=False, max_new_tokens=50, cancel=cancel):
            got.append(chunk)
            if len(got) == 3:
                cancel.set()
        assert got[-1].response.finish_reason == "cancelled"
        assert got[-1].response.generated_tokens <= 4
    finally:
        model.eos_ids = saved


class _CancelAfter:
    """A cancel flag that is set from its (checks + 1)-th look on: one prompt and a batch, checked alike,
    stop at the same step."""

    def __init__(self, checks: int):
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_cancelled_batch_reports_what_a_cancelled_prompt_reports(model):
    model.eos_ids, saved = set(), model.eos_ids
    try:
        kw = dict(max_new_tokens=20)
        single = model.generate("Hello there", chat=False, cancel=_CancelAfter(4), **kw)
        assert single.finish_reason == "cancelled" and single.generated_tokens == 4
        assert _outcome(_batch_row(model, "Hello there", cancel=_CancelAfter(4), **kw)) == _outcome(single)
        streamed = list(model.stream("Hello there", chat=False, cancel=_CancelAfter(4), **kw))[-1].response
        assert _outcome(streamed) == _outcome(single)
        before = threading.Event()
        before.set()
        rows = model.generate_batch(["Hello there", "The"], chat=False, cancel=before, **kw)
        assert [(r.finish_reason, r.generated_tokens) for r in rows] == [("cancelled", 0)] * 2
        assert _outcome(model.generate("Hello there", chat=False, cancel=before, **kw)) == _outcome(rows[0])
    finally:
        model.eos_ids = saved


def test_params_object_or_keywords(model):
    from onnx_edge.runtime import SamplingParams

    kw = dict(chat=False, max_new_tokens=8)
    params = SamplingParams(temperature=1.0, seed=3)
    assert model.generate("Hello", params=params, **kw).token_ids == model.generate(
        "Hello", temperature=1.0, seed=3, **kw).token_ids
    with pytest.raises(GenerationError, match="not both"):
        model.generate("Hello", params=params, seed=4, **kw)
    with pytest.raises(GenerationError, match="SamplingParams"):
        model.generate("Hello", params={"seed": 4}, **kw)


def test_sampling_is_checked_once_per_request(model, monkeypatch):
    from onnx_edge.runtime import SamplingParams

    checks = []
    check = SamplingParams.__post_init__
    monkeypatch.setattr(SamplingParams, "__post_init__", lambda self: (checks.append(1), check(self))[1])
    kw = dict(chat=False, max_new_tokens=3, temperature=0.5, seed=1)
    model.generate("Hello", **kw)
    list(model.stream("Hello", **kw))
    model.generate_batch(["Hello", "The"], **kw)
    assert len(checks) == 3


def test_pipeline_matches_hf_call_shape(exported_models):
    pipe = pipeline("text-generation", model=exported_models("llama"), provider="cpu")
    out = pipe("Hello, I'm a language model,", max_new_tokens=10)
    assert isinstance(out, list) and set(out[0]) == {"generated_text"}
    assert out[0]["generated_text"].startswith("Hello, I'm a language model,")
    chat = pipe([{"role": "user", "content": "hi"}], max_new_tokens=5)
    assert chat[0]["generated_text"][-1]["role"] == "assistant"
    assert len(pipe(["a", "b"], max_new_tokens=3)) == 2


def test_repetition_penalty_changes_greedy_output(model):
    model.eos_ids, saved = set(), model.eos_ids
    try:
        plain = model.generate("the the the", chat=False, max_new_tokens=16)
        penalized = model.generate("the the the", chat=False, max_new_tokens=16, repetition_penalty=5.0)
    finally:
        model.eos_ids = saved
    assert plain.token_ids != penalized.token_ids
    assert len(set(penalized.token_ids)) >= len(set(plain.token_ids))
