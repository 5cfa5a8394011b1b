"""A downloaded model folder is attacker-controlled, every byte of it. These tests craft hostile folders
(with a manifest whose sizes and sha256 match, as an attacker would write it) and check that `load()`,
`verify_files` / `onnx-edge verify` and `quantize` refuse them with one IntegrityError line before
onnxruntime or onnx opens anything; that no pickle or remote code can run; and the sha256 cache.

The external-data patterns are those of the onnx CVEs: CVE-2022-25882 (`../`), CVE-2024-27318 (nested
`dir/../../x`), CVE-2025-51480 (the same names on the save side: quantize re-saves a model),
CVE-2026-27489 / CVE-2026-34447 (symlinks), CVE-2026-34446 (hardlinks), CVE-2026-34445 (unknown keys),
plus onnxruntime's `*/_ORT_MEM_ADDR_/*` marker (its offset is a raw pointer).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from onnx_edge.errors import EdgeError, IntegrityError

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src", "export", "quantize", "runtime", "models", "scripts")
SECRET = b"root:x:0:0:secret-key-material\n" * 4096  # 128 KiB, large enough for any offset used below

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlink/hardlink/FIFO crafting needs POSIX")


# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_EDGE_CACHE_DIR", str(tmp_path / "hash-cache"))


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def folder(exported_models, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(exported_models("llama"), dst)
    return dst


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
    from onnx_edge.manifest import read_manifest, verify_files
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


# --------------------------------------------------------------------------------------------------
# external data: where a tensor's bytes come from
# --------------------------------------------------------------------------------------------------

DATA = "model.onnx.data"


def _parent(f, s):
    return [("location", "../secret.bin"), ("offset", "0"), ("length", "8192")], ()


def _deep_parent(f, s):
    return [("location", "../" * 12 + "etc/passwd")], ()


def _nested(f, s):
    (f / "sub").mkdir()
    return [("location", "sub/../../secret.bin"), ("offset", "0"), ("length", "8192")], ()


def _nested_inside(f, s):
    (f / "sub").mkdir()
    return [("location", f"sub/../{DATA}"), ("offset", "0"), ("length", "8192")], ()


def _absolute(f, s):
    return [("location", str(s)), ("offset", "0"), ("length", "8192")], ()


def _absolute_inside(f, s):
    return [("location", str(f / DATA)), ("offset", "0"), ("length", "8192")], ()


def _dot(f, s):
    return [("location", f"./{DATA}"), ("offset", "0"), ("length", "8192")], ()


def _backslash(f, s):
    return [("location", "..\\secret.bin"), ("offset", "0"), ("length", "8192")], ()


def _drive(f, s):
    return [("location", "C:\\Windows\\win.ini")], ()


def _drive_relative(f, s):
    return [("location", "C:secret.bin")], ()


def _unc(f, s):
    return [("location", "\\\\server\\share\\w.bin")], ()


def _ads(f, s):
    return [("location", f"{DATA}:stream"), ("offset", "0"), ("length", "8192")], ()


def _nul(f, s):
    return [("location", f"{DATA}\x00.txt"), ("offset", "0"), ("length", "8192")], ()


def _empty(f, s):
    return [("location", ""), ("offset", "0"), ("length", "8192")], ()


def _ort_mem_addr(f, s):
    return [("location", "*/_ORT_MEM_ADDR_/*"), ("offset", "4096"), ("length", "8192")], ()


def _no_location(f, s):
    return [("offset", "0"), ("length", "8192")], ()


def _unknown_key(f, s):  # CVE-2026-34445: onnx set every key as an attribute of ExternalDataInfo
    return [("location", DATA), ("offset", "0"), ("length", "8192"), ("__class__", "x")], ()


def _basepath_key(f, s):
    return [("location", DATA), ("basepath", "/"), ("offset", "0"), ("length", "8192")], ()


def _duplicate_location(f, s):
    return [("location", DATA), ("location", "../secret.bin"), ("offset", "0"), ("length", "8192")], ()


def _symlink(f, s):
    (f / "link.bin").symlink_to(s)
    return [("location", "link.bin"), ("offset", "0"), ("length", "8192")], ("link.bin",)


def _symlink_unlisted(f, s):
    (f / "link.bin").symlink_to(s)
    return [("location", "link.bin"), ("offset", "0"), ("length", "8192")], ()


def _symlink_inside(f, s):
    (f / "link.bin").symlink_to(f / DATA)
    return [("location", "link.bin"), ("offset", "0"), ("length", "8192")], ("link.bin",)


def _symlink_relative(f, s):
    (f / "link.bin").symlink_to(Path("..") / "secret.bin")
    return [("location", "link.bin"), ("offset", "0"), ("length", "8192")], ("link.bin",)


def _symlinked_parent(f, s):
    outside = s.parent / "outside"
    outside.mkdir()
    shutil.copy(s, outside / "w.bin")
    (f / "sub").symlink_to(outside, target_is_directory=True)
    return [("location", "sub/w.bin"), ("offset", "0"), ("length", "8192")], ("sub/w.bin",)


def _hardlink(f, s):
    os.link(s, f / "hard.bin")
    return [("location", "hard.bin"), ("offset", "0"), ("length", "8192")], ("hard.bin",)


def _directory(f, s):
    (f / "weights").mkdir()
    return [("location", "weights"), ("offset", "0"), ("length", "8192")], ()


def _fifo(f, s):
    os.mkfifo(f / "pipe.bin")
    return [("location", "pipe.bin"), ("offset", "0"), ("length", "8192")], ()


def _missing(f, s):
    return [("location", "nothere.bin"), ("offset", "0"), ("length", "8192")], ()


def _unlisted(f, s):
    shutil.copy(f / DATA, f / "extra.bin")  # inside, real, but its sha256 is never checked
    return [("location", "extra.bin"), ("offset", "0"), ("length", "8192")], ()


def _offset_past_end(f, s):
    size = (f / DATA).stat().st_size
    return [("location", DATA), ("offset", str(size + 4096)), ("length", "8192")], ()


def _range_past_end(f, s):
    size = (f / DATA).stat().st_size
    return [("location", DATA), ("offset", str(size - 4096)), ("length", "8192")], ()


def _no_length_past_end(f, s):
    size = (f / DATA).stat().st_size
    return [("location", DATA), ("offset", str(size - 4096))], ()


def _huge_offset(f, s):
    return [("location", DATA), ("offset", str(2**64 + 1)), ("length", "8192")], ()


def _negative_offset(f, s):
    return [("location", DATA), ("offset", "-8192"), ("length", "8192")], ()


def _hex_offset(f, s):
    return [("location", DATA), ("offset", "0x10"), ("length", "8192")], ()


def _unicode_digits(f, s):  # "١٢" is isdigit() in Python and int() accepts it; C++ stoll does not
    return [("location", DATA), ("offset", "\u0661\u0662"), ("length", "8192")], ()


def _short_length(f, s):  # fewer bytes than the tensor's shape needs: onnxruntime would read past them
    return [("location", DATA), ("offset", "0"), ("length", "16")], ()


EXTERNAL_CASES = {
    # name: (setup, needles in the message)
    "cve-2022-25882-parent": (_parent, ["'../secret.bin'", "not a plain relative path"]),
    "cve-2022-25882-etc-passwd": (_deep_parent, ["etc/passwd"]),
    "cve-2024-27318-nested": (_nested, ["sub/../../secret.bin"]),
    "nested-dotdot-inside": (_nested_inside, ["not a plain relative path"]),
    "absolute-outside": (_absolute, ["not a plain relative path"]),
    "absolute-inside": (_absolute_inside, ["not a plain relative path"]),
    "dot-component": (_dot, ["not a plain relative path"]),
    "backslash-parent": (_backslash, ["not a plain relative path"]),
    "windows-drive": (_drive, ["not a plain relative path"]),
    "windows-drive-relative": (_drive_relative, ["not a plain relative path"]),
    "windows-unc": (_unc, ["not a plain relative path"]),
    "alternate-data-stream": (_ads, ["not a plain relative path"]),
    "nul-byte": (_nul, ["not a plain relative path"]),
    "empty-location": (_empty, ["not a file name"]),
    "ort-mem-addr-marker": (_ort_mem_addr, ["_ORT_MEM_ADDR_", "raw pointer"]),
    "no-location": (_no_location, ["names no location"]),
    "cve-2026-34445-unknown-key": (_unknown_key, ["unknown external data keys", "__class__"]),
    "basepath-key": (_basepath_key, ["unknown external data keys", "basepath"]),
    "duplicate-location": (_duplicate_location, ["repeats an external data key"]),
    "cve-2026-27489-symlink": (_symlink, ["link.bin", "symlink"]),
    "symlink-unlisted": (_symlink_unlisted, ["link.bin", "symlink"]),
    "symlink-to-inside": (_symlink_inside, ["link.bin", "symlink"]),
    "symlink-relative": (_symlink_relative, ["link.bin", "symlink"]),
    "cve-2026-34447-symlinked-folder": (_symlinked_parent, ["sub/w.bin", "symlink", "'sub'"]),
    "cve-2026-34446-hardlink": (_hardlink, ["hard.bin", "hardlink"]),
    "location-is-folder": (_directory, ["weights"]),
    "location-is-fifo": (_fifo, ["pipe.bin", "not a regular file"]),
    "location-missing": (_missing, ["nothere.bin", "does not exist"]),
    "location-unlisted": (_unlisted, ["extra.bin", "not listed in the manifest"]),
    "offset-past-end": (_offset_past_end, ["beyond the end"]),
    "range-past-end": (_range_past_end, ["beyond the end"]),
    "no-length-past-end": (_no_length_past_end, ["beyond the end"]),
    "offset-2**64": (_huge_offset, ["beyond the end"]),
    "negative-offset": (_negative_offset, ["not a non-negative integer"]),
    "hex-offset": (_hex_offset, ["not a non-negative integer"]),
    "unicode-digit-offset": (_unicode_digits, ["not a non-negative integer"]),
    "length-short-of-shape": (_short_length, ["differs from the tensor's 8192 bytes"]),
}


@pytest.mark.parametrize("case", list(EXTERNAL_CASES))
def test_external_data_refused(case, folder, secret, no_onnxruntime):
    setup, needles = EXTERNAL_CASES[case]
    entries, add = setup(folder, secret)
    craft(folder, entries, add=add)
    refused(folder, *needles)
    assert secret.read_bytes() == SECRET


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph", "function", "sparse", "training"])
def test_external_data_checked_everywhere_in_the_graph(where, folder, secret, no_onnxruntime):
    """A tensor can hide in a Constant node, an If branch, a function body, a sparse initializer or
    training info: each is found, and the same tensor with a good location passes."""
    from onnx_edge.manifest import read_manifest, verify_files

    good = folder.parent / "good"
    shutil.copytree(folder, good)
    length = "8192" if where != "sparse" else "4"
    place(good, external_tensor(good, [("location", DATA), ("offset", "0"), ("length", length)]), where)
    reseal(good)
    verify_files(good, read_manifest(good))  # no false alarm
    place(folder, external_tensor(folder, [("location", "../secret.bin"), ("offset", "0"), ("length", length)]),
          where)
    reseal(folder)
    refused(folder, "../secret.bin")


def test_external_data_in_a_real_subfolder_is_fine(folder):
    """Plain nested paths are allowed: weights may live in a subfolder."""
    from onnx_edge.manifest import read_manifest, verify_files

    (folder / "weights").mkdir()
    os.replace(folder / DATA, folder / "weights" / DATA)
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = f"weights/{DATA}"
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    data["files"][f"weights/{DATA}"] = data["files"].pop(DATA)
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    reseal(folder)
    verify_files(folder, read_manifest(folder))


# --------------------------------------------------------------------------------------------------
# model.onnx itself
# --------------------------------------------------------------------------------------------------


def test_model_over_protobuf_limit(folder, no_onnxruntime):
    path = folder / "model.onnx"
    with open(path, "r+b") as fh:  # sparse: no 2 GB written
        fh.truncate(2**31)
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["model.onnx"]["size"] = 2**31  # sha256 stays stale: the cap is checked before hashing
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    refused(folder, "2 GiB", "external data")


@pytest.mark.parametrize("content", [b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x08", b"\x3b\x00"],
                         ids=["garbage", "length-past-end", "truncated-varint", "group-wire-type"])
def test_model_not_protobuf(folder, content, no_onnxruntime):
    (folder / "model.onnx").write_bytes(content)
    reseal(folder)
    refused(folder, "not a valid ONNX model")


def test_model_empty(folder, no_onnxruntime):
    (folder / "model.onnx").write_bytes(b"")
    reseal(folder)
    refused(folder, "empty")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_deeply_nested_graphs(folder, no_onnxruntime):
    """If bodies nested 300 deep (written as raw protobuf: the onnx package itself refuses to build it)
    would exhaust a recursive parser: refused as a malformed model, not a RecursionError."""
    graph = b""
    for _ in range(300):  # GraphProto.node(1) -> NodeProto.attribute(5) -> AttributeProto.g(6) -> GraphProto
        graph = _field(1, _field(5, _field(6, graph)))
    with open(folder / "model.onnx", "ab") as fh:
        fh.write(_field(7, graph))  # a second `graph` field merges into the first
    reseal(folder)
    refused(folder, "nested deeper")


# --------------------------------------------------------------------------------------------------
# the folder's own entries
# --------------------------------------------------------------------------------------------------


def _listed_symlink_outside(f, t):
    shutil.copy(f / "tokenizer.json", t / "tok.json")
    (f / "tokenizer.json").unlink()
    (f / "tokenizer.json").symlink_to(t / "tok.json")
    reseal(f)


def _listed_symlink_inside(f, t):
    os.replace(f / "tokenizer.json", f / "tok2.json")
    (f / "tokenizer.json").symlink_to("tok2.json")
    reseal(f, add=("tok2.json",))


def _listed_in_symlinked_folder(f, t):
    (t / "tokdir").mkdir()
    os.replace(f / "tokenizer.json", t / "tokdir" / "tokenizer.json")
    (f / "tok").symlink_to(t / "tokdir", target_is_directory=True)
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["tok/tokenizer.json"] = data["files"].pop("tokenizer.json")
    data["tokenizer"]["file"] = "tok/tokenizer.json"
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _listed_hardlink_inside(f, t):
    os.link(f / "tokenizer.json", f / "tok2.json")
    reseal(f, add=("tok2.json",))


def _listed_hardlink_outside(f, t):
    os.link(f / "config.json", t / "elsewhere.json")


def _listed_fifo(f, t):
    (f / "generation_config.json").unlink()
    os.mkfifo(f / "generation_config.json")


def _listed_folder(f, t):
    (f / "generation_config.json").unlink()
    (f / "generation_config.json").mkdir()


def _manifest_symlink(f, t):
    os.replace(f / "manifest.json", t / "manifest.json")
    (f / "manifest.json").symlink_to(t / "manifest.json")


def _manifest_hardlink(f, t):
    os.link(f / "manifest.json", t / "manifest-copy.json")


def _unlisted_symlink(f, t):
    (f / "notes.txt").symlink_to(t / "secret.bin")  # quantize copies unlisted files into its output


def _unlisted_symlink_folder(f, t):
    (f / "extras").symlink_to(t, target_is_directory=True)


def _unlisted_hardlink(f, t):
    os.link(t / "secret.bin", f / "notes.txt")


def _unlisted_fifo(f, t):
    os.mkfifo(f / "notes.fifo")


def _unlisted_chat_template(f, t):
    reseal(f, drop=("chat_template.jinja",))


def _unlisted_tokenizer_config(f, t):
    reseal(f, drop=("tokenizer_config.json",))


def _model_file_parent(f, t):
    shutil.copy(f / "model.onnx", t / "model.onnx")
    reseal(f, model_file="../model.onnx")


def _model_file_absolute(f, t):
    reseal(f, model_file=str(f / "model.onnx"))


def _model_file_unlisted(f, t):
    reseal(f, drop=("model.onnx",))


def _tokenizer_file_parent(f, t):
    shutil.copy(f / "tokenizer.json", t / "tokenizer.json")
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["tokenizer"]["file"] = "../tokenizer.json"
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _tokenizer_file_absolute(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["tokenizer"]["file"] = "/etc/hostname"
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _tokenizer_file_not_string(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["tokenizer"]["file"] = 7
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _files_absolute(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["/etc/hostname"] = {"sha256": "0" * 64, "size": os.stat("/etc/hostname").st_size}
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _files_nested_dotdot(f, t):
    (f / "sub").mkdir()
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["sub/../../secret.bin"] = {"sha256": sha256(t / "secret.bin"), "size": len(SECRET)}
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _files_backslash(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["..\\secret.bin"] = {"sha256": sha256(t / "secret.bin"), "size": len(SECRET)}
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


FOLDER_CASES = {
    "listed-symlink-to-outside": (_listed_symlink_outside, ["tokenizer.json", "symlink"]),
    "listed-symlink-to-inside": (_listed_symlink_inside, ["tokenizer.json", "symlink"]),
    "listed-in-symlinked-folder": (_listed_in_symlinked_folder, ["tok/tokenizer.json", "symlink"]),
    "listed-hardlink-inside": (_listed_hardlink_inside, ["hardlink"]),
    "listed-hardlink-outside": (_listed_hardlink_outside, ["config.json", "hardlink"]),
    "listed-fifo": (_listed_fifo, ["generation_config.json", "not a regular file"]),
    "listed-folder": (_listed_folder, ["generation_config.json", "not a regular file"]),
    "manifest-symlink": (_manifest_symlink, ["manifest.json", "symlink"]),
    "manifest-hardlink": (_manifest_hardlink, ["manifest.json", "hardlink"]),
    "unlisted-symlink": (_unlisted_symlink, ["notes.txt", "symlink"]),
    "unlisted-symlinked-folder": (_unlisted_symlink_folder, ["extras", "symlink"]),
    "unlisted-hardlink": (_unlisted_hardlink, ["notes.txt", "hardlink"]),
    "unlisted-fifo": (_unlisted_fifo, ["notes.fifo", "not a regular file"]),
    "unlisted-chat-template": (_unlisted_chat_template, ["chat_template.jinja", "not listed"]),
    "unlisted-tokenizer-config": (_unlisted_tokenizer_config, ["tokenizer_config.json", "not listed"]),
    "model-file-parent": (_model_file_parent, ["../model.onnx"]),
    "model-file-absolute": (_model_file_absolute, ["model_file"]),
    "model-file-unlisted": (_model_file_unlisted, ["model.onnx", "not listed"]),
    "tokenizer-file-parent": (_tokenizer_file_parent, ["../tokenizer.json"]),
    "tokenizer-file-absolute": (_tokenizer_file_absolute, ["/etc/hostname"]),
    "tokenizer-file-not-string": (_tokenizer_file_not_string, ["tokenizer.file", "not a file name"]),
    "files-absolute": (_files_absolute, ["/etc/hostname", "outside the model folder"]),
    "files-nested-dotdot": (_files_nested_dotdot, ["sub/../../secret.bin", "outside the model folder"]),
    "files-backslash": (_files_backslash, ["secret.bin", "outside the model folder"]),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_folder_entries_refused(case, folder, secret, no_onnxruntime):
    setup, needles = FOLDER_CASES[case]
    setup(folder, folder.parent)
    refused(folder, *needles)


def _edit(folder: Path, section: str | None, **changes) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    (data if section is None else data[section]).update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


# A manifest can pass Manifest.from_dict and the file checks yet disagree with its graph: onnxruntime would
# then fail mid-generation with its own error. load() compares them first.
CONTRACT_CASES = {
    "io-name-not-in-graph": (("io", {"logits": "scores"}), "'scores' is not an output"),
    "io-input-not-in-graph": (("io", {"input_ids": "tokens"}), "'tokens' is not an input"),
    "io-template-without-i": (("io", {"past_key": "past.key"}), "collide"),
    "io-template-other-field": (("io", {"present_key": "present.{j}.key"}), "may only use {i}"),
    "io-not-string": (("io", {"past_value": {"a": 1}}), "io.past_value"),
    "io-position-ids-dropped": (("io", {"position_ids": None}), "never be fed"),
    "io-kv-mode-unknown": (("io", {"kv_mode": "paged"}), "kv_mode"),
    "io-kv-layout-other": (("io", {"kv_layout": "batch,seq,kv_heads,head_dim"}), "kv_layout"),
    "io-kv-dtype-mismatch": (("io", {"kv_dtype": "float16"}), "element type"),
    "io-kv-dtype-unknown": (("io", {"kv_dtype": "int4"}), "kv_dtype"),
    "arch-kv-heads-mismatch": (("architecture", {"num_kv_heads": 3}), "num_kv_heads"),
    "arch-head-dim-mismatch": (("architecture", {"head_dim": 8}), "head_dim"),
    "arch-vocab-mismatch": (("architecture", {"vocab_size": 1024}), "vocab_size"),
    "arch-more-layers": (("architecture", {"num_layers": 3}), "'past_key_values.2.key' is not an input"),
    "arch-pad-out-of-range": (("architecture", {"pad_token_id": 100000}), "pad_token_id"),
    "arch-bos-not-int": (("architecture", {"bos_token_id": "1"}), "bos_token_id"),
    "arch-context-past-rotary-table": (("architecture", {"context_length": 100000}), "position table"),
}


@pytest.mark.parametrize("case", list(CONTRACT_CASES))
def test_manifest_contradicting_graph(case, folder, no_onnxruntime):
    from onnx_edge.errors import ManifestError
    from onnx_edge.runtime import load

    (section, changes), needle = CONTRACT_CASES[case]
    _edit(folder, section, **changes)
    with pytest.raises(EdgeError) as info:
        load(folder, provider="cpu")
    assert info.type is ManifestError, f"{info.type.__name__}: {info.value}"
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_tokenizer_larger_than_model_vocabulary(folder, no_onnxruntime):
    from onnx_edge.errors import ManifestError
    from onnx_edge.runtime import load

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"].append({"id": 4000, "content": "<|extra|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    reseal(folder)
    with pytest.raises(ManifestError, match=r"tokenizer has \d+ ids but the model only 512"):
        load(folder, provider="cpu")


def test_cli_verify_refuses_with_one_line(folder, secret):
    from click.testing import CliRunner

    from onnx_edge.cli import cli

    craft(folder, [("location", "../secret.bin"), ("offset", "0"), ("length", "8192")], "constant")
    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and "../secret.bin" in result.stderr
    assert "Traceback" not in result.output


def test_quantize_refuses_before_onnx_reads_or_writes(folder, secret, tmp_path):
    """CVE-2025-51480 is the write side: a tool that loads and re-saves a model writes to its locations.
    quantize re-saves models, so a crafted one must be refused before onnx.load touches it."""
    import onnx

    from onnx_edge.quantize import quantize

    craft(folder, [("location", "../secret.bin"), ("offset", "0"), ("length", "8192")], "constant")
    before = os.stat(secret)
    called = []
    real_load = onnx.load

    def spy(*args, **kwargs):
        called.append(args)
        return real_load(*args, **kwargs)

    onnx.load, onnx.load_model = spy, spy
    try:
        with pytest.raises(IntegrityError, match="secret.bin"):
            quantize(folder, tmp_path / "q", "int8")
    finally:
        onnx.load, onnx.load_model = real_load, real_load
    assert called == []
    assert not (tmp_path / "q").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".q.")] == []
    after = os.stat(secret)
    assert secret.read_bytes() == SECRET and after.st_mtime_ns == before.st_mtime_ns


def test_symlinked_model_folder_itself_is_fine(folder, tmp_path):
    """The path the user gives may be a link to the folder (their own choice); links inside it are not."""
    from onnx_edge.runtime import load

    link = tmp_path / "link-to-model"
    link.symlink_to(folder, target_is_directory=True)
    model = load(link, provider="cpu")
    assert model.generate("hello", chat=False, max_new_tokens=2).generated_tokens <= 2


# --------------------------------------------------------------------------------------------------
# no code execution: pickle, remote code
# --------------------------------------------------------------------------------------------------


def _sources():
    for folder in SOURCE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("pattern", [r"torch\.load\s*\(", r"\bpickle\.", r"import\s+pickle", r"from\s+pickle",
                                     r"trust_remote_code\s*=\s*True", r"allow_pickle\s*=\s*True",
                                     r"weights_only\s*=\s*False", r"\bdill\b", r"\bcloudpickle\b", r"joblib\.load",
                                     r"import\s+marshal", r"import\s+shelve"])
def test_no_unsafe_deserialization_in_source(pattern):
    hits = []
    for path in _sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


def test_every_from_pretrained_refuses_remote_code():
    """Each Hugging Face loader call passes trust_remote_code=False explicitly (a literal, not a variable)."""
    calls = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "from_pretrained" and "scripts" not in path.parts:
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value is False
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no from_pretrained call found: the test looks in the wrong place"
    assert [c for c, ok in calls if not ok] == []


def test_auto_map_configs_are_refused_by_tests():
    """trust_remote_code stays off: an auto_map config (remote code) is refused by export, and tests say so."""
    text = (ROOT / "tests" / "test_errors.py").read_text(encoding="utf-8")
    assert '("auto-map", _auto_map, UnsupportedModelError)' in text
    assert '"auto-map": _src_auto_map' in (ROOT / "tests" / "test_cli.py").read_text(encoding="utf-8")


def test_runtime_never_unpickles_numpy():
    """The runtime reads numbers only through onnxruntime and tokenizers; no np.load anywhere in it."""
    for path in (ROOT / "runtime").glob("*.py"):
        assert "np.load(" not in path.read_text(encoding="utf-8"), path.name


# --------------------------------------------------------------------------------------------------
# the sha256 cache
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def count_hashes(monkeypatch):
    from onnx_edge.runtime import hash_cache, integrity

    counted = []
    real = integrity.sha256_fd

    def counting(fd, *args):
        counted.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        return real(fd, *args)

    monkeypatch.setattr(integrity, "sha256_fd", counting)
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)  # files of a fresh copy may be cached at once
    return counted


def _cache_file(tmp_path) -> Path:
    return tmp_path / "hash-cache" / "hashes.json"


def test_second_load_hashes_nothing(folder, tmp_path, count_hashes):
    from onnx_edge.runtime import load

    load(folder, provider="cpu")
    n_files = len(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"])
    assert len(count_hashes) == n_files
    assert _cache_file(tmp_path).is_file()
    count_hashes.clear()
    load(folder, provider="cpu")
    assert count_hashes == []
    load(folder, provider="cpu", hash_cache=False)
    assert len(count_hashes) == n_files


def test_verify_always_rehashes(folder, tmp_path, count_hashes):
    from onnx_edge.manifest import read_manifest, verify_files
    from onnx_edge.runtime import load

    load(folder, provider="cpu")
    count_hashes.clear()
    verify_files(folder, read_manifest(folder))
    assert len(count_hashes) == len(read_manifest(folder).files)


def _tamper_keeping_size_and_mtime(path: Path) -> None:
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_tamper_with_same_size_and_mtime(folder, count_hashes):
    """Size, mtime and inode preserved: ctime still moves, so the cache misses and load() catches it;
    `onnx-edge verify` catches it regardless."""
    from click.testing import CliRunner

    from onnx_edge.cli import cli
    from onnx_edge.runtime import load

    load(folder, provider="cpu")
    _tamper_keeping_size_and_mtime(folder / DATA)
    with pytest.raises(IntegrityError, match="sha256"):
        load(folder, provider="cpu")
    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 1 and "model.onnx.data: sha256 differs" in result.stderr


def test_forged_stat_is_the_documented_gap(folder, tmp_path, count_hashes):
    """An attacker who can also forge ctime (a changed system clock, raw disk writes) or write the user's
    cache file gets past load()'s cache: simulated by editing the cache entry. verify still catches it."""
    from onnx_edge.manifest import read_manifest, verify_files
    from onnx_edge.runtime import load

    load(folder, provider="cpu")
    _tamper_keeping_size_and_mtime(folder / DATA)
    cache = json.loads(_cache_file(tmp_path).read_text(encoding="utf-8"))
    entry = cache["files"][os.path.realpath(folder / DATA)]
    entry["stat"][2] = os.stat(folder / DATA).st_ctime_ns  # what a forged ctime would look like
    _cache_file(tmp_path).write_text(json.dumps(cache), encoding="utf-8")
    load(folder, provider="cpu")  # trusted the cache: the documented trade-off
    with pytest.raises(IntegrityError, match="sha256"):
        verify_files(folder, read_manifest(folder))
    with pytest.raises(IntegrityError, match="sha256"):  # verify refreshed the entry: load sees it now
        load(folder, provider="cpu")


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe", b"[]", b'{"version": 1, "files": []}',
                                     b'{"version": 99, "files": {}}',
                                     b'{"version": 1, "files": {"/x": {"sha256": 5, "stat": "a"}}}',
                                     b'{"version": 1, "files": {"/x": {"sha256": "' + b"0" * 64 + b'", '
                                     b'"stat": [1, 2, 3, 4, true]}}}'],
                         ids=["empty", "malformed", "not-utf8", "list", "files-list", "other-version",
                              "bad-entry", "bool-in-stat"])
