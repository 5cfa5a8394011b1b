"""onnxruntime-genai folders (genai_config.json + model.onnx) as compare variants: the config and the graph's
inputs read into an in-memory Manifest, the graph run by our DecoderSession."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from onnx_edge.evaluate.bench import MB
from onnx_edge.evaluate.engine import SPEED_WORKER, CompareError, OrtVariant
from onnx_edge.manifest import sha256_file
from onnx_edge.textfile import read_json

GENAI_CONFIG = "genai_config.json"
KV_TYPES = {1: "float32", 10: "float16"}  # TensorProto element type -> the KV dtypes DecoderSession feeds


def _genai_fail(folder: Path, what: str) -> CompareError:
    return CompareError(f"{folder}: {GENAI_CONFIG} {what}")


def read_genai_config(folder: Path) -> dict:
    """The parts of genai_config.json compare needs, checked: I/O names, KV layout, special ids, sizes."""
    path = folder / GENAI_CONFIG
    cfg = read_json(path, CompareError)
    model = cfg.get("model")
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
    import mmap

    from onnx_edge.runtime.onnx_proto import tensors

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


def _folder_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _graph_interface(folder: Path, filename: str):
    """The same safety checks load() applies to our folders, before onnxruntime opens the graph (no links or
    special files, every external-data reference inside a file of this folder), and the graph's interface."""
    from onnx_edge.runtime import integrity

    integrity.scan_folder(folder)
    listed = {p.relative_to(folder).as_posix(): p.stat() for p in folder.rglob("*") if p.is_file()}
    st = integrity.member_stat(folder, filename, "genai model file",
                               missing=f"{filename}: named by {GENAI_CONFIG} but missing from {folder}")
    return integrity.check_model_file(folder, filename, st, listed).interface


def genai_io(folder: Path, cfg: dict, iface):
    """The IOSpec for this graph: genai_config.json's names checked against the graph's inputs (`iface`, from
    runtime.onnx_proto), position_ids only where the graph takes it, the KV dtype the graph's."""
    from onnx_edge.manifest import IOSpec

    ins, outs = cfg["inputs"], cfg["outputs"]
    inputs = {name: spec for name, spec in iface.inputs.items() if name not in iface.initializers}  # fed ones
    past_key, past_value = (ins[k].replace("%d", "{i}") for k in ("past_key_names", "past_value_names"))
    positions = ins.get("position_ids") or None
    if positions not in inputs:  # named by the config, but this graph computes positions itself
        positions = None
    fed = {ins["input_ids"], ins["attention_mask"]} | {t.format(i=i) for i in range(cfg["num_hidden_layers"])
                                                       for t in (past_key, past_value)}
    missing = sorted(fed - set(inputs))
    extra = sorted(set(inputs) - fed - {positions})
    if missing:
        raise CompareError(f"{folder}: the graph has no input {missing[0]!r} named in {GENAI_CONFIG}")
    if extra:
        raise CompareError(f"{folder}: the graph needs input {extra[0]!r}, which compare cannot feed "
                           f"(supported: input_ids, attention_mask, position_ids, past key/value per layer)")
    first = past_key.format(i=0)
    elem, dims = inputs[first]
    if len(dims) != 4 or any(isinstance(d, int) and d != want for d, want in
                             ((dims[1], cfg["num_key_value_heads"]), (dims[3], cfg["head_size"]))):
        raise CompareError(f"{folder}: KV input {first} has shape {dims}; {GENAI_CONFIG} implies "
                           f"(batch, {cfg['num_key_value_heads']}, past, {cfg['head_size']})")
    if elem not in KV_TYPES:
        raise CompareError(f"{folder}: KV cache element type {elem} is not supported (float32 or float16 only)")
    return IOSpec(input_ids=ins["input_ids"], attention_mask=ins["attention_mask"], position_ids=positions,
                  past_key=past_key, past_value=past_value, logits=outs["logits"],
                  present_key=outs["present_key_names"].replace("%d", "{i}"),
                  present_value=outs["present_value_names"].replace("%d", "{i}"), kv_dtype=KV_TYPES[elem])


