"""A downloaded model folder is attacker-controlled, every byte of it. These tests craft hostile folders
(with a manifest whose sizes and sha256 match, as an attacker would write it) and check that `load()`,
`verify_files` / `onnx-edge verify` and `quantize` refuse them with one IntegrityError line before
onnxruntime or onnx opens anything.
The folder's own entries, manifest/graph contradictions and code execution: test_folder_safety.py; the
sha256 cache: test_hash_cache.py.

The external-data patterns are those of the onnx CVEs: CVE-2022-25882 (`../`), CVE-2024-27318 (nested
`dir/../../x`), CVE-2025-51480 (the same names on the save side: quantize re-saves a model),
CVE-2026-27489 / CVE-2026-34447 (symlinks), CVE-2026-34446 (hardlinks), CVE-2026-34445 (unknown keys),
plus onnxruntime's `*/_ORT_MEM_ADDR_/*` marker (its offset is a raw pointer).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest


from tests.hostile import _private_hash_cache, folder, no_onnxruntime, secret  # noqa: F401 - fixtures, by name
from tests.hostile import DATA, SECRET, craft, external_tensor, place, refused, reseal

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlink/hardlink/FIFO crafting needs POSIX")


# --------------------------------------------------------------------------------------------------
# external data: where a tensor's bytes come from
# --------------------------------------------------------------------------------------------------

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
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files

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
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files

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


