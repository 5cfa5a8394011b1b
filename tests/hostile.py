"""Shared by the hostile-folder tests (test_security.py, test_folder_safety.py): fixtures that copy a tiny
exported model and plant a secret file, and helpers that craft external-data entries and reseal the
manifest with matching sizes and sha256, as an attacker would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from onnx_edge.errors import EdgeError, IntegrityError

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src", "export", "quantize", "runtime", "evaluate", "models", "scripts")
SECRET = b"root:x:0:0:secret-key-material\n" * 4096  # 128 KiB, large enough for any offset used below
DATA = "model.onnx.data"


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_EDGE_CACHE_DIR", str(tmp_path / "hash-cache"))


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def folder(model_copy) -> Path:
    """A private copy of the exported tiny llama (conftest's model_copy), ready to be made hostile."""
    return model_copy


@pytest.fixture
def no_onnxruntime(monkeypatch):
    """Fail the test if an onnxruntime session is ever created (the refusal must come first)."""
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime.InferenceSession was reached")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reseal(folder: Path, add: tuple[str, ...] = (), drop: tuple[str, ...] = (), **changes) -> None:
    """Rewrite the manifest the way an attacker would: sizes and sha256 of what the paths now lead to
    (links followed), extra entries in `add`, entries in `drop` removed, top-level fields in `changes`."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    files = data["files"]
    for rel in drop:
        files.pop(rel, None)
    for rel in [*files, *add]:
        target = folder / rel
        if target.is_file():
            files[rel] = {"sha256": sha256(target), "size": target.stat().st_size}
    path.write_text(json.dumps(data), encoding="utf-8")


def external_tensor(folder: Path, entries: list[tuple[str, str]], name: str = "evil"):
    """A copy of the model's first external initializer with `entries` as its external_data."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    template = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    tensor = onnx.TensorProto()
    tensor.CopyFrom(template)
    tensor.name = name
    del tensor.external_data[:]
    for key, value in entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL
    return tensor


def place(folder: Path, tensor, where: str = "initializer") -> None:
    """Put `tensor` into model.onnx at `where` and save the graph only (no external data written)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    if where == "initializer":  # replace the first external initializer in place
        first = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
        name = first.name
        first.CopyFrom(tensor)
        first.name = name
    elif where == "constant":
        model.graph.node.append(helper.make_node("Constant", [], ["evil_constant"], value=tensor))
    elif where == "subgraph":
        body = helper.make_graph([helper.make_node("Identity", [tensor.name], ["evil_out"])], "then", [],
                                 [helper.make_tensor_value_info("evil_out", onnx.TensorProto.FLOAT, None)],
                                 initializer=[tensor])
        model.graph.node.append(helper.make_node("If", ["evil_cond"], ["evil_if"], then_branch=body,
                                                 else_branch=body))
    elif where == "function":
        function = helper.make_function("evil.domain", "Evil", [], ["y"],
                                        [helper.make_node("Constant", [], ["y"], value=tensor)],
                                        [helper.make_opsetid("", 17)])
        model.functions.append(function)
    elif where == "sparse":
        indices = helper.make_tensor("evil_indices", onnx.TensorProto.INT64, [1], [0])
        sparse = helper.make_sparse_tensor(tensor, indices, [int(tensor.dims[0]) * int(tensor.dims[1])])
        tensor.dims[:] = [1]  # values of a sparse tensor are 1-D
        sparse.values.CopyFrom(tensor)
        model.graph.sparse_initializer.append(sparse)
    elif where == "training":
        info = model.training_info.add()
        info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[tensor]))
    else:
        raise ValueError(where)
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def craft(folder: Path, entries: list[tuple[str, str]], where: str = "initializer", add=()) -> None:
    place(folder, external_tensor(folder, entries), where)
    reseal(folder, add=add)


def refused(folder: Path, *needles: str) -> str:
    """load() and verify_files both raise exactly IntegrityError (one line) containing `needles`."""
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files
    from onnx_edge.runtime import load

    messages = []
    for check in (lambda: load(folder, provider="cpu"),
                  lambda: load(folder, provider="cpu", verify=False),
                  lambda: verify_files(folder, read_manifest(folder))):
        with pytest.raises(EdgeError) as info:
            check()
        assert info.type is IntegrityError, f"{info.type.__name__}: {info.value}"
        message = str(info.value)
        assert "\n" not in message
        for needle in needles:
            assert needle in message, f"{needle!r} not in {message!r}"
        messages.append(message)
    return messages[0]
