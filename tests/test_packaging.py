"""The setuptools package list matches the folders (nested folders would silently drop from the wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_dir_covers_every_folder():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    assert set(cfg["packages"]) == set(mapping)
    for package, folder in mapping.items():
        assert (ROOT / folder / "__init__.py").is_file(), f"{folder} lacks __init__.py"
        nested = [p for p in (ROOT / folder).iterdir() if p.is_dir() and any(p.glob("*.py"))]
        assert nested == [], f"{folder} has nested python folders {nested}; list them in pyproject.toml"


def test_extras_pin_torch_and_mark_directml_windows_only():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    torch = [d for d in deps["export"] if d.startswith("torch")]
    assert torch and "2.13.0" in torch[0]
    assert all("sys_platform == 'win32'" in d for d in deps["directml"])
    assert any(d.startswith("onnxruntime") for d in deps["cpu"])
    assert any(d.startswith("onnxruntime-gpu") for d in deps["cuda"])


def test_imports_resolve_to_the_mapped_folders():
    import onnx_edge.evaluate
    import onnx_edge.export
    import onnx_edge.models
    import onnx_edge.quantize
    import onnx_edge.runtime

    for module, folder in ((onnx_edge.export, "export"), (onnx_edge.runtime, "runtime"),
                           (onnx_edge.models, "models"), (onnx_edge.quantize, "quantize"),
                           (onnx_edge.evaluate, "evaluate")):
        assert Path(module.__file__).resolve().parent == (ROOT / folder).resolve()
