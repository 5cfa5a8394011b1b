#!/usr/bin/env python3
"""Benchmark sweeps with `onnx_edge.evaluate.bench`, each plotted to a PNG and tabled in docs/BENCHMARKS.md.

    # prompt length 128 -> 2048 (doubling) on one exported folder
    .venv/bin/python scripts/bench_sweep.py context /tmp/smol-fp32 [--lengths 128,256,512,1024,2048]
    # model size: random-weight Llama shapes built without torch (SmolLM2-135M, SmolLM2-360M, TinyLlama-1.1B)
    .venv/bin/python scripts/bench_sweep.py sizes --tokenizer-from /tmp/smol-fp32 [--shapes 135m,360m,1b]

Common options: --prompt-tokens/--gen-tokens/--runs/--warmup/--threads (same meaning as `onnx-edge bench`),
--png PATH, --doc docs/BENCHMARKS.md (the script rewrites its own marked block there), --json PATH.

matplotlib draws the plots. It is NOT a dependency of onnx-edge-kit: install it into the venv you run this
script with, for the script only: `.venv/bin/pip install matplotlib`.

The size sweep builds each model in code: random float32 weights in the canonical layout of
export/weights.py, the graph from `onnx_edge.export.fused.build_fused_decoder` (the default export graph;
numpy in, ONNX out, no torch), each size measured in fp32 and quantized to int4 (`--precisions`),
rotary tables computed with numpy, the folder saved with export/exporter.py's `save_model` and a manifest
written with `onnx_edge.manifest.write_manifest`. The tokenizer is copied from an exported SmolLM2 folder
(--tokenizer-from); the benchmark never decodes text, it only needs the prompt ids. Random weights run at
exactly the speed of trained ones (same shapes, same kernels). Each model folder is deleted after its
measurement unless --keep: the ~1.1B one is ~4.4 GB on disk and takes ~9 GB of RAM while it is built.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from doc_blocks import write_block  # scripts/ is on sys.path when a script in it runs

ROOT = Path(__file__).resolve().parents[1]

# name -> (label, hidden, layers, heads, kv_heads, intermediate, vocab, context, rope_theta, tied)
SHAPES = {
    "135m": ("SmolLM2-135M shape", 576, 30, 9, 3, 1536, 49152, 8192, 100000.0, True),
    "360m": ("SmolLM2-360M shape", 960, 32, 15, 5, 2560, 49152, 8192, 100000.0, True),
    "1b": ("TinyLlama-1.1B shape", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.0, False),
}


def log(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# random-weight models, no torch
# ------------------------------------------------------------------------------------------------

def random_llama(folder: Path, key: str, tokenizer_from: Path, seed: int = 0) -> int:
    """Write a loadable folder (graph, tokenizer, manifest) with random weights; return the parameter count."""
    from onnx_edge import __version__
    from onnx_edge.export.exporter import save_model
    from onnx_edge.export.fused import build_fused_decoder
    from onnx_edge.manifest import Manifest, write_manifest
    from onnx_edge.models import get_spec
    from onnx_edge.models.spec import ModelShape

    label, h, layers, nh, nkv, inter, vocab, ctx, theta, tied = SHAPES[key]
    d = h // nh
    shape = ModelShape(model_type="llama", num_layers=layers, num_heads=nh, num_kv_heads=nkv, head_dim=d,
                       hidden_size=h, intermediate_size=inter, vocab_size=vocab, context_length=ctx, norm_eps=1e-5,
                       rotary_dim=d, rope_theta=theta, rope_type="default", sliding_window=None,
                       tie_word_embeddings=tied, bos_token_id=1, eos_token_ids=[2], pad_token_id=2)
    spec = get_spec("llama")
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32, copy=False)

    # Canonical layout (export/weights.py): matrices (in, out), q|k|v and gate|up packed along `out`,
    # embedding and lm_head (vocab, hidden); a tied head is simply absent.
    w: dict[str, np.ndarray] = {"embed_tokens.weight": mat(vocab, h)}
    for i in range(layers):
        p = f"layers.{i}."
        w[p + "attn_norm.weight"] = np.ones(h, np.float32)
        w[p + "mlp_norm.weight"] = np.ones(h, np.float32)
        w[p + "qkv.weight"] = mat(h, (nh + 2 * nkv) * d)
        w[p + "o.weight"] = mat(nh * d, h)
        w[p + "gate_up.weight"] = mat(h, 2 * inter)
        w[p + "down.weight"] = mat(inter, h)
    w["final_norm.weight"] = np.ones(h, np.float32)
    if not tied:
        w["lm_head.weight"] = mat(vocab, h)
    params = int(sum(a.size for a in w.values()))

    inv_freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)  # default rope, as transformers
    freqs = np.outer(np.arange(ctx, dtype=np.float64), inv_freq)  # (ctx, d/2)
    rope = (np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32))

    proto, io = build_fused_decoder(spec, shape, w, rope, opset=17, producer_version=__version__)
    del w  # the proto holds its own copy; free ours before saving
    folder.mkdir(parents=True)
    save_model(proto, folder)
    del proto
    copy_tokenizer(tokenizer_from, folder, vocab)
    manifest = Manifest(
        architecture=shape.to_dict(), io=io, graph="fused", precision="fp32", provider="cpu", opset=17,
        tokenizer={"file": "tokenizer.json", "chat_template": None},
        provenance={"source": f"random weights, {label}", "source_kind": "random", "source_sha256": None,
                    "exporter": f"onnx-edge-kit {__version__} (scripts/bench_sweep.py)", "seed": seed,
                    "parameters": params, "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())},
    )
    write_manifest(folder, manifest)
    return params


def copy_tokenizer(src: Path, dst: Path, vocab: int) -> None:
    """Copy the BPE tokenizer; for a smaller model vocabulary (TinyLlama's 32000 under SmolLM2's 49152
    tokenizer) drop the ids the model has no row for, and the merges that would produce them."""
    shutil.copy2(src / "tokenizer_config.json", dst / "tokenizer_config.json")
    data = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if max(model["vocab"].values()) >= vocab:
        model["vocab"] = {t: i for t, i in model["vocab"].items() if i < vocab}
        kept = []
        for m in model.get("merges", []):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"]:
                kept.append(m)
        model["merges"] = kept
        data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < vocab]
    (dst / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# sweeps
# ------------------------------------------------------------------------------------------------

def _bench(folder: Path, args, prompt_tokens: int) -> dict:
    from onnx_edge.evaluate.bench import BenchParams, bench

    params = BenchParams(prompt_tokens=prompt_tokens, gen_tokens=args.gen_tokens, runs=args.runs,
                         threads=args.threads, warmup=args.warmup)
    r = bench([folder], params)[0].to_dict()
    log(f"{folder.name} @ {prompt_tokens}: prefill {r['prefill_tps']:.1f} tok/s, decode {r['decode_tps']:.1f} tok/s, "
        f"TTFT {r['ttft_s'] * 1e3:.0f} ms, peak RSS {r['peak_rss_mb']:.0f} MB")
    return r


def sweep_context(args) -> dict:
    lengths = [int(x) for x in args.lengths.split(",")]
    points = []
    for n in lengths:
        r = _bench(args.folder, args, n)
        r["load_avg"] = list(__import__("os").getloadavg())
        points.append(r)
    return {"kind": "context", "folder": str(args.folder), "points": points}


def sweep_sizes(args) -> dict:
    keys = [k.strip() for k in args.shapes.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape(s) {unknown}; have {sorted(SHAPES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    points = []
    for key in keys:
        folder = args.work / f"random-{key}"
        if folder.exists() and not (folder / "manifest.json").is_file():
            shutil.rmtree(folder)
        if not folder.exists():
            log(f"building random {SHAPES[key][0]} in {folder}")
            t = time.perf_counter()
            params = random_llama(folder, key, args.tokenizer_from)
            log(f"built {params / 1e6:.0f}M parameters in {time.perf_counter() - t:.0f} s")
        params = json.loads((folder / "manifest.json").read_text())["provenance"]["parameters"]
        try:
            for precision in args.precisions.split(","):
                target = folder
                if precision != "fp32":
                    from onnx_edge.quantize import QuantConfig, quantize

                    target = args.work / f"random-{key}-{precision}"
                    shutil.rmtree(target, ignore_errors=True)
                    t = time.perf_counter()
                    quantize(folder, target, QuantConfig(precision=precision, report=False))
                    log(f"quantized to {precision} in {time.perf_counter() - t:.0f} s")
                try:
                    r = _bench(target, args, args.prompt_tokens)
                finally:
                    if target != folder:
                        shutil.rmtree(target, ignore_errors=True)
                r.update(shape=key, label=SHAPES[key][0], parameters=params)
                r["load_avg"] = list(__import__("os").getloadavg())
                points.append(r)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    return {"kind": "sizes", "points": points}


# ------------------------------------------------------------------------------------------------
# plots and the doc block
# ------------------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("matplotlib is needed for the plots (script only): .venv/bin/pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(result: dict, png: Path, title: str) -> None:
    plt = _pyplot()
    pts = result["points"]
    if result["kind"] == "context":
        x = [p["prompt_tokens"] for p in pts]
        xlabel, xscale = "prompt tokens", "log"
    else:
        x = [p["parameters"] / 1e6 for p in pts]
        xlabel, xscale = "parameters (M)", "log"
    panels = [("prefill_tps", "prefill (tok/s)"), ("decode_tps", "decode (tok/s)"),
              ("ttft_s", "time to first token (s)"), ("gbps" if result["kind"] == "sizes" else "peak_rss_mb",
                                                     "weights read in decode (GB/s)" if result["kind"] == "sizes"
                                                     else "peak RSS (MB)")]
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5))
    groups = sorted({p["precision"] for p in pts}, key=lambda g: g != "fp32")
    for ax, (key, label) in zip(axes.flat, panels):
        for group in groups:
            sel = [(xv, p) for xv, p in zip(x, pts) if p["precision"] == group]
            gx, gp = [xv for xv, _ in sel], [p for _, p in sel]
            if key in gp[0].get("stats", {}):
                med = [p["stats"][key]["median"] for p in gp]
                lo = [p["stats"][key]["median"] - p["stats"][key]["min"] for p in gp]
                hi = [p["stats"][key]["max"] - p["stats"][key]["median"] for p in gp]
                ax.errorbar(gx, med, yerr=[lo, hi], marker="o", capsize=3, label=group)
            else:
                ax.plot(gx, [p[key] for p in gp], marker="o", label=group)
        if len(groups) > 1:
            ax.legend()
        ax.set_xscale(xscale)
        if result["kind"] == "context":
            ax.set_xticks(x, [str(v) for v in x])
        else:
            ax.set_xticks(sorted(set(x)), [f"{v:.0f}" for v in sorted(set(x))])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def table(result: dict) -> list[str]:
    pts = result["points"]
    first = pts[0]
    head = ("| prompt tokens |" if result["kind"] == "context" else "| model | parameters | precision |")
    sep = ("| ---: |" if result["kind"] == "context" else "| --- | ---: | --- |")
    lines = [head + " size (MB) | peak RSS (MB) | TTFT (ms) | prefill (tok/s) | decode (tok/s) | GB/s | load avg |",
             sep + " ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in pts:
        s = p["stats"]
        lead = (f"| {p['prompt_tokens']} |" if result["kind"] == "context"
                else f"| {p['label']} | {p['parameters'] / 1e6:.0f}M | {p['precision']} |")
        lines.append(f"{lead} {p['size_mb']:.0f} | {p['peak_rss_mb']:.0f} | {s['ttft_s']['median'] * 1e3:.0f} | "
                     f"{s['prefill_tps']['median']:.0f} | {s['decode_tps']['median']:.1f} "
                     f"({s['decode_tps']['min']:.1f}–{s['decode_tps']['max']:.1f}) | {s['gbps']['median']:.2f} | "
                     f"{p['load_avg'][0]:.2f} |")
    lines.append("")
    lines.append(f"{first['gen_tokens']} greedy tokens, {first['threads'] or 'default'} threads, "
                 f"median of {first['runs']} runs after {first['warmup']} warm-up; "
                 f"onnxruntime {first['library_versions'].get('onnxruntime', '?')}.")
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    ctx = sub.add_parser("context", help="prompt length sweep on one exported folder")
    ctx.add_argument("folder", type=Path)
    ctx.add_argument("--lengths", default="128,256,512,1024,2048")
    sizes = sub.add_parser("sizes", help="random-weight Llama shapes (~135M, ~360M, ~1.1B), no torch")
    sizes.add_argument("--shapes", default="135m,360m,1b", help=f"comma list of {', '.join(SHAPES)}")
    sizes.add_argument("--tokenizer-from", type=Path, required=True,
                       help="an exported SmolLM2 folder to copy tokenizer.json from")
    sizes.add_argument("--work", type=Path, default=Path("/tmp/edge-sweep"))
    sizes.add_argument("--keep", action="store_true", help="keep the random model folders")
    sizes.add_argument("--prompt-tokens", type=int, default=128)
    sizes.add_argument("--precisions", default="fp32,int4", help="comma list: fp32 and/or quantize precisions")
    for sp in (ctx, sizes):
        sp.add_argument("--gen-tokens", type=int, default=32)
        sp.add_argument("--runs", type=int, default=2)
        sp.add_argument("--warmup", type=int, default=1)
        sp.add_argument("--threads", type=int, default=2)
        sp.add_argument("--png", type=Path, default=None)
        sp.add_argument("--json", type=Path, default=None)
        sp.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = p.parse_args(argv)
    _pyplot()  # fail before minutes of measuring, not after
    if args.kind == "context":
        result = sweep_context(args)
        title = f"{args.folder.name}: prompt length sweep ({args.threads} threads)"
    else:
        result = sweep_sizes(args)
        title = (f"model size sweep: random-weight Llama shapes ({args.precisions}), {args.prompt_tokens} prompt "
                 f"tokens ({args.threads} threads)")
    png = args.png or ROOT / "docs" / f"bench_{args.kind}.png"
    plot(result, png, title)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    rel = png.resolve().relative_to(args.doc.resolve().parent) if png.resolve().is_relative_to(
        args.doc.resolve().parent) else png
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
             f"`scripts/bench_sweep.py {args.kind}`.", "", f"![{args.kind} sweep]({rel})", "", *table(result)]
    write_block(args.doc, f"sweep-{args.kind}", lines)
    log(f"wrote {png} and the sweep-{args.kind} block of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
