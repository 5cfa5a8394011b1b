"""One loaded model shared by threads, as a desktop app's UI and worker threads share it: concurrent
requests give exactly their sequential output, nothing crashes or deadlocks (every wait has a timeout),
cancellation from another thread stops a generation within one token, and a long soak does not leak.

Threads are daemons joined with timeouts, so a deadlock fails the test instead of hanging the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180
PROMPTS = [
    "Hello",
    "The capital of France is",
    "Once upon a time",
    "def main():",
    "1, 2, 3, 4,",
    "Le chat est",
    "In a hole in the ground there lived",
    "日本語のテキスト",
]


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_EDGE_CACHE_DIR", str(tmp_path / "hash-cache"))


@pytest.fixture(scope="module")
def model(exported_models):
    from onnx_edge.runtime import load

    return load(exported_models("llama"), provider="cpu")


def run_threads(fns: list, timeout: float = TIMEOUT_S) -> list:
    """Run each zero-argument function in its own daemon thread, all released at once by a barrier;
    return their results in order. A raised exception is re-raised; a thread still running after
    `timeout` fails the test (deadlock or livelock)."""
    barrier = threading.Barrier(len(fns))
    results: list = [None] * len(fns)
    errors: list = [None] * len(fns)

    def worker(i, fn):
        try:
            barrier.wait(timeout=timeout)
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread below
            errors[i] = exc

    threads = [threading.Thread(target=worker, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not stuck, f"threads {stuck} still running after {timeout} s (deadlock?)"
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def _fresh(model, fn):
    """The sequential reference: each request starts without any previous request's prefix cache."""
    model.session.clear_prefix_cache()
    return fn()


REQUESTS = {
    "plain": lambda m, p: m.generate(p, chat=False, max_new_tokens=24),
    "chat": lambda m, p: m.generate(p, chat=True, max_new_tokens=24),
    "sampled": lambda m, p: m.generate(p, chat=False, max_new_tokens=24, temperature=0.8, top_p=0.9, seed=7),
}


def _key(response):
    return response.token_ids, response.text, response.finish_reason


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_eight_threads_equal_sequential(model, kind):
    """8 different prompts at once, three rounds (so later rounds meet the prefix cache other threads
    left behind): each output equals its own sequential, fresh-cache output."""
    request = REQUESTS[kind]
    expected = [_key(_fresh(model, lambda p=p: request(model, p))) for p in PROMPTS]
    for _ in range(3):
        got = run_threads([lambda p=p: _key(request(model, p)) for p in PROMPTS])
        mismatched = [PROMPTS[i] for i in range(len(PROMPTS)) if got[i] != expected[i]]
        assert mismatched == [], f"{kind}: outputs differ from sequential for {mismatched}"


def test_mixed_streams_batches_and_generates(model):
    """Streams, batches and single requests interleaved on one model; a stream's chunks join to its text."""
    expected_single = [_key(_fresh(model, lambda p=p: model.generate(p, chat=False, max_new_tokens=16)))
                       for p in PROMPTS[:4]]
    expected_batch = [_key(r) for r in model.generate_batch(PROMPTS[4:6], chat=False, max_new_tokens=16)]

    def stream(p):
        chunks = list(model.stream(p, chat=False, max_new_tokens=16))
        response = chunks[-1].response
        assert "".join(c.text for c in chunks) == response.text
        return _key(response)

    fns = [lambda p=p: stream(p) for p in PROMPTS[:2]]
    fns += [lambda p=p: _key(model.generate(p, chat=False, max_new_tokens=16)) for p in PROMPTS[2:4]]
    fns += [lambda: [_key(r) for r in model.generate_batch(PROMPTS[4:6], chat=False, max_new_tokens=16)]] * 2
    got = run_threads(fns)
    assert got[:4] == expected_single
    assert got[4] == expected_batch and got[5] == expected_batch


def test_chat_turns_in_parallel_conversations(model):
    """Two conversations alternate turns from two threads: a turn's prefix reuse must never take the
    other conversation's cache rows for its own."""
    def converse(first):
        messages = [{"role": "user", "content": first}]
        replies = []
        for turn in range(3):
            r = model.generate(messages=messages, max_new_tokens=12)
            replies.append(r.token_ids)
            messages = messages + [{"role": "assistant", "content": r.text}, {"role": "user", "content": f"and {turn}?"}]
        return replies

    expected = [_fresh(model, lambda f=f: converse(f)) for f in ("Hi there", "Tell me a joke")]
    for _ in range(2):
        assert run_threads([lambda: converse("Hi there"), lambda: converse("Tell me a joke")]) == expected


