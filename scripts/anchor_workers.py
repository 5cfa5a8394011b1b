#!/usr/bin/env python3
"""The worker half of scripts/bench_anchors.py: runs inside the anchors venv and imports only the stdlib, numpy
and the tool it measures (onnxruntime-genai, llama-cpp-python or torch + transformers).

    WORK/venv/bin/python scripts/anchor_workers.py --worker genai|llamacpp|torch --model PATH --ids IDS.json \
        --gen-tokens N --runs N [--warmup 1] --threads N

Prints one JSON line: prefill/decode tok/s and TTFT (medians, with min/median/max in `stats`), peak RSS
(VmHWM), load time, the generated ids and the tool's versions. Timing rules: bench_anchors.py's docstring.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from pathlib import Path



def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def _timed_runs(run_once, runs: int, warmup: int) -> tuple[list[tuple[float, float]], list[int]]:
    """run_once() -> (t_start, t_first, t_last, ids); returns [(ttft, decode_s)] of the measured runs."""
    for _ in range(warmup):
        run_once()
    out, ids = [], []
    for _ in range(runs):
        start, first, last, ids = run_once()
        out.append((first - start, last - first))
    return out, ids


def _worker_genai(model_dir: str, ids: list[int], gen: int, threads: int):
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(model_dir)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    total = len(ids) + gen

    def run_once():
        params = og.GeneratorParams(model)
        # min_length = max_length: eos is masked until the end, so exactly `gen` tokens come out.
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
        generator = og.Generator(model, params)
        out = []
        start = time.perf_counter()
        generator.append_tokens(np.asarray([ids], dtype=np.int32))  # the prefill forward
        generator.generate_next_token()  # picks from the prefill's logits
        out.append(int(generator.get_next_tokens()[0]))
        first = last = time.perf_counter()
        while len(out) < gen:
            generator.generate_next_token()  # one cached forward + argmax
            out.append(int(generator.get_next_tokens()[0]))
            last = time.perf_counter()
        del generator
        return start, first, last, out

    return run_once, {"onnxruntime-genai": og.__version__}


def _worker_llamacpp(gguf: str, ids: list[int], gen: int, threads: int):
    import numpy as np
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=len(ids) + gen + 16, n_batch=512, n_ubatch=512,
                          n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)

    n_vocab = llm.n_vocab()

    def last_logits() -> np.ndarray:
        # Llama.scores is only filled with logits_all=True (logits for every prompt position); read the
        # last position's row straight from llama.cpp instead, as its own sampler does.
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    def run_once():
        llm.reset()  # n_tokens = 0: the next eval drops the whole KV cache
        out = []
        start = time.perf_counter()
        llm.eval(ids)  # the prefill, one batch
        out.append(int(np.argmax(last_logits())))
        first = last = time.perf_counter()
        while len(out) < gen:
            llm.eval([out[-1]])
            out.append(int(np.argmax(last_logits())))
            last = time.perf_counter()
        return start, first, last, out

    return run_once, {"llama-cpp-python": llama_cpp.__version__}


def _worker_torch(hf_dir: str, ids: list[int], gen: int, threads: int):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([ids], dtype=torch.long)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.inference_mode()
    def run_once():
        out = []
        start = time.perf_counter()
        # logits_to_keep=1: the last position's logits only, as transformers' generate() does.
        res = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        out.append(int(res.logits[0, -1].argmax()))
        first = last = time.perf_counter()
        past = res.past_key_values
        while len(out) < gen:
            step = torch.tensor([[out[-1]]])
            # transformers 5.x names the cache argument `cache`; 4.x calls it `past_key_values`
            res = model(input_ids=step, use_cache=True, **{cache_arg: past})
            past = res.past_key_values
            out.append(int(res.logits[0, -1].argmax()))
            last = time.perf_counter()
        return start, first, last, out

    return run_once, {"torch": torch.__version__, "transformers": transformers.__version__,
                      "attn_implementation": model.config._attn_implementation}


def worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True, choices=("genai", "llamacpp", "torch"))
    p.add_argument("--model", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--gen-tokens", type=int, required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args(argv)
    ids = json.loads(Path(a.ids).read_text())
    make = {"genai": _worker_genai, "llamacpp": _worker_llamacpp, "torch": _worker_torch}[a.worker]
    t0 = time.perf_counter()
    run_once, versions = make(a.model, ids, a.gen_tokens, a.threads)
    load_s = time.perf_counter() - t0
    timings, out = _timed_runs(run_once, a.runs, a.warmup)
    if len(out) != a.gen_tokens:
        raise SystemExit(f"produced {len(out)} tokens, expected {a.gen_tokens}")
    prefill = [len(ids) / t for t, _ in timings]
    decode = [(a.gen_tokens - 1) / d for _, d in timings]
    ttft = [t for t, _ in timings]
    stats = {k: {"min": min(v), "median": statistics.median(v), "max": max(v)}
             for k, v in (("prefill_tps", prefill), ("decode_tps", decode), ("ttft_s", ttft))}
    print(json.dumps({"prefill_tps": stats["prefill_tps"]["median"], "decode_tps": stats["decode_tps"]["median"],
                      "ttft_s": stats["ttft_s"]["median"], "stats": stats, "peak_rss_mb": _peak_rss_mb(),
                      "load_s": load_s, "output_ids": out, "versions": versions}))
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
