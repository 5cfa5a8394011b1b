"""compare's speed worker for onnxruntime-genai folders and .gguf files: `Variant.speed` runs `python -m
onnx_edge.evaluate.speed PATH PARAMS`, which measures that one model in this fresh process (its `bench_here`),
so the peak RSS is its alone. Onnx-edge folders use bench's own worker."""

from __future__ import annotations

import sys

from onnx_edge.evaluate.bench import BenchParams, BenchResult, worker_main
from onnx_edge.evaluate.engine import SPEED_WORKER
from onnx_edge.evaluate.variants import describe


def bench_here(path: str, params: BenchParams) -> BenchResult:
    return describe(path, params.provider, params.threads).bench_here(params)


if __name__ == "__main__":
    sys.exit(worker_main(SPEED_WORKER, bench_here,
                         "Benchmark one onnxruntime-genai folder or .gguf file; prints one JSON object."))
