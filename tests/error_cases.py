"""Fixtures and helpers of the error tests (test_errors.py, test_errors_runtime.py): one tiny llama exported
once per session (`exported`; tests that tamper with it work on a copy), and exact-type assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnx_edge.errors import EdgeError


@pytest.fixture(scope="session")
def edge_model(exported):
    from onnx_edge.runtime import load

    return load(exported, provider="cpu")


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def previous_output(out: Path, text: str = "precious") -> None:
    """`out` as an earlier onnx-edge run left it (a manifest listing its one file): what --force may replace."""
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text(text, encoding="utf-8")
    manifest = {"format": "onnx-edge-kit", "schema_version": "1.0",
                "files": {"keep.txt": {"sha256": "0" * 64, "size": len(text)}}}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


PREVIOUS = ["keep.txt", "manifest.json"]


def leftovers(out: Path) -> list[str]:
    """Hidden siblings the exporter creates next to `out` (.NAME.partial-PID, .NAME.old-PID)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def raises_exactly(exc_type, fn, *args, **kwargs):
    """Like pytest.raises, but the exception must be of exactly `exc_type` (IntegrityError is a
    ManifestError subclass, so pytest.raises(ManifestError) alone could not tell them apart)."""
    with pytest.raises(EdgeError) as info:
        fn(*args, **kwargs)
    assert info.type is exc_type, f"{info.type.__name__}: {info.value}"
    assert "\n" not in str(info.value)  # the CLI prints it as one line
    return info.value


def write_gguf(path: Path, arch: str = "llama", truncate: bool = False) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 4096])
    return path
