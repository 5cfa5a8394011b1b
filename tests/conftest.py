"""Shared pytest fixtures: tiny offline tokenizer and tiny random models (see tests/fixtures.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures import TINY_CONFIGS, build_tiny_model, build_tokenizer


class TinyModels:
    """Lazily builds each tiny model once per session. `tiny_models("llama")` or `tiny_models["llama"]`
    returns the model folder (seed 0). Treat the folders as read-only: they are shared by every test."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._factory = tmp_path_factory
        self._dirs: dict[str, Path] = {}

    def __call__(self, model_type: str) -> Path:
        if model_type not in TINY_CONFIGS:
            raise KeyError(f"no tiny model {model_type!r}; have {sorted(TINY_CONFIGS)}")
        if model_type not in self._dirs:
            folder = self._factory.mktemp(f"tiny-{model_type}")
            self._dirs[model_type] = build_tiny_model(model_type, folder, seed=0)
        return self._dirs[model_type]

    __getitem__ = __call__

    def __iter__(self):
        return iter(sorted(TINY_CONFIGS))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tokenizer(folder)
    return folder


@pytest.fixture(scope="session", params=sorted(TINY_CONFIGS))
def tiny_model_dir(request, tiny_models) -> Path:
    """Parametrized over every architecture: the saved tiny model folder."""
    return tiny_models(request.param)


class ExportedModels:
    """Each tiny model exported (fp32, validated) once per session. Read-only: copy before tampering."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels):
        self._factory, self._tiny = tmp_path_factory, tiny
        self._dirs: dict[str, Path] = {}

    def __call__(self, model_type: str) -> Path:
        if model_type not in self._dirs:
            from onnx_edge.export import export

            out = self._factory.mktemp(f"onnx-{model_type}") / "model"
            export(str(self._tiny(model_type)), out)
            self._dirs[model_type] = out
        return self._dirs[model_type]

    __getitem__ = __call__


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory, tiny_models) -> ExportedModels:
    return ExportedModels(tmp_path_factory, tiny_models)


@pytest.fixture(scope="session")
def exported(exported_models) -> Path:
    """The tiny llama, exported once per session. Read-only: copy before tampering (model_copy)."""
    return exported_models("llama")


@pytest.fixture
def model_copy(exported, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(exported, dst)
    return dst


@pytest.fixture
def source_copy(tiny_models, tmp_path) -> Path:
    """A private copy of the tiny llama source folder (HF layout), safe to edit."""
    dst = tmp_path / "src"
    shutil.copytree(tiny_models("llama"), dst)
    return dst


@pytest.fixture(autouse=True, scope="session")
def _private_hash_cache(tmp_path_factory):
    """Tests never write the user's ~/.cache: the sha256 cache goes to a session temp folder."""
    import os

    old = os.environ.get("ONNX_EDGE_CACHE_DIR")
    os.environ["ONNX_EDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("hash-cache"))
    yield
    if old is None:
        os.environ.pop("ONNX_EDGE_CACHE_DIR", None)
    else:
        os.environ["ONNX_EDGE_CACHE_DIR"] = old
