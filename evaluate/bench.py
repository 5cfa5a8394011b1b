"""Measure an exported folder: prefill and decode tokens/s, time to first token, peak RSS, size on disk
and achieved weight bandwidth. Torch-free (numpy + onnxruntime + tokenizers), like the rest of runtime/.

Layers, so a later `compare` can reuse them:
- `prompt_ids(tokenizer, n, vocab_size)`: the same deterministic N token ids for every run and every tool;
- `measure(model, ids, gen_tokens, runs, warmup)`: one loaded model -> per-run timings (in this process);
- `bench(path, ...)`: one folder -> BenchResult, measured in a fresh subprocess (`python -m
  onnx_edge.evaluate.bench --worker PATH ...`) so the peak RSS belongs to that model alone.

Decoding is greedy with eos ignored, so exactly `gen_tokens` tokens are produced in every run. The first
token out of `decode_steps` ends the prefill (TTFT); the rest are the decode. Speed is measured, never
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnx_edge.errors import EdgeError, GenerationError

MB = 1e6  # sizes and RSS in MB (10^6 bytes), like `onnx-edge export` and `info`
STAT_KEYS = ("prefill_tps", "decode_tps", "ttft_s", "gbps")
# The prompt text: a fixed page of Python's own documentation, so no file or network is needed.
PROMPT_TOPICS = ("assignment", "compound", "execmodel", "exceptions", "function", "import", "lambda", "types")


class BenchError(GenerationError):
    """A benchmark that cannot run as asked (prompt longer than the context, too few tokens, worker failed)."""


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


def check_sizes(prompt_tokens: int, gen_tokens: int, runs: int, warmup: int, context_length: int | None) -> None:
    """Raise BenchError for sizes that cannot give exactly gen_tokens tokens in this context."""
    for name, value, low in (("prompt_tokens", prompt_tokens, 1), ("gen_tokens", gen_tokens, 2),
                             ("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BenchError(f"{name} must be an integer >= {low}, got {value!r}")
    if context_length is not None and prompt_tokens + gen_tokens > context_length:
        what = "prompt" if prompt_tokens >= context_length else "prompt + generated tokens"
        raise BenchError(
            f"{what} ({prompt_tokens} + {gen_tokens} = {prompt_tokens + gen_tokens} tokens) exceeds the model's "
            f"context of {context_length} tokens; use fewer --prompt-tokens or --gen-tokens"
        )


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
    out: list[int] = []
    start = time.perf_counter()
    first = last = start
    for step in decode_steps(model, [list(ids)], SamplingParams(temperature=0.0), gen_tokens):
        now = time.perf_counter()
        if not out:
            first = now
        last = now
        out.append(int(step[0]))
    if len(out) != gen_tokens:
        raise BenchError(f"the decode loop produced {len(out)} tokens, expected {gen_tokens}")
    if getattr(session, "last_reused", 0):
        raise BenchError(f"the prefill reused {session.last_reused} cached prompt tokens; the timing would be wrong")
    return RunTiming(ttft_s=first - start, decode_s=last - first, prompt_tokens=len(ids), gen_tokens=gen_tokens,
                     output_ids=out)


def measure(model, ids: list[int], gen_tokens: int, runs: int = 3, warmup: int = 1) -> list[RunTiming]:
    """Measure one loaded EdgeModel: `warmup` unrecorded runs, then `runs` recorded ones."""
    check_sizes(len(ids), gen_tokens, runs, warmup, model.shape.context_length)
    for _ in range(warmup):
        measure_once(model, ids, gen_tokens)
    return [measure_once(model, ids, gen_tokens) for _ in range(runs)]


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


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnx-edge-kit", "numpy"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def result_from_runs(model, timings: list[RunTiming], *, threads: int | None, warmup: int, load_s: float,
                     ids: list[int]) -> BenchResult:
    """Fold the runs of one loaded model into a BenchResult (peak RSS is this process's, so far)."""
    m = model.manifest
    wbytes = weight_bytes(m)
    per_run = {
        "prefill_tps": [t.prefill_tps for t in timings],
        "decode_tps": [t.decode_tps for t in timings],
        "ttft_s": [t.ttft_s for t in timings],
        "gbps": [wbytes * t.decode_tps / 1e9 for t in timings],
    }
    stats = {k: summarize(v) for k, v in per_run.items()}
    return BenchResult(
        path=str(model.folder), name=Path(model.folder).name or str(model.folder), precision=m.precision,
        provider=model.provider, threads=threads, prompt_tokens=len(ids), gen_tokens=timings[0].gen_tokens,
        runs=len(timings), warmup=warmup,
        prefill_tps=stats["prefill_tps"]["median"], decode_tps=stats["decode_tps"]["median"],
        ttft_s=stats["ttft_s"]["median"], gbps=stats["gbps"]["median"],
        peak_rss_mb=peak_rss_mb(), size_mb=sum(e.size for e in m.files.values()) / MB, weight_mb=wbytes / MB,
        load_s=load_s, stats=stats, prompt_sha256=ids_sha256(ids), output_sha256=ids_sha256(timings[-1].output_ids),
        context_length=model.shape.context_length, library_versions=_versions(),
    )


def bench_in_process(path, provider: str = "cpu", prompt_tokens: int = 256, gen_tokens: int = 128, runs: int = 3,
                     threads: int | None = None, warmup: int = 1) -> BenchResult:
    """Load and measure in this process. Its peak RSS covers everything this process did before, too."""
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.model import load

    check_sizes(prompt_tokens, gen_tokens, runs, warmup, None)
    manifest = read_manifest(Path(path).expanduser())  # fail on the context before the model loads
    check_sizes(prompt_tokens, gen_tokens, runs, warmup, manifest.architecture.get("context_length"))
    start = time.perf_counter()
    model = load(path, provider=provider, threads=threads)
    load_s = time.perf_counter() - start
    ids = prompt_ids(model.tokenizer, prompt_tokens, model.shape.vocab_size)
    timings = measure(model, ids, gen_tokens, runs, warmup)
    return result_from_runs(model, timings, threads=threads, warmup=warmup, load_s=load_s, ids=ids)


def bench(path, provider: str = "cpu", prompt_tokens: int = 256, gen_tokens: int = 128, runs: int = 3,
          threads: int | None = None, warmup: int = 1, *, timeout: float | None = None) -> BenchResult:
    """Benchmark one exported folder in a fresh Python process, so its peak RSS is that model's alone."""
    from onnx_edge.manifest import read_manifest

    check_sizes(prompt_tokens, gen_tokens, runs, warmup, None)
    manifest = read_manifest(Path(path).expanduser())  # bad folders and over-long prompts fail here, at once
    check_sizes(prompt_tokens, gen_tokens, runs, warmup, manifest.architecture.get("context_length"))
    cmd = [sys.executable, "-m", "onnx_edge.evaluate.bench", "--worker", str(path), "--provider", provider,
           "--prompt-tokens", str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--runs", str(runs),
           "--warmup", str(warmup)]
    if threads:
        cmd += ["--threads", str(threads)]
    return run_worker(cmd, path, BenchError, timeout)


def run_worker(cmd: list[str], path, error: type[Exception], timeout: float | None = None) -> "BenchResult":
    """Run a benchmark worker subprocess; its last JSON line is a BenchResult or {"error": ...}."""
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


def add_worker_options(p: argparse.ArgumentParser) -> None:
    """The measurement options every benchmark worker (ours, compare's genai/gguf one) takes."""
    p.add_argument("--provider", default="cpu")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)


def _worker(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m onnx_edge.evaluate.bench",
                                description="Benchmark one exported folder; prints one JSON object.")
    p.add_argument("--worker", required=True, metavar="PATH")
    add_worker_options(p)
    a = p.parse_args(argv)
    try:
        result = bench_in_process(a.worker, a.provider, a.prompt_tokens, a.gen_tokens, a.runs, a.threads, a.warmup)
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
    sys.exit(_worker())
