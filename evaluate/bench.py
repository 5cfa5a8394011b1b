"""Measure an exported folder: prefill and decode tokens/s, time to first token, peak RSS, size on disk
and achieved weight bandwidth. Torch-free (numpy + onnxruntime + tokenizers), like the rest of runtime/.

Layers, so compare reuses them:
- `BenchParams`: what to run (sizes, threads, provider), checked once when it is made;
- `prompt_ids(tokenizer, n, vocab_size)`: the same deterministic N token ids for every run and every tool;
- `timed_run(tokens, ...)`: one greedy run of any engine's token iterator -> RunTiming; `measure(model, ids,
  params)`: one loaded model -> per-run timings (in this process); `bench_model` folds them into a BenchResult;
- `bench(paths, params)`: each folder -> BenchResult, measured in a fresh subprocess (`python -m
  onnx_edge.evaluate.bench PATH PARAMS`, `run_worker`) so the peak RSS belongs to that model alone.

Decoding is greedy with eos ignored, so exactly `gen_tokens` tokens are produced in every run. The first
token out ends the prefill (TTFT); the rest are the decode. Speed is measured, never
asserted: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnx_edge.errors import EdgeError, GenerationError

MB = 1e6  # sizes and RSS in MB (10^6 bytes), like `onnx-edge export` and `info`
# The prompt text: a fixed page of Python's own documentation, so no file or network is needed.
PROMPT_TOPICS = ("assignment", "compound", "execmodel", "exceptions", "function", "import", "lambda", "types")
BENCH_WORKER = "onnx_edge.evaluate.bench"  # this module, run as `python -m` by bench()
LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnx-edge-kit", "numpy")
# Optional engines, recorded only where this process imported them: module -> distribution.
ENGINES = (("llama_cpp", "llama-cpp-python"), ("torch", "torch"), ("transformers", "transformers"))


class BenchError(GenerationError):
    """A benchmark that cannot run as asked (prompt longer than the context, too few tokens, worker failed)."""


@dataclass(frozen=True)
class BenchParams:
    """One measurement's settings, checked here once; only the context check waits for the model."""

    prompt_tokens: int = 256
    gen_tokens: int = 128
    runs: int = 3
    warmup: int = 1
    threads: int | None = None  # None = onnxruntime's default (one per physical core)
    provider: str = "auto"  # auto: the provider each folder targets

    def __post_init__(self):
        from onnx_edge.runtime.session import check_threads

        for name, low in (("prompt_tokens", 1), ("gen_tokens", 2), ("runs", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BenchError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        check_threads(self.threads)

    def check_context(self, context_length: int | None) -> None:
        """BenchError unless exactly gen_tokens tokens fit after the prompt in this context."""
        total = self.prompt_tokens + self.gen_tokens
        if context_length is not None and total > context_length:
            what = "prompt" if self.prompt_tokens >= context_length else "prompt + generated tokens"
            raise BenchError(
                f"{what} ({self.prompt_tokens} + {self.gen_tokens} = {total} tokens) exceeds the model's "
                f"context of {context_length} tokens; use fewer --prompt-tokens or --gen-tokens"
            )


@dataclass
class RunTiming:
    """One measured run: the prefill (prompt in -> first token out), then gen_tokens - 1 cached steps."""

    ttft_s: float
    decode_s: float
    prompt_tokens: int
    gen_tokens: int
    output_ids: list[int] = field(default_factory=list)

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return (self.gen_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class BenchResult:
    """Medians over the measured runs (after warm-up); `stats` holds min/median/max of each speed metric."""

    path: str
    name: str
    precision: str
    provider: str
    threads: int | None  # None = onnxruntime's default (one per physical core)
    prompt_tokens: int
    gen_tokens: int
    runs: int
    warmup: int
    prefill_tps: float
    decode_tps: float
    ttft_s: float
    gbps: float  # weight bytes x decode tok/s: how much of the memory bandwidth the decode achieves
    peak_rss_mb: float  # high-water mark of the process that loaded and ran the model (interpreter included)
    size_mb: float  # every file the manifest lists
    weight_mb: float  # the graph and its external data: what each decode step reads
    load_s: float  # session creation (graph optimization included)
    stats: dict[str, dict[str, float]]  # metric -> {"min", "median", "max"}
    prompt_sha256: str  # of the prompt ids: equal hashes = the same tokens went in
    output_sha256: str  # of the generated ids of the last run (greedy, so equal across runs)
    context_length: int
    library_versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BenchResult":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def prompt_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[t] for t in PROMPT_TOPICS if t in topics)


def prompt_ids(tokenizer, n: int, vocab_size: int | None = None) -> list[int]:
    """Exactly `n` deterministic token ids: the fixed text tokenized (no special tokens), repeated and cut.

    `tokenizer` is a `tokenizers.Tokenizer` (or anything with `.encode(text, add_special_tokens=False).ids`).
    Ids the model's vocabulary cannot hold (a tokenizer larger than the model) are dropped."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise BenchError(f"prompt_tokens must be a positive integer, got {n!r}")
    ids = list(tokenizer.encode(prompt_text(), add_special_tokens=False).ids)
    if vocab_size is not None:
        ids = [i for i in ids if i < vocab_size]
    if not ids:
        raise BenchError("the tokenizer turns the benchmark text into no usable token ids")
    reps = -(-n // len(ids))
    return (ids * reps)[:n]


def ids_sha256(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]


def timed_run(tokens: Iterable[int], prompt_tokens: int, gen_tokens: int) -> RunTiming:
    """Time one greedy run of a lazy token iterator: its first token ends the prefill, the rest are the decode."""
    out: list[int] = []
    start = time.perf_counter()
    first = last = start
    for token in tokens:
        now = time.perf_counter()
        if not out:
            first = now
        last = now
        out.append(int(token))
    if len(out) != gen_tokens:
        raise BenchError(f"the decode loop produced {len(out)} tokens, expected {gen_tokens}")
    return RunTiming(ttft_s=first - start, decode_s=last - first, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                     output_ids=out)


def measure_once(model, ids: list[int], gen_tokens: int) -> RunTiming:
    """One greedy run through the public decode loop; eos is ignored, so exactly gen_tokens come out."""
    from onnx_edge.runtime.generate import decode_steps
    from onnx_edge.runtime.sampling import SamplingParams

    session = model.session
    # The runtime keeps the last request's KV cache to skip a repeated prefix (a chat's next turn); every run
    # here repeats the same prompt, so drop that cache first or the "prefill" would be one cached token.
    clear = getattr(session, "clear_prefix_cache", None)
    if clear is not None:
        clear()
    steps = decode_steps(model, [list(ids)], SamplingParams(temperature=0.0), gen_tokens)
    timing = timed_run((step[0] for step in steps), len(ids), gen_tokens)
    if getattr(session, "last_reused", 0):
        raise BenchError(f"the prefill reused {session.last_reused} cached prompt tokens; the timing would be wrong")
    return timing


def repeat(run: Callable[[], RunTiming], params: BenchParams) -> list[RunTiming]:
    """`params.warmup` unrecorded runs, then `params.runs` recorded ones."""
    for _ in range(params.warmup):
        run()
    return [run() for _ in range(params.runs)]


def measure(model, ids: list[int], params: BenchParams) -> list[RunTiming]:
    """Measure one loaded EdgeModel in this process (the caller has checked ids + gen_tokens fit its context)."""
    return repeat(lambda: measure_once(model, ids, params.gen_tokens), params)


def summarize(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def weight_bytes(manifest) -> int:
    """Bytes of the graph file and its external data (not tokenizer or configs)."""
    model_file = manifest.model_file
    return sum(e.size for rel, e in manifest.files.items()
               if rel == model_file or rel.startswith(model_file + ".") or rel.endswith((".onnx", ".onnx.data", ".data")))


def peak_rss_mb() -> float:
    """High-water RSS of this process (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024) / MB  # macOS reports bytes, Linux KiB


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a measurement depends on, plus the optional engines (llama.cpp,
    torch, transformers) this process has imported."""
    from onnx_edge.versions import installed_versions

    return installed_versions(*LIBRARIES, *(dist for module, dist in ENGINES if module in sys.modules))


def bench_result(timings: list[RunTiming], params: BenchParams, *, path: str, precision: str, provider: str,
                 load_s: float, ids: list[int], size_bytes: int, weight_bytes: int,
                 context_length: int) -> BenchResult:
    """Fold the runs of one loaded model into a BenchResult (peak RSS is this process's, so far)."""
    per_run = {
        "prefill_tps": [t.prefill_tps for t in timings],
        "decode_tps": [t.decode_tps for t in timings],
        "ttft_s": [t.ttft_s for t in timings],
        "gbps": [weight_bytes * t.decode_tps / 1e9 for t in timings],
    }
    stats = {k: summarize(v) for k, v in per_run.items()}
    return BenchResult(
        path=path, name=Path(path).name or path, precision=precision, provider=provider, threads=params.threads,
        prompt_tokens=len(ids), gen_tokens=timings[0].gen_tokens, runs=len(timings), warmup=params.warmup,
        prefill_tps=stats["prefill_tps"]["median"], decode_tps=stats["decode_tps"]["median"],
        ttft_s=stats["ttft_s"]["median"], gbps=stats["gbps"]["median"],
        peak_rss_mb=peak_rss_mb(), size_mb=size_bytes / MB, weight_mb=weight_bytes / MB,
        load_s=load_s, stats=stats, prompt_sha256=ids_sha256(ids), output_sha256=ids_sha256(timings[-1].output_ids),
        context_length=context_length, library_versions=library_versions(),
    )


def bench_model(open_model: Callable[[], object], params: BenchParams) -> BenchResult:
    """Open an EdgeModel (timed as load_s) and measure it in this process."""
    start = time.perf_counter()
    model = open_model()
    load_s = time.perf_counter() - start
    params.check_context(model.shape.context_length)
    ids = prompt_ids(model.tokenizer, params.prompt_tokens, model.shape.vocab_size)
    m = model.manifest
    return bench_result(measure(model, ids, params), params, path=str(model.folder), precision=m.precision,
                        provider=model.provider, load_s=load_s, ids=ids,
                        size_bytes=sum(e.size for e in m.files.values()), weight_bytes=weight_bytes(m),
                        context_length=model.shape.context_length)


def bench_in_process(path, params: BenchParams) -> BenchResult:
    """Load and measure in this process. Its peak RSS covers everything this process did before, too."""
    from onnx_edge.runtime.model import load

    return bench_model(lambda: load(path, provider=params.provider, threads=params.threads), params)


def bench(paths: Sequence, params: BenchParams, *, timeout: float | None = None,
          progress: bool = False) -> list[BenchResult]:
    """Benchmark each exported folder in a fresh Python process, so its peak RSS is that model's alone. Every
    folder's manifest is read and checked against `params` before the first one spends minutes measuring."""
    from onnx_edge.manifest import read_manifest

    for path in paths:
        params.check_context(read_manifest(Path(path).expanduser()).architecture.get("context_length"))
    results = []
    for n, path in enumerate(paths, 1):
        if progress:
            print(f"[{n}/{len(paths)}] {path} ...", file=sys.stderr, flush=True)
        results.append(run_worker(BENCH_WORKER, path, params, BenchError, timeout))
    return results


def run_worker(module: str, path, params: BenchParams, error: type[Exception],
               timeout: float | None = None) -> BenchResult:
    """Run `python -m module PATH PARAMS` (see worker_main); its last JSON line is a BenchResult or {"error": ...}."""
    cmd = [sys.executable, "-m", module, str(path), json.dumps(asdict(params))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise error(f"{path}: benchmark did not finish within {timeout:g} s") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    data = json.loads(lines[-1]) if lines else None
    if data is not None and "error" in data:
        raise error(data["error"])
    if proc.returncode != 0 or data is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise error(f"{path}: benchmark worker failed (exit {proc.returncode}): {tail}")
    return BenchResult.from_dict(data)


def worker_main(module: str, measure_path: Callable[[str, BenchParams], BenchResult], description: str,
                argv: list[str] | None = None) -> int:
    """A benchmark worker's command line (ours, compare's): PATH and the BenchParams as JSON in, one JSON object
    out (the BenchResult, or {"error": ...} for a user error)."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    p.add_argument("path")
    p.add_argument("params", help="BenchParams as a JSON object")
    a = p.parse_args(argv)
    try:
        result = measure_path(a.path, BenchParams(**json.loads(a.params)))
    except EdgeError as exc:
        print(json.dumps({"error": f"{exc}"}))
        return 2
    print(json.dumps(result.to_dict()))
    return 0


def format_table(results: list[BenchResult]):
    """A rich Table with one column per folder (side by side)."""
    from rich.table import Table

    def spread(r: BenchResult, key: str, fmt: str) -> str:
        s = r.stats[key]
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    def ttft_ms(r: BenchResult) -> str:
        s = r.stats["ttft_s"]
        return f"{s['median'] * 1e3:.1f} ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f})"

    names = [r.name for r in results]
    if len(set(names)) < len(names):  # same folder names: show enough of the path to tell them apart
        names = [str(Path(r.path).parent.name + "/" + r.name) for r in results]
        if len(set(names)) < len(names):
            names = [r.path for r in results]
    first = results[0]
    table = Table(title=f"onnx-edge bench: {first.prompt_tokens} prompt tokens, {first.gen_tokens} generated "
                        f"(greedy), median (min-max) of {first.runs} runs after {first.warmup} warm-up")
    table.add_column("", style="bold")
    for name in names:
        table.add_column(name, justify="right", overflow="fold")
    rows = [
        ("precision", lambda r: r.precision),
        ("provider / threads", lambda r: f"{r.provider} / {r.threads or 'default'}"),
        ("size on disk (MB)", lambda r: f"{r.size_mb:.1f}"),
        ("peak RSS (MB)", lambda r: f"{r.peak_rss_mb:.0f}"),
        ("load (s)", lambda r: f"{r.load_s:.2f}"),
        ("time to first token (ms)", lambda r: ttft_ms(r)),
        ("prefill (tok/s)", lambda r: spread(r, "prefill_tps", ".1f")),
        ("decode (tok/s)", lambda r: spread(r, "decode_tps", ".1f")),
        ("weights read (GB/s)", lambda r: spread(r, "gbps", ".2f")),
    ]
    if any((r.prompt_tokens, r.gen_tokens, r.runs) != (first.prompt_tokens, first.gen_tokens, first.runs)
           for r in results):
        rows.insert(0, ("prompt / gen / runs", lambda r: f"{r.prompt_tokens} / {r.gen_tokens} / {r.runs}"))
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    return table


if __name__ == "__main__":
    sys.exit(worker_main(BENCH_WORKER, bench_in_process, "Benchmark one exported folder; prints one JSON object."))
