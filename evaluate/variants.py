"""compare's variants: what a model path is (onnx-edge folder, onnxruntime-genai folder, .gguf file), described
without loading weights, and the onnxruntime engine behind onnx-edge and genai folders."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnx_edge.errors import EdgeError

ENGINE_ORT = "onnxruntime"
ENGINE_GENAI = "onnxruntime-genai"
ENGINE_LLAMA = "llama.cpp"
ENGINE_TORCH = "pytorch"
GGUF_EXTRA = "gguf-runtime"
GENAI_CONFIG = "genai_config.json"
MB = 1e6


class CompareError(EdgeError):
    """Variants that cannot be compared (other vocabulary or tokenizer, unknown kind, missing extra)."""


@dataclass
class Variant:
    """What compare knows about one model before loading it (cheap: no weights read)."""

    spec: str  # what the user typed
    name: str  # display name
    kind: str  # "onnx-edge" | "genai" | "gguf" | "pytorch"
    engine: str  # ENGINE_*
    path: str | None
    precision: str  # "fp32", "int4 weight_only rtn b32 asym", "gguf Q4_1 blocks", ...
    size_mb: float | None
    vocab_size: int
    context_length: int
    tokenizer_sha256: str | None = None  # of tokenizer.json, where there is one
    # encode(text, special) -> ids; `special` adds the tokenizer's own special tokens (BOS) like generate does
    encoder: Callable[[str, bool], list[int]] | None = field(default=None, repr=False)
    opener: Callable[..., object] | None = field(default=None, repr=False)  # (context_needed) -> engine
    chat_template: str | None = field(default=None, repr=False)
    bos_token: str = ""
    eos_token: str = ""
    # an onnx-edge folder's own quantize report: {"kl", "top1", "measured_on", "cpu_dependent"}
    recorded: dict | None = None

    def encode(self, text: str, special: bool = False) -> list[int]:
        return list(self.encoder(text, special))

    def open(self, context: int):
        return self.opener(context)

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in ("spec", "name", "kind", "engine", "path", "precision", "size_mb",
                                              "vocab_size", "context_length", "tokenizer_sha256", "recorded")}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def folder_size(folder: Path) -> tuple[float, dict[str, int]]:
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    return sum(sizes.values()) / MB, sizes


def precision_label(manifest) -> str:
    """The precision/scheme of an onnx-edge folder, from its manifest."""
    q = manifest.quantization
    if not q:
        return manifest.precision
    if q.get("method") == "gguf_blocks":
        kinds = sorted({str(w.get("qtype")) for w in (q.get("weights") or {}).values()
                        if isinstance(w, dict) and w.get("status") == "imported"})
        return f"gguf {'/'.join(kinds) or manifest.precision} blocks" + (" (exact)" if q.get("exact") else "")
    cfg = q.get("config") or {}
    label = f"{cfg.get('precision', manifest.precision)} {cfg.get('scheme', '')}".strip()
    if cfg.get("scheme") == "weight_only":
        label += (f" {cfg.get('algorithm')} b{cfg.get('block_size')} "
                  f"{'sym' if cfg.get('symmetric') else 'asym'}")
        if cfg.get("accuracy_level"):
            label += f" acc{cfg['accuracy_level']}"
    elif cfg.get("scheme") == "static":
        label += f" {cfg.get('calibration')}"
    kept = (q.get("sensitivity") or {}).get("kept") or cfg.get("keep") or []
    if kept:
        label += f" (+{len(kept)} kept)"
    return label


def tokenizer_encoder(tokenizer) -> Callable[[str, bool], list[int]]:
    return lambda text, special: tokenizer.encode(text, add_special_tokens=special).ids


def display_names(variants: list[Variant]) -> None:
    """Folder names, made longer only where two would read the same."""
    names = [v.name for v in variants]
    if len(set(names)) == len(names):
        return
    for v in variants:
        if v.path:
            p = Path(v.path)
            v.name = f"{p.parent.name}/{p.name}"
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        for v in variants:
            v.name = v.spec


def describe(spec: str, provider: str = "cpu", threads: int | None = None) -> Variant:
    """A Variant for a path: onnx-edge folder, onnxruntime-genai folder or .gguf file."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise CompareError(f"{spec}: no such file or folder")
    if path.is_dir():
        if (path / "manifest.json").exists():
            return _onnx_edge_variant(spec, path, provider, threads)
        if (path / GENAI_CONFIG).exists():
            from onnx_edge.evaluate.genai_engine import genai_variant

            return genai_variant(spec, path, provider, threads)
        raise CompareError(f"{spec}: not a model folder (no manifest.json from onnx-edge export, "
                           f"no {GENAI_CONFIG} from onnxruntime-genai)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if path.suffix.lower() == ".gguf" or magic == b"GGUF":
        from onnx_edge.evaluate.llama_cpp_engine import gguf_variant

        return gguf_variant(spec, path, threads)
    raise CompareError(f"{spec}: not a model folder or a .gguf file")


# -- onnx-edge folders ----------------------------------------------------------------------------------


def _onnx_edge_variant(spec: str, folder: Path, provider: str, threads: int | None) -> Variant:
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.tokenizer import load_tokenizer

    m = read_manifest(folder)
    tok_file = m.tokenizer.get("file", "tokenizer.json")
    tok = load_tokenizer(folder, tok_file)

    def opener(context: int):
        from onnx_edge.runtime.model import load

        return OrtEngine(load(folder, provider=provider, threads=threads))

    return Variant(spec=spec, name=folder.resolve().name, kind="onnx-edge", engine=ENGINE_ORT, path=str(folder),
                   precision=precision_label(m), size_mb=sum(e.size for e in m.files.values()) / MB,
                   vocab_size=int(m.architecture["vocab_size"]), context_length=int(m.architecture["context_length"]),
                   tokenizer_sha256=(m.files[tok_file].sha256 if tok_file in m.files
                                     else file_sha256(folder / tok_file)),
                   encoder=tokenizer_encoder(tok.tokenizer), opener=opener,
                   chat_template=load_chat_template(folder), bos_token=tok.bos_token, eos_token=tok.eos_token,
                   recorded=_recorded_quality(m))


def _recorded_quality(m) -> dict | None:
    q = (m.quantization or {}).get("quality")
    if not isinstance(q, dict) or not isinstance(q.get("measured_on"), dict):
        return None
    return {"kl": q.get("kl"), "top1": q.get("top1"), "measured_on": q["measured_on"],
            "cpu_dependent": bool(m.quantization.get("cpu_dependent"))}


class OrtEngine:
    """An EdgeModel (onnx-edge or genai folder) behind the engine interface."""

    def __init__(self, model):
        self.model = model
        self.session = model.session
        # Every prompt runs from an empty cache: a prefix kept from the previous prompt would make the
        # comparison depend on prompt order.
        self.session.reuse_prefix = False

    def forward(self, input_ids, attention_mask, position_ids, past):
        return self.session.forward(input_ids, attention_mask, position_ids, past)

    def empty_cache(self, batch: int):
        return self.session.empty_cache(batch)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        from onnx_edge.runtime.generate import decode_steps
        from onnx_edge.runtime.sampling import SamplingParams

        # decode_steps never stops at eos (stream_generate does), so exactly n tokens come out.
        return [int(step[0]) for step in decode_steps(self.model, [list(ids)], SamplingParams(temperature=0.0), n)]

    def close(self) -> None:
        self.model = self.session = None
