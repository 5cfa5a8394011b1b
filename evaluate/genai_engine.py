"""onnxruntime-genai folders (genai_config.json + model.onnx) as compare variants: the config read into an
in-memory Manifest, the graph run by our DecoderSession."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from onnx_edge.evaluate.variants import (ENGINE_GENAI, GENAI_CONFIG, CompareError, OrtEngine, Variant,
                                                file_sha256, folder_size, tokenizer_encoder)


def _genai_fail(folder: Path, what: str) -> CompareError:
    return CompareError(f"{folder}: {GENAI_CONFIG} {what}")


def read_genai_config(folder: Path) -> dict:
    """The parts of genai_config.json compare needs, checked: I/O names, KV layout, special ids, sizes."""
    path = folder / GENAI_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: unreadable ({exc})") from None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    dec = model.get("decoder") if isinstance(model, dict) else None
    if not isinstance(dec, dict):
        raise _genai_fail(folder, "has no model.decoder section")
    ins, outs = dec.get("inputs") or {}, dec.get("outputs") or {}
    if "past_names" in ins or "present_names" in outs:
        raise _genai_fail(folder, "uses a combined key/value cache (past_names); compare needs separate "
                                  "past_key_names / past_value_names")
    for key, where in (("input_ids", ins), ("attention_mask", ins), ("past_key_names", ins),
                       ("past_value_names", ins), ("logits", outs), ("present_key_names", outs),
                       ("present_value_names", outs)):
        if not isinstance(where.get(key), str) or not where[key]:
            raise _genai_fail(folder, f"lacks decoder {'inputs' if where is ins else 'outputs'}.{key}")
    for key in ("past_key_names", "past_value_names"):
        if "%d" not in ins[key]:
            raise _genai_fail(folder, f"decoder inputs.{key} {ins[key]!r} has no %d layer index")
    for key in ("present_key_names", "present_value_names"):
        if "%d" not in outs[key]:
            raise _genai_fail(folder, f"decoder outputs.{key} {outs[key]!r} has no %d layer index")
    ints = {}
    for key in ("head_size", "num_key_value_heads", "num_hidden_layers", "num_attention_heads"):
        value = dec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _genai_fail(folder, f"decoder.{key} must be a positive integer")
        ints[key] = value
    for key in ("context_length", "vocab_size"):
        value = model.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _genai_fail(folder, f"model.{key} must be a positive integer")
        ints[key] = value
    filename = dec.get("filename", "model.onnx")
    from onnx_edge.runtime.integrity import check_relative

    check_relative(filename, f"{GENAI_CONFIG} decoder.filename")

    def ids(value) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []

    pad = ids(model.get("pad_token_id"))
    bos = ids(model.get("bos_token_id"))
    return dict(filename=filename, inputs=ins, outputs=outs, type=str(model.get("type", "unknown")),
                hidden_size=int(dec.get("hidden_size") or 0), eos=ids(model.get("eos_token_id")),
                bos=bos[0] if bos else None, pad=pad[0] if pad else None, **ints)


def _genai_precision(folder: Path, filename: str) -> str:
    """int4/int8 (genai's MatMulNBits weights are named *_Q4 / *_Q8), else the dominant float type."""
    from onnx_edge.runtime.integrity import tensors

    import mmap

    try:
        with open(folder / filename, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found = tensors(buf)
    except Exception:  # a malformed graph is reported by the integrity check when it is opened
        return "unknown"
    names = [t.name for t in found]
    for bits in (4, 8):
        if any(n.endswith(f"_Q{bits}") for n in names):
            return f"int{bits}"
    weight = {1: 0, 10: 0, 16: 0}
    for t in found:
        if t.data_type in weight:
            weight[t.data_type] += math.prod(t.dims) if t.dims else 1
    dominant = max(weight, key=weight.get)
    return {1: "fp32", 10: "fp16", 16: "bf16"}[dominant] if weight[dominant] else "unknown"


def genai_manifest(folder: Path, cfg: dict, precision: str):
    """An in-memory Manifest for a genai folder: what DecoderSession and bench's result_from_runs read."""
    from onnx_edge.manifest import FileEntry, IOSpec, Manifest

    ins, outs = cfg["inputs"], cfg["outputs"]
    io = IOSpec(input_ids=ins["input_ids"], attention_mask=ins["attention_mask"],
                position_ids=ins.get("position_ids") or None,
                past_key=ins["past_key_names"].replace("%d", "{i}"), past_value=ins["past_value_names"].replace("%d", "{i}"),
                logits=outs["logits"], present_key=outs["present_key_names"].replace("%d", "{i}"),
                present_value=outs["present_value_names"].replace("%d", "{i}"))
    arch = dict(model_type=cfg["type"], num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
                num_kv_heads=cfg["num_key_value_heads"], head_dim=cfg["head_size"], hidden_size=cfg["hidden_size"],
                intermediate_size=0, vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                norm_eps=0.0, rotary_dim=cfg["head_size"], rope_theta=0.0, rope_type="unknown", sliding_window=None,
                tie_word_embeddings=False, bos_token_id=cfg["bos"], eos_token_ids=cfg["eos"], pad_token_id=cfg["pad"])
    _, sizes = folder_size(folder)
    return Manifest(architecture=arch, io=io, model_file=cfg["filename"], graph="onnxruntime-genai",
                    precision=precision, tokenizer={"file": "tokenizer.json", "chat_template": None},
                    provenance={"source": str(folder), "source_kind": "onnxruntime-genai"},
                    files={rel: FileEntry(sha256="", size=size) for rel, size in sizes.items()})


def _check_genai_folder(folder: Path, filename: str) -> None:
    """The same safety checks load() applies to our folders, before onnxruntime opens the graph: no links or
    special files, every external-data reference inside a file of this folder."""
    from onnx_edge.runtime import integrity

    integrity.scan_folder(folder)
    listed = {p.relative_to(folder).as_posix(): p.stat() for p in folder.rglob("*") if p.is_file()}
    st = integrity.member_stat(folder, filename, "genai model file",
                               missing=f"{filename}: named by {GENAI_CONFIG} but missing from {folder}")
    integrity.check_model_file(folder, filename, st, listed)


def genai_variant(spec: str, folder: Path, provider: str, threads: int | None) -> Variant:
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.tokenizer import load_tokenizer

    cfg = read_genai_config(folder)
    if not (folder / "tokenizer.json").is_file():
        raise CompareError(f"{folder}: onnxruntime-genai folder without tokenizer.json (compare needs the "
                           f"tokenizers-library tokenizer to check it matches the other variants)")
    if not (folder / cfg["filename"]).is_file():
        raise CompareError(f"{folder}: {cfg['filename']} (decoder.filename in {GENAI_CONFIG}) is missing")
    tok = load_tokenizer(folder)
    size_mb, _ = folder_size(folder)

    def opener(context: int):
        return OrtEngine(open_genai(folder, provider, threads))

    return Variant(spec=spec, name=folder.resolve().name, kind="genai", engine=ENGINE_GENAI, path=str(folder),
                   precision=_genai_precision(folder, cfg["filename"]), size_mb=size_mb,
                   vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                   tokenizer_sha256=file_sha256(folder / "tokenizer.json"), encoder=tokenizer_encoder(tok.tokenizer),
                   opener=opener, chat_template=load_chat_template(folder), bos_token=tok.bos_token,
                   eos_token=tok.eos_token)


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16"}


def open_genai(folder: Path, provider: str = "cpu", threads: int | None = None):
    """An EdgeModel for an onnxruntime-genai folder, run by our DecoderSession (same decode loop)."""
    from onnx_edge.models.spec import ModelShape
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.model import EdgeModel
    from onnx_edge.runtime.providers import resolve_provider
    from onnx_edge.runtime.session import DecoderSession
    from onnx_edge.runtime.tokenizer import load_tokenizer

    folder = Path(folder)
    cfg = read_genai_config(folder)
    _check_genai_folder(folder, cfg["filename"])
    manifest = genai_manifest(folder, cfg, _genai_precision(folder, cfg["filename"]))
    chosen = resolve_provider(provider)
    session = DecoderSession(folder, manifest, chosen, threads=threads)
    inputs = {i.name: i for i in session.session.get_inputs()}  # required inputs only (not initializers)
    io = manifest.io
    fed = {io.input_ids, io.attention_mask} | {n for pair in session.past_names for n in pair}
    if io.position_ids:
        fed.add(io.position_ids)
    missing = sorted(n for n in fed if n not in inputs and n != io.position_ids)
    extra = sorted(set(inputs) - fed)
    if missing:
        raise CompareError(f"{folder}: the graph has no input {missing[0]!r} named in {GENAI_CONFIG}")
    if extra:
        raise CompareError(f"{folder}: the graph needs input {extra[0]!r}, which compare cannot feed "
                           f"(supported: input_ids, attention_mask, position_ids, past key/value per layer)")
    if io.position_ids and io.position_ids not in inputs:
        session.uses_positions = False
    past = inputs[session.past_names[0][0]]
    dims = list(past.shape)
    if len(dims) != 4 or any(isinstance(d, int) and d != want for d, want in
                             ((dims[1], cfg["num_key_value_heads"]), (dims[3], cfg["head_size"]))):
        raise CompareError(f"{folder}: KV input {past.name} has shape {dims}; {GENAI_CONFIG} implies "
                           f"(batch, {cfg['num_key_value_heads']}, past, {cfg['head_size']})")
    kv_dtype = _ORT_TYPES.get(past.type)
    if kv_dtype is None or kv_dtype == "bfloat16":
        raise CompareError(f"{folder}: KV cache type {past.type} is not supported")
    io.kv_dtype = kv_dtype
    session.kv_dtype = np.dtype(kv_dtype)
    shape = ModelShape.from_dict(manifest.architecture)
    tok = load_tokenizer(folder)
    return EdgeModel(folder=folder, manifest=manifest, shape=shape, session=session, tok=tok,
                     chat_template=load_chat_template(folder), provider=chosen, eos_ids=set(shape.eos_token_ids))