def genai_manifest(folder: Path, cfg: dict, precision: str, io):
    """An in-memory Manifest for a genai folder, complete before any session: what DecoderSession and bench read."""
    from onnx_edge.manifest import FileEntry, Manifest

    arch = dict(model_type=cfg["type"], num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
                num_kv_heads=cfg["num_key_value_heads"], head_dim=cfg["head_size"], hidden_size=cfg["hidden_size"],
                intermediate_size=0, vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                norm_eps=0.0, rotary_dim=cfg["head_size"], rope_theta=0.0, rope_type="unknown", sliding_window=None,
                tie_word_embeddings=False, bos_token_id=cfg["bos"], eos_token_ids=cfg["eos"], pad_token_id=cfg["pad"])
    return Manifest(architecture=arch, io=io, model_file=cfg["filename"], graph="onnxruntime-genai",
                    precision=precision, tokenizer={"file": "tokenizer.json", "chat_template": None},
                    provenance={"source": str(folder), "source_kind": "onnxruntime-genai"},
                    files={rel: FileEntry(sha256="", size=size) for rel, size in _folder_sizes(folder).items()})


@dataclass(frozen=True, kw_only=True, eq=False)
class GenaiVariant(OrtVariant):
    """An onnxruntime-genai folder, run by our DecoderSession (the same decode loop as onnx-edge folders)."""

    kind = "genai"
    engine = "onnxruntime-genai"
    speed_worker = SPEED_WORKER
    config: dict = field(repr=False)  # read_genai_config's checked view of genai_config.json

    def load(self):
        """An EdgeModel for the folder: the folder checked and the manifest built from the config and the graph."""
        from onnx_edge.models.spec import ModelShape
        from onnx_edge.runtime.model import EdgeModel
        from onnx_edge.runtime.providers import resolve_provider
        from onnx_edge.runtime.session import DecoderSession
        from onnx_edge.runtime.tokenizer import load_tokenizer

        folder, cfg = Path(self.path), self.config
        io = genai_io(folder, cfg, _graph_interface(folder, cfg["filename"]))
        manifest = genai_manifest(folder, cfg, self.precision, io)
        chosen = resolve_provider(self.provider)
        session = DecoderSession(folder, manifest, chosen, threads=self.threads)
        shape = ModelShape.from_dict(manifest.architecture)
        return EdgeModel(folder=folder, manifest=manifest, shape=shape, session=session, tok=load_tokenizer(folder),
                         chat_template=self.chat_template, provider=chosen, eos_ids=set(shape.eos_token_ids))


def genai_variant(spec: str, folder: Path, provider: str, threads: int | None) -> GenaiVariant:
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.tokenizer import load_tokenizer

    cfg = read_genai_config(folder)
    if not (folder / "tokenizer.json").is_file():
        raise CompareError(f"{folder}: onnxruntime-genai folder without tokenizer.json (compare needs the "
                           f"tokenizers-library tokenizer to check it matches the other variants)")
    if not (folder / cfg["filename"]).is_file():
        raise CompareError(f"{folder}: {cfg['filename']} (decoder.filename in {GENAI_CONFIG}) is missing")
    tok = load_tokenizer(folder)
    return GenaiVariant(spec=spec, name=folder.resolve().name, path=str(folder),
                        precision=_genai_precision(folder, cfg["filename"]),
                        size_mb=sum(_folder_sizes(folder).values()) / MB, vocab_size=cfg["vocab_size"],
                        context_length=cfg["context_length"], tokenizer_sha256=sha256_file(folder / "tokenizer.json"),
                        tokenizer=tok.tokenizer, chat_template=load_chat_template(folder), bos_token=tok.bos_token,
                        eos_token=tok.eos_token, config=cfg, provider=provider, threads=threads)
