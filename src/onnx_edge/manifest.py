"""The manifest: one versioned JSON file per model folder, the only contract between export,
quantize and runtime. See DESIGN.md for the schema."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx_edge.errors import IntegrityError, ManifestError
from onnx_edge.targets import TARGETS
from onnx_edge.textfile import read_json

MANIFEST_NAME = "manifest.json"
PARTIAL_MARKER = ".onnx-edge-partial"  # in a folder still being built (onnx_edge.staging)
SCHEMA_VERSION = "1.0"
FORMAT = "onnx-edge-kit"


@dataclass
class FileEntry:
    sha256: str
    size: int


@dataclass
class IOSpec:
    """Graph input/output names. `{i}` in the KV templates is the layer index."""

    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    position_ids: str | None = "position_ids"
    past_key: str = "past_key_values.{i}.key"
    past_value: str = "past_key_values.{i}.value"
    logits: str = "logits"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"
    kv_layout: str = "batch,kv_heads,seq,head_dim"
    kv_dtype: str = "float32"
    logits_dtype: str = "float32"
    # Added later within schema 1.0 (the defaults describe every older folder):
    # "concat": present = Concat(past, new), past grows by the new tokens every step.
    # "shared_buffer": the graph also accepts past = present = one preallocated (batch, kv_heads, capacity,
    #   head_dim) buffer per tensor, bound to the same memory, and appends the new keys/values in place (each
    #   row's real tokens left-aligned: rows [0, sum(mask_row))). Feeding it "concat"-style still works.
    kv_mode: str = "concat"
    # Name of the optional int64 scalar input that limits the logits to the last N positions (0 = all,
    # the default when not fed); None when the graph has no such input.
    logits_to_keep: str | None = None


@dataclass
class Manifest:
    architecture: dict[str, Any]
    io: IOSpec = field(default_factory=IOSpec)
    model_file: str = "model.onnx"
    # Which emitter wrote model.onnx: "reference" (plain ONNX ops) or "fused" (onnxruntime contrib ops:
    # GroupQueryAttention, RotaryEmbedding, Skip*LayerNormalization, FastGelu). Older folders: "reference".
    graph: str = "reference"
    precision: str = "fp32"
    provider: str = "cpu"
    opset: int = 17
    quantization: dict[str, Any] | None = None
    tokenizer: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        if data.get("format") != FORMAT:
            raise ManifestError(f"not an {FORMAT} manifest (format={data.get('format')!r})")
        version = str(data.get("schema_version", ""))
        major = version.split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise ManifestError(
                f"manifest schema {version!r} is not supported by this onnx-edge-kit "
                f"(reads {SCHEMA_VERSION.split('.')[0]}.x); re-export the model or upgrade onnx-edge-kit"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        _expect(data, "io", dict, required=False)
        _expect(data, "files", dict)
        _expect(data, "tokenizer", dict, required=False)
        _expect(data, "provenance", dict, required=False)
        _expect(data, "architecture", dict)
        for key in ("quantization", "validation"):
            if data.get(key) is not None:
                _expect(data, key, dict)
        io_fields = {f.name for f in dataclasses.fields(IOSpec)}
        try:
            kwargs["io"] = IOSpec(**{k: v for k, v in data.get("io", {}).items() if k in io_fields})
            files = {}
            for name, entry in data["files"].items():
                if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                        and isinstance(entry.get("size"), int)):
                    raise ManifestError(f"malformed manifest: files[{name!r}] needs a sha256 string and an integer size")
                files[name] = FileEntry(sha256=entry["sha256"], size=entry["size"])
            kwargs["files"] = files
            manifest = cls(**kwargs)
        except TypeError as exc:
            raise ManifestError(f"malformed manifest: {exc}") from None
        _check_architecture(manifest.architecture)
        name = manifest.model_file
        # A name, not a path: onnxruntime resolves external data against the graph's own folder, so a graph
        # in a subfolder would read files the integrity checks (made against the folder root) never saw.
        if not isinstance(name, str) or not name:
            raise ManifestError("malformed manifest: 'model_file' must be a file name")
        if name in (".", "..") or "/" in name or "\\" in name:
            raise IntegrityError(f"model_file {name[:200]!r} must be a file name in the folder itself")
        if not isinstance(manifest.provider, str) or manifest.provider not in TARGETS:
            raise ManifestError(f"malformed manifest: provider {manifest.provider!r} is not one of {', '.join(TARGETS)}")
        return manifest


def _expect(data: dict, key: str, kind: type, required: bool = True) -> None:
    if key not in data:
        if required:
            raise ManifestError(f"malformed manifest: '{key}' is missing")
        return
    if not isinstance(data[key], kind):
        raise ManifestError(f"malformed manifest: '{key}' must be a JSON {'object' if kind is dict else kind.__name__}")


def _check_architecture(arch: dict) -> None:
    """Every required ModelShape field present with a plausible type, so no reader fails later with a KeyError.
    A field with a default (added later, e.g. longrope_original_max) may be absent from an older folder."""
    from onnx_edge.models.spec import ModelShape

    ints = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "hidden_size", "intermediate_size",
            "vocab_size", "context_length")
    for f in dataclasses.fields(ModelShape):
        if f.name not in arch and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"malformed manifest: architecture lacks '{f.name}'")
    longrope = arch.get("longrope_original_max")
    if longrope is not None and (isinstance(longrope, bool) or not isinstance(longrope, int) or longrope <= 0):
        raise ManifestError("malformed manifest: architecture.longrope_original_max must be a positive integer")
    for name in ints:
        if isinstance(arch[name], bool) or not isinstance(arch[name], int) or arch[name] <= 0:
            raise ManifestError(f"malformed manifest: architecture.{name} must be a positive integer")
    if not isinstance(arch["eos_token_ids"], list) or not all(isinstance(t, int) for t in arch["eos_token_ids"]):
        raise ManifestError("malformed manifest: architecture.eos_token_ids must be a list of integers")


FLOAT_GGUF_TYPES = ("F32", "F16", "BF16")


def weights_note(manifest: Manifest) -> str | None:
    """Where the weights come from, when that changes how to read quality numbers: an export of a quantized
    GGUF is that file dequantized, so it sits on the GGUF's grid (the default model is such a file)."""
    file_type = manifest.provenance.get("gguf_file_type") if isinstance(manifest.provenance, dict) else None
    if not isinstance(file_type, str) or file_type in FLOAT_GGUF_TYPES:
        return None
    return (f"from a {file_type} GGUF: the fp32 weights are its blocks dequantized, so they sit on its grid; "
            f"quantizers score better on them than on real weights, and importing the GGUF's own blocks "
            f"matches fp32 exactly by construction")


