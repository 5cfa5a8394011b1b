#!/usr/bin/env python3
"""Does a quantized folder's quality depend on the CPU that runs it? Measured on two kinds of x86 CPU.

onnxruntime's int8 kernels differ by instruction set: with AVX-512 VNNI (and AVX-VNNI) u8*s8 products are
summed into 32 bits; on AVX2 and non-VNNI AVX-512 the U8S8 kernels use vpmaddubsw, which adds pairs of
products into 16 bits and saturates there. This script quantizes one fp32 folder in every int8 format
(dynamic and static: u8s8, u8s7 = 7-bit weights, u8u8, s8s8) plus the MatMulNBits variants whose compute
uses int8 activations (accuracy level 4), then scores every variant against the fp32 folder (KL, top-1,
perplexity on the same evaluation windows as `quantize`'s report)

  native  on this machine's CPU, and
  avx2    under `qemu-x86_64 -cpu Haswell` (Debian package qemu-user): an AVX2 + FMA CPU without any
          AVX-512 or VNNI, so onnxruntime's MLAS dispatches its AVX2 kernels. Numerics are exact under
          emulation; speed is not, so speed is measured natively only.

Usage (repository root, project venv):

    .venv/bin/python scripts/int8_isa.py --model tiny                 # the tests' tiny random llama
    .venv/bin/python scripts/int8_isa.py --model out/smollm2-fp32 --windows 4 --json-out /tmp/isa.json

Options: --model tiny|FOLDER (an fp32 onnx-edge folder); --windows N, --context N (evaluation);
--variants NAME,... (default: all); --workdir DIR (default: a temporary folder); --no-speed.
Prints one table; the numbers in docs/QUANTIZATION.md come from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "dynamic-u8s8": dict(precision="int8", scheme="dynamic", int8_format="u8s8"),
    "dynamic-u8s7": dict(precision="int8", scheme="dynamic", int8_format="u8s7"),
    "dynamic-u8u8": dict(precision="int8", scheme="dynamic", int8_format="u8u8"),
    "static-u8s8": dict(precision="int8", scheme="static", int8_format="u8s8"),
    "static-u8s7": dict(precision="int8", scheme="static", int8_format="u8s7"),
    "static-u8u8": dict(precision="int8", scheme="static", int8_format="u8u8"),
    "static-s8s8": dict(precision="int8", scheme="static", int8_format="s8s8"),
    "int8-weight-only-acc4": dict(precision="int8", accuracy_level=4),
    "int8-weight-only-acc0": dict(precision="int8", accuracy_level=0),
    "int4-acc4": dict(precision="int4", accuracy_level=4),
    "int4-acc0": dict(precision="int4", accuracy_level=0),
}
QEMU = ["qemu-x86_64", "-cpu", "Haswell"]


def build(model: str, workdir: Path, names: list[str], context: int, windows: int) -> Path:
    from onnx_edge.quantize import QuantConfig, quantize

    if model == "tiny":
        from onnx_edge.export import export
        from tests.fixtures import build_tiny_model

        src = build_tiny_model("llama", workdir / "tiny-src", seed=0)
        fp32 = workdir / "fp32"
        export(str(src), fp32)
    else:
        fp32 = Path(model).absolute()
    for name in names:
        quantize(fp32, workdir / name, QuantConfig(**VARIANTS[name], context=context, eval_windows=windows, report=False),
                 force=True)
    return fp32


def score(fp32: Path, workdir: Path, names: list[str], context: int, windows: int) -> dict:
    """Runs in the measured process (native or emulated): every variant against fp32 on the same windows."""
    from onnx_edge.manifest import read_manifest
    from onnx_edge.quantize.calibration import texts
    from onnx_edge.evaluate.cpu import cpu_isa
    from onnx_edge.evaluate.quality import compare_sessions, token_windows
    from onnx_edge.runtime.session import DecoderSession
    from onnx_edge.runtime.tokenizer import load_tokenizer

    ref_manifest = read_manifest(fp32)
    tokenizer = load_tokenizer(fp32, ref_manifest.tokenizer.get("file", "tokenizer.json")).tokenizer
    _, eval_text, label = texts(None)
    win = token_windows(tokenizer, eval_text, min(context, ref_manifest.architecture["context_length"]), windows)
    ref = DecoderSession(fp32, ref_manifest, "cpu")
    out = {"isa": cpu_isa(), "variants": {}}
    for name in names:
        q = read_manifest(workdir / name)
        r = compare_sessions(ref, DecoderSession(workdir / name, q, "cpu"), win, label)
        out["variants"][name] = dict(kl=r.kl, top1=r.top1, perplexity=r.perplexity,
                                     perplexity_reference=r.perplexity_reference, tokens=r.tokens)
    return out


def speed(workdir: Path, names: list[str], fp32: Path) -> dict:
    """Native prefill and decode tok/s (bench's in-process measurement: up to 256 prompt tokens, 64 generated)."""
    from onnx_edge.manifest import read_manifest
    from onnx_edge.evaluate.bench import BenchParams, bench_in_process

    ctx = read_manifest(fp32).architecture["context_length"]
    res = {}
    for name, folder in [("fp32", fp32)] + [(n, workdir / n) for n in names]:
        r = bench_in_process(folder, BenchParams(prompt_tokens=min(256, ctx // 2), gen_tokens=min(64, ctx // 4)))
        res[name] = dict(prefill_tok_s=r.prefill_tps, decode_tok_s=r.decode_tps)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--doc", type=Path, help="also write the table into this doc's int8-isa block "
                                            "(docs/QUANTIZATION.md)")
    ap.add_argument("--score", nargs=2, metavar=("FP32", "WORKDIR"), help=argparse.SUPPRESS)  # worker half
    args = ap.parse_args()
    names = [n for n in args.variants.split(",") if n]
    if args.score:
        print(json.dumps(score(Path(args.score[0]), Path(args.score[1]), names, args.context, args.windows)))
        return 0
    if shutil.which(QEMU[0]) is None:
        sys.exit("error: qemu-x86_64 not found (apt-get install qemu-user)")
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="int8-isa-")) if own else args.workdir
    try:
        fp32 = build(args.model, workdir, names, args.context, args.windows)
        worker = [sys.executable, __file__, "--score", str(fp32), str(workdir), "--variants", ",".join(names),
                  "--context", str(args.context), "--windows", str(args.windows)]
        results = {}
        for isa, prefix in (("native", []), ("avx2", QEMU)):
            t0 = time.time()
            run = subprocess.run(prefix + worker, capture_output=True, text=True, check=True)
            results[isa] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"scored {isa} in {time.time() - t0:.0f} s ({results[isa]['isa']['int8_kernel']})", file=sys.stderr)
        fast = {} if args.no_speed else speed(workdir, names, fp32)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"model: {args.model}; {args.windows} windows x {args.context} tokens; "
          f"native int8 kernel: {results['native']['isa']['int8_kernel']}, emulated: {results['avx2']['isa']['int8_kernel']}")
    head = f"{'variant':24} {'KL native':>10} {'KL avx2':>10} {'top1 nat':>9} {'top1 avx2':>9}"
    head += "" if args.no_speed else f" {'prefill tok/s':>13} {'decode tok/s':>12}"
    print(head)
    for name in names:
        a, b = results["native"]["variants"][name], results["avx2"]["variants"][name]
        line = f"{name:24} {a['kl']:10.5f} {b['kl']:10.5f} {a['top1']:9.3f} {b['top1']:9.3f}"
        if fast:
            line += f" {fast[name]['prefill_tok_s']:13.0f} {fast[name]['decode_tok_s']:12.1f}"
        print(line)
    if fast:
        print(f"{'fp32':24} {'':10} {'':10} {'':9} {'':9} {fast['fp32']['prefill_tok_s']:13.0f} "
              f"{fast['fp32']['decode_tok_s']:12.1f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(dict(results=results, speed=fast, model=args.model), indent=2))
    if args.doc:
        from doc_blocks import write_block

        write_block(args.doc, "int8-isa", doc_table(results, names, args))
    return 0


LABELS = {"dynamic-u8s8": "dynamic u8s8 (onnxruntime's usual)", "dynamic-u8s7": "dynamic u8s7 (7-bit weights)",
          "dynamic-u8u8": "dynamic u8u8 (**default**)", "static-u8s8": "static u8s8", "static-s8s8": "static s8s8",
          "static-u8s7": "static u8s7", "static-u8u8": "static u8u8 (**default**)",
          "int8-weight-only-acc4": "int8 weight-only, accuracy level 4 (MatMulNBits, int8 activations)",
          "int8-weight-only-acc0": "int8 weight-only, accuracy level 0",
          "int4-acc4": "int4 weight-only, accuracy level 4", "int4-acc0": "int4 weight-only, accuracy level 0"}


def doc_table(results: dict, names: list[str], args) -> list[str]:
    """The markdown table of one run; a number the emulated CPU changes by more than 1% is in bold."""
    native, avx2 = results["native"], results["avx2"]
    lines = [f"`scripts/int8_isa.py --model {args.model} --doc docs/QUANTIZATION.md`, {time.strftime('%Y-%m-%d')}: "
             f"{args.windows} windows × {args.context} tokens; native int8 kernel class "
             f"`{native['isa']['int8_kernel']}`, emulated `{avx2['isa']['int8_kernel']}` (qemu-x86_64 -cpu Haswell).",
             "", f"| {args.model}, int8 format | KL native | KL AVX2 | top-1 native | top-1 AVX2 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name in names:
        a, b = native["variants"][name], avx2["variants"][name]
        moved = abs(b["kl"] - a["kl"]) > 0.01 * max(a["kl"], 1e-9)
        kl, top1 = (f"**{b['kl']:.5f}**", f"**{b['top1']:.3f}**") if moved else (f"{b['kl']:.5f}", f"{b['top1']:.3f}")
        lines.append(f"| {LABELS.get(name, name)} | {a['kl']:.5f} | {kl} | {a['top1']:.3f} | {top1} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
