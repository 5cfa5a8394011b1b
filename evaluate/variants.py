"""compare's variants: what a model path is (onnx-edge folder, onnxruntime-genai folder, .gguf file), found by
`describe` without loading weights, and the onnx-edge folder's own kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnx_edge.evaluate.bench import BENCH_WORKER, MB
from onnx_edge.evaluate.engine import CompareError, OrtVariant, Variant
from onnx_edge.evaluate.genai_engine import GENAI_CONFIG, genai_variant
from onnx_edge.evaluate.llama_cpp_engine import gguf_variant
from onnx_edge.manifest import sha256_file, weights_note


@dataclass(frozen=True, kw_only=True, eq=False)
class OnnxEdgeVariant(OrtVariant):
    """A folder `onnx-edge export` or `quantize` wrote, loaded with runtime.load."""

    kind = "onnx-edge"
    engine = "onnxruntime"
    speed_worker = BENCH_WORKER  # bench's own worker, as `onnx-edge bench` measures it

    def load(self):
        from onnx_edge.runtime.model import load

        return load(self.path, provider=self.provider, threads=self.threads)


def precision_label(manifest) -> str:
    """The precision/scheme of an onnx-edge folder, from its manifest."""
    from onnx_edge.quant_record import QuantRecord

    if not manifest.quantization:
        return manifest.precision
    return QuantRecord.from_dict(manifest.quantization).label(manifest.precision)


def describe(spec: str, provider: str = "auto", threads: int | None = None) -> Variant:
    """A Variant for a path: onnx-edge folder, onnxruntime-genai folder or .gguf file."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise CompareError(f"{spec}: no such file or folder")
    if path.is_dir():
        if (path / "manifest.json").exists():
            return _onnx_edge_variant(spec, path, provider, threads)
        if (path / GENAI_CONFIG).exists():
            return genai_variant(spec, path, provider, threads)
        raise CompareError(f"{spec}: not a model folder (no manifest.json from onnx-edge export, "
                           f"no {GENAI_CONFIG} from onnxruntime-genai)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if path.suffix.lower() == ".gguf" or magic == b"GGUF":
        return gguf_variant(spec, path, threads)
    raise CompareError(f"{spec}: not a model folder or a .gguf file")


def _onnx_edge_variant(spec: str, folder: Path, provider: str, threads: int | None) -> OnnxEdgeVariant:
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.tokenizer import load_tokenizer

    m = read_manifest(folder)
    tok_file = m.tokenizer.get("file", "tokenizer.json")
    tok = load_tokenizer(folder, tok_file)
    return OnnxEdgeVariant(spec=spec, name=folder.resolve().name, path=str(folder), precision=precision_label(m),
                           size_mb=sum(e.size for e in m.files.values()) / MB,
                           vocab_size=int(m.architecture["vocab_size"]),
                           context_length=int(m.architecture["context_length"]),
                           tokenizer_sha256=(m.files[tok_file].sha256 if tok_file in m.files
                                             else sha256_file(folder / tok_file)),
                           tokenizer=tok.tokenizer, chat_template=load_chat_template(folder), bos_token=tok.bos_token,
                           eos_token=tok.eos_token, recorded=_recorded_quality(m), provider=provider, threads=threads,
                           model=str(m.provenance.get("source") or "") or None, weights_note=weights_note(m))


def _recorded_quality(m) -> dict | None:
    q = (m.quantization or {}).get("quality")
    if not isinstance(q, dict) or not isinstance(q.get("measured_on"), dict):
        return None
    return {"kl": q.get("kl"), "top1": q.get("top1"), "measured_on": q["measured_on"],
            "cpu_dependent": bool(m.quantization.get("cpu_dependent"))}
