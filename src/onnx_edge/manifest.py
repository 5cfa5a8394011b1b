"""The manifest: one versioned JSON file per model folder, the only contract between export,
quantize and runtime. See DESIGN.md for the schema."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx_edge.errors import IntegrityError, ManifestError

MANIFEST_NAME = "manifest.json"
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


@dataclass
class Manifest:
    architecture: dict[str, Any]
    io: IOSpec = field(default_factory=IOSpec)
    model_file: str = "model.onnx"
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
        try:
            kwargs["io"] = IOSpec(**{k: v for k, v in data.get("io", {}).items()
                                     if k in {f.name for f in dataclasses.fields(IOSpec)}})
            kwargs["files"] = {name: FileEntry(**entry) for name, entry in data.get("files", {}).items()}
            manifest = cls(**kwargs)
        except TypeError as exc:
            raise ManifestError(f"malformed manifest: {exc}") from None
        if not isinstance(manifest.architecture, dict) or "num_layers" not in manifest.architecture:
            raise ManifestError("malformed manifest: 'architecture' lacks num_layers")
        return manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_files(folder: Path) -> dict[str, FileEntry]:
    """Size and sha256 of every regular file in the folder (the manifest itself excluded)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
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


def read_manifest(folder: str | os.PathLike) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.exists():
        raise ManifestError(f"{folder}: no such model folder")
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder (expected an exported model folder)")
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME}; is this a folder written by 'onnx-edge export'?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: malformed JSON ({exc})") from None
    return Manifest.from_dict(data)


def verify_files(folder: str | os.PathLike, manifest: Manifest, check_hashes: bool = True) -> None:
    """Raise IntegrityError when a recorded file is missing, resized or (with hashes) altered."""
    folder = Path(folder).resolve()
    for rel, entry in manifest.files.items():
        path = (folder / rel).resolve()
        if folder not in path.parents:
            raise IntegrityError(f"manifest lists a file outside the model folder: {rel}")
        if not path.is_file():
            raise IntegrityError(f"{rel}: listed in the manifest but missing from {folder}")
        size = path.stat().st_size
        if size != entry.size:
            raise IntegrityError(f"{rel}: size {size} differs from the manifest's {entry.size} (truncated or replaced)")
        if check_hashes and sha256_file(path) != entry.sha256:
            raise IntegrityError(f"{rel}: sha256 differs from the manifest (file was modified)")