def test_corrupt_cache_is_ignored_and_rebuilt(content, folder, tmp_path, count_hashes):
    from onnx_edge.runtime import load

    _cache_file(tmp_path).parent.mkdir(parents=True)
    _cache_file(tmp_path).write_bytes(content)
    load(folder, provider="cpu")
    data = json.loads(_cache_file(tmp_path).read_text(encoding="utf-8"))
    assert data["version"] == 1 and os.path.realpath(folder / DATA) in data["files"]
    count_hashes.clear()
    load(folder, provider="cpu")
    assert count_hashes == []


def test_unwritable_cache_never_fails_a_load(folder, tmp_path, monkeypatch, count_hashes):
    from onnx_edge.runtime import load

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("ONNX_EDGE_CACHE_DIR", str(blocker / "cache"))
    load(folder, provider="cpu")


def test_cache_written_atomically_and_privately(folder, tmp_path, count_hashes):
    from onnx_edge.runtime import load

    load(folder, provider="cpu")
    cache_dir = _cache_file(tmp_path).parent
    assert sorted(p.name for p in cache_dir.iterdir()) == ["hashes.json"]  # no temp file left behind
    assert _cache_file(tmp_path).stat().st_mode & 0o077 == 0


def test_recently_modified_files_are_not_cached(folder, tmp_path):
    """A file changed again within the timestamp granularity would keep its (size, mtime, ctime): files
    touched in the last RACY_SECONDS are hashed but not remembered."""
    from onnx_edge.runtime import integrity, load

    (folder / DATA).write_bytes((folder / DATA).read_bytes())  # fresh ctime
    load(folder, provider="cpu")
    cached = json.loads(_cache_file(tmp_path).read_text(encoding="utf-8"))["files"] \
        if _cache_file(tmp_path).exists() else {}
    assert os.path.realpath(folder / DATA) not in cached
    assert integrity.RACY_SECONDS > 0


def test_cache_location(monkeypatch, tmp_path):
    from onnx_edge.runtime.integrity import default_cache_dir

    monkeypatch.setenv("ONNX_EDGE_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("ONNX_EDGE_CACHE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "onnx-edge-kit"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
        assert default_cache_dir() == Path.home() / ".cache" / "onnx-edge-kit"
    monkeypatch.setenv("ONNX_EDGE_HASH_CACHE", "0")
    assert default_cache_dir() is None