def sha256_stream(fh, chunk: int = 1 << 20) -> str:
    """sha256 of an open binary file, read to its end in chunks (the one hashing loop: files, descriptors)."""
    digest = hashlib.sha256()
    while block := fh.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def record_files(folder: Path) -> dict[str, FileEntry]:
    """Size and sha256 of every regular file in the folder (the manifest and the staging marker excluded)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in (MANIFEST_NAME, PARTIAL_MARKER):
            rel = path.relative_to(folder).as_posix()
            entries[rel] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    return entries


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Record every file's hash, then write the manifest (atomically, it is the last file written)."""
    manifest.files = record_files(folder)
    target = folder / MANIFEST_NAME
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def copy_listed_files(src: Path, dst: Path, manifest: Manifest, skip: tuple[str, ...] = ()) -> None:
    """Copy the files `manifest` lists (tokenizer, template, configs) from src to dst, except `skip`: never
    an unlisted file the user put into the folder."""
    for name in manifest.files:
        if name in skip or name == MANIFEST_NAME:
            continue
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, target)


def read_manifest(folder: str | os.PathLike) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.exists():
        raise ManifestError(f"{folder}: no such model folder")
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder (expected an exported model folder)")
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME}; is this a folder written by 'onnx-edge export'?")
    if (folder / PARTIAL_MARKER).exists():
        raise ManifestError(f"{folder}: an unfinished output (the run writing it was stopped); delete it and run again")
    return Manifest.from_dict(read_json(path, ManifestError))
