"""compare's speed column: bench() for onnx-edge folders; the same measurement for genai folders and .gguf
files in a worker process (`python -m onnx_edge.evaluate.compare --bench-worker KIND PATH`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnx_edge.errors import EdgeError
from onnx_edge.evaluate.variants import MB, CompareError, Variant
from onnx_edge.evaluate.genai_engine import open_genai, read_genai_config
from onnx_edge.evaluate.llama_cpp_engine import LlamaEngine, gguf_variant

if TYPE_CHECKING:
    from onnx_edge.evaluate.compare import CompareOptions


def measure_speed(v: Variant, opts: CompareOptions):
    from onnx_edge.evaluate.bench import bench, run_worker

    if v.kind == "onnx-edge":
        return bench(v.path, provider=opts.provider, prompt_tokens=opts.prompt_tokens, gen_tokens=opts.bench_gen_tokens,
                     runs=opts.runs, threads=opts.threads, warmup=opts.warmup)
    cmd = [sys.executable, "-m", "onnx_edge.evaluate.compare", "--bench-worker", v.kind, v.path,
           "--provider", opts.provider, "--prompt-tokens", str(opts.prompt_tokens),
           "--gen-tokens", str(opts.bench_gen_tokens), "--runs", str(opts.runs), "--warmup", str(opts.warmup)]
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
    return run_worker(cmd, v.path, CompareError)


def _bench_genai(path: str, a) -> dict:
    from onnx_edge.evaluate.bench import check_sizes, measure, prompt_ids, result_from_runs

    cfg = read_genai_config(Path(path))
    check_sizes(a.prompt_tokens, a.gen_tokens, a.runs, a.warmup, cfg["context_length"])
    start = time.perf_counter()
    model = open_genai(Path(path), a.provider, a.threads)
    load_s = time.perf_counter() - start
    ids = prompt_ids(model.tokenizer, a.prompt_tokens, model.shape.vocab_size)
    timings = measure(model, ids, a.gen_tokens, a.runs, a.warmup)
    return result_from_runs(model, timings, threads=a.threads, warmup=a.warmup, load_s=load_s, ids=ids).to_dict()


def _bench_gguf(path: str, a) -> dict:
    """bench's protocol on llama.cpp: the same prompt ids, greedy, eos ignored, prefill -> first token = TTFT."""
    from onnx_edge.evaluate.bench import (BenchResult, RunTiming, _versions as bench_versions, check_sizes, ids_sha256,
                                         peak_rss_mb, prompt_text, summarize)

    variant = gguf_variant(path, Path(path), a.threads)
    check_sizes(a.prompt_tokens, a.gen_tokens, a.runs, a.warmup, variant.context_length)
    ids = [t for t in variant.encode(prompt_text()) if t < variant.vocab_size]
    ids = (ids * -(-a.prompt_tokens // max(1, len(ids))))[:a.prompt_tokens]
    start = time.perf_counter()
    engine = LlamaEngine(Path(path), a.prompt_tokens + a.gen_tokens, a.threads)
    load_s = time.perf_counter() - start
    timings = []
    for run in range(a.warmup + a.runs):
        t0 = time.perf_counter()
        engine._run(ids)
        out = [int(np.argmax(engine.llm.scores[engine.llm.n_tokens - 1]))]
        t1 = time.perf_counter()
        for _ in range(a.gen_tokens - 1):
            engine.llm.eval([out[-1]])
            out.append(int(np.argmax(engine.llm.scores[engine.llm.n_tokens - 1])))
        t2 = time.perf_counter()
        if run >= a.warmup:
            timings.append(RunTiming(ttft_s=t1 - t0, decode_s=t2 - t1, prompt_tokens=len(ids), gen_tokens=a.gen_tokens,
                                     output_ids=out))
    size = Path(path).stat().st_size
    per_run = {"prefill_tps": [t.prefill_tps for t in timings], "decode_tps": [t.decode_tps for t in timings],
               "ttft_s": [t.ttft_s for t in timings], "gbps": [size * t.decode_tps / 1e9 for t in timings]}
    stats = {k: summarize(v) for k, v in per_run.items()}
    versions = bench_versions()
    import importlib.metadata as md

    try:
        versions["llama-cpp-python"] = md.version("llama-cpp-python")
    except md.PackageNotFoundError:
        pass
    return BenchResult(
        path=path, name=Path(path).name, precision=variant.precision, provider="cpu", threads=a.threads,
        prompt_tokens=len(ids), gen_tokens=a.gen_tokens, runs=len(timings), warmup=a.warmup,
        prefill_tps=stats["prefill_tps"]["median"], decode_tps=stats["decode_tps"]["median"],
        ttft_s=stats["ttft_s"]["median"], gbps=stats["gbps"]["median"], peak_rss_mb=peak_rss_mb(),
        size_mb=size / MB, weight_mb=size / MB, load_s=load_s, stats=stats, prompt_sha256=ids_sha256(ids),
        output_sha256=ids_sha256(timings[-1].output_ids), context_length=variant.context_length,
        library_versions=versions).to_dict()


def bench_worker(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m onnx_edge.evaluate.compare",
                                description="Benchmark one onnxruntime-genai folder or .gguf file; prints one JSON object.")
    from onnx_edge.evaluate.bench import add_worker_options

    p.add_argument("--bench-worker", nargs=2, required=True, metavar=("KIND", "PATH"))
    add_worker_options(p)
    a = p.parse_args(argv)
    kind, path = a.bench_worker
    try:
        if kind == "genai":
            result = _bench_genai(path, a)
        elif kind == "gguf":
            result = _bench_gguf(path, a)
        else:
            raise CompareError(f"no benchmark worker for {kind!r}")
    except EdgeError as exc:
        print(json.dumps({"error": f"{exc}"}))
        return 2
    print(json.dumps(result))
    return 0