@pytest.fixture
def counting_model(exported_models):
    """A private model whose decode steps are counted (the wrapper is on this instance only)."""
    from onnx_edge.runtime import load

    m = load(exported_models("llama"), provider="cpu")
    m.eos_ids = set()  # run to the budget unless cancelled
    steps = []
    real_step = m.session.step

    def step(*args, **kwargs):
        steps.append(time.monotonic())
        return real_step(*args, **kwargs)

    m.session.step = step
    return m, steps


@pytest.mark.parametrize("api", ["stream", "generate"])
def test_cancel_from_another_thread_within_one_token(counting_model, api):
    m, steps = counting_model
    cancel = threading.Event()
    box = {}

    def run():
        if api == "stream":
            chunks = list(m.stream("Hello", chat=False, max_new_tokens=200, cancel=cancel))
            box["response"] = chunks[-1].response
        else:
            box["response"] = m.generate("Hello", chat=False, max_new_tokens=200, cancel=cancel)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + TIMEOUT_S
    while len(steps) < 5:
        assert worker.is_alive(), "finished (or failed) before it could be cancelled"
        assert time.monotonic() < deadline, "no decode steps"
        time.sleep(0.0005)
    cancel.set()
    at_cancel = len(steps)  # steps begun by the time set() returned (one may be in flight)
    worker.join(TIMEOUT_S)
    assert not worker.is_alive(), "cancelled generation did not stop"
    response = box["response"]
    assert response.finish_reason == "cancelled"
    assert len(steps) <= at_cancel + 1, f"{len(steps) - at_cancel} steps ran after cancel"
    assert response.generated_tokens <= at_cancel + 1
    assert response.generated_tokens < 200


def test_cancel_before_start_generates_nothing(model):
    cancel = threading.Event()
    cancel.set()
    response = model.generate("Hello", chat=False, max_new_tokens=20, cancel=cancel)
    assert response.generated_tokens == 0 and response.finish_reason == "cancelled"


def test_cancel_one_of_eight(model):
    """Cancelling one request leaves the seven others exactly as they would be alone."""
    expected = [_key(_fresh(model, lambda p=p: model.generate(p, chat=False, max_new_tokens=24))) for p in PROMPTS]
    cancel = threading.Event()

    def cancelled():
        for n, _ in enumerate(model.stream(PROMPTS[0], chat=False, max_new_tokens=200, cancel=cancel)):
            if n == 2:
                cancel.set()
        return "done"

    fns = [cancelled] + [lambda p=p: _key(model.generate(p, chat=False, max_new_tokens=24)) for p in PROMPTS[1:]]
    got = run_threads(fns)
    assert got[0] == "done" and got[1:] == expected[1:]


def test_concurrent_loads_share_the_hash_cache(exported_models, tmp_path, monkeypatch):
    """Four threads load the same folder at once: all succeed and the cache file stays valid JSON."""
    from onnx_edge.runtime import hash_cache, load

    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)
    folder = exported_models("llama")
    models = run_threads([lambda: load(folder, provider="cpu") for _ in range(4)])
    assert all(m.generate("Hello", chat=False, max_new_tokens=4).generated_tokens <= 4 for m in models)
    cache = json.loads((tmp_path / "hash-cache" / "hashes.json").read_text(encoding="utf-8"))
    assert os.path.realpath(folder / "model.onnx.data") in cache["files"]


# --------------------------------------------------------------------------------------------------
# soak
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_rss_flat(exported_models, tmp_path):
    """100 requests, >= 10,000 generated tokens on one loaded model (scripts/soak.py in a fresh process):
    after the first 10 requests (arena and caches warm), RSS grows by less than 20 MB to the end."""
    folder = exported_models("llama")
    env = dict(os.environ, ONNX_EDGE_CACHE_DIR=str(tmp_path / "hash-cache"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), str(folder), "--requests", "100",
                           "--max-new-tokens", "110", "--json"], capture_output=True, text=True, env=env,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["requests"] == 100
    assert report["tokens"] >= 10_000
    assert report["growth_after_warmup_mb"] < 20, report
