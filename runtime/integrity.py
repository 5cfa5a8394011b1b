"""Checks that make a downloaded model folder safe to hand to onnxruntime, and the sha256 cache.

A model folder is untrusted input: every byte of every file in it may come from an attacker. Before
onnxruntime (or onnx, or tokenizers) opens anything, `onnx_edge.manifest.verify_files` uses this module to:

- refuse folder entries that lead elsewhere: symlinks (the entry or any folder above it inside the
  model folder), hardlinks (st_nlink > 1: a hardlink to ~/.ssh/id_rsa looks like a regular file),
  anything that is not a regular file or folder (FIFOs, devices, sockets), and paths that are not plain
  relative names (`..`, absolute, `C:`, backslashes, NUL);
- read model.onnx's protobuf *without* loading external data (a small wire-format reader: the runtime
  does not depend on the `onnx` package) and check every tensor that points to external data, wherever
  it sits (initializers, Constant/attribute tensors, sparse initializers, subgraphs, functions, training
  info): its `location` must name a regular file listed in the manifest inside the folder, its offset
  and length must lie inside that file and match the tensor's size, and only the keys location, offset,
  length and checksum may appear. onnxruntime's in-memory marker `*/_ORT_MEM_ADDR_/*` (offset = a raw
  pointer) is refused like any other name that is not a file. The onnx CVEs this covers:
  CVE-2022-25882 (`../`), CVE-2024-27318 (`dir/../../x`), CVE-2025-51480 (the same names on the
  save side), CVE-2026-27489/-34447 (symlinks), CVE-2026-34446 (hardlinks), CVE-2026-34445 (keys);
- refuse a model.onnx of 2 GiB or more: protobuf cannot parse it, weights that large belong in external data.

`HashCache` remembers sha256 digests keyed by (real path, size, mtime_ns, ctime_ns, inode, device) in
$ONNX_EDGE_CACHE_DIR or the user cache folder, so a desktop app's second start does not rehash 500 MB.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from onnx_edge.errors import IntegrityError

MANIFEST_NAME = "manifest.json"
PROTOBUF_LIMIT = 2**31  # protobuf refuses messages of 2 GiB and more
MAX_DEPTH = 100  # messages nested deeper than this are refused (protobuf's own default limit)
MAX_ENTRIES = 10_000  # entries scanned in a model folder
EXTERNAL_KEYS = ("location", "offset", "length", "checksum")
ORT_MEM_ADDR = "*/_ORT_MEM_ADDR_/*"

# TensorProto.DataType -> bits per element (sub-byte types are packed). STRING (8) cannot be external;
# types missing here (UNDEFINED, newer packings) are left to onnxruntime's own size check.
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128,
         16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}


# --------------------------------------------------------------------------------------------------
# paths inside the folder
# --------------------------------------------------------------------------------------------------


def check_relative(rel, what: str) -> list[str]:
    """The parts of `rel` if it is a plain relative path ("a/b.bin"), else IntegrityError. Plain means: a
    non-empty string of '/'-separated names, none empty, '.' or '..', no backslash, colon or NUL (Windows
    separators, drives and alternate data streams), not absolute."""
    if not isinstance(rel, str) or not rel:
        raise IntegrityError(f"{what} {rel!r} is not a file name")
    if "\0" in rel or "\\" in rel or ":" in rel or rel.startswith("/"):
        raise IntegrityError(f"{what} {rel!r} is not a plain relative path inside the model folder")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"{what} {rel!r} is not a plain relative path inside the model folder")
    return parts


def _is_link(st: os.stat_result) -> bool:
    # Windows junctions and other reparse points are not S_ISLNK but lead elsewhere just the same.
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & 0x400)


def member_stat(folder: Path, rel: str, what: str, missing: str | None = None) -> os.stat_result:
    """lstat of the regular file `rel` inside the (resolved) `folder`, refusing every way out of it.
    `what` names it in messages; `missing` is the message when it does not exist."""
    parts = check_relative(rel, what)
    path = folder
    for i, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise IntegrityError(missing or f"{rel}: {what} is missing from {folder}") from None
        except OSError as exc:
            raise IntegrityError(f"{rel}: cannot be read ({exc.strerror})") from None
        if _is_link(st):
            where = "" if i == len(parts) - 1 else f" (its folder {'/'.join(parts[:i + 1])!r} is)"
            raise IntegrityError(f"{rel}: is a symlink{where}; model folders must hold real files "
                                 f"(copy the folder without links)")
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise IntegrityError(f"{rel}: {'/'.join(parts[:i + 1])!r} is not a folder")
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"{rel}: is not a regular file")
    if st.st_nlink > 1:
        raise IntegrityError(f"{rel}: is a hardlink ({st.st_nlink} links); model folders must hold their own "
                             f"files (copy the folder without -l/--link)")
    # Belt and braces: whatever the checks above missed (a filesystem with odd semantics), the real
    # path must still be inside the folder.
    real = Path(os.path.realpath(path))
    if real != folder and folder not in real.parents:
        raise IntegrityError(f"{rel}: resolves outside the model folder")
    return st


def scan_folder(folder: Path) -> None:
    """Every entry of the folder tree is a real folder or a regular file with one link. Files the manifest
    does not list are allowed (a README), but quantize copies them, so they must not lead outside either."""
    seen = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            raise IntegrityError(f"{current}: cannot list ({exc.strerror})") from None
        for entry in entries:
            seen += 1
            if seen > MAX_ENTRIES:
                raise IntegrityError(f"{folder}: holds more than {MAX_ENTRIES} entries; not a model folder")
            rel = Path(entry.path).relative_to(folder).as_posix()
            st = entry.stat(follow_symlinks=False)
            if _is_link(st):
                raise IntegrityError(f"{rel}: is a symlink; model folders must hold real files "
                                     f"(copy the folder without links)")
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif not stat.S_ISREG(st.st_mode):
                raise IntegrityError(f"{rel}: is not a regular file or folder")
            elif st.st_nlink > 1:
                raise IntegrityError(f"{rel}: is a hardlink ({st.st_nlink} links); model folders must hold "
                                     f"their own files (copy the folder without -l/--link)")


def check_manifest_entry(folder: Path) -> None:
    """manifest.json itself must be a regular file, not a link: refused before it is read."""
    path = Path(folder) / MANIFEST_NAME
    try:
        st = os.lstat(path)
    except OSError:
        return  # read_manifest reports a missing manifest in its own words
    if _is_link(st):
        raise IntegrityError(f"{MANIFEST_NAME}: is a symlink; model folders must hold real files")
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"{MANIFEST_NAME}: is not a regular file")
    if st.st_nlink > 1:
        raise IntegrityError(f"{MANIFEST_NAME}: is a hardlink ({st.st_nlink} links); copy the folder")


def open_checked(path: Path, expected: os.stat_result) -> int:
    """Open for reading without following a final symlink, and make sure it is the file that was checked
    (same device and inode): a file swapped between the check and the read is refused."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise IntegrityError(f"{path.name}: cannot be opened ({exc.strerror})") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(fd)
        raise IntegrityError(f"{path.name}: changed while it was being checked")
    return fd


def sha256_fd(fd: int, chunk: int = 1 << 20) -> str:
    """sha256 of an open file descriptor (closed afterwards)."""
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb", closefd=True) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# model.onnx: a protobuf wire-format walk that finds every TensorProto, without loading any data
# --------------------------------------------------------------------------------------------------


class _Malformed(Exception):
    pass


@dataclass
class TensorRef:
    name: str
    external: dict[str, str] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    data_location: int = 0
    data_type: int = 0
    dims: list[int] = field(default_factory=list)


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload) per field."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wire, value
        elif wire == 1:
            if pos + 8 > end:
                raise _Malformed("truncated fixed64")
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise _Malformed("truncated fixed32")
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Malformed("length-delimited field runs past its message")
            yield num, wire, (pos, pos + length)
            pos += length
        else:  # groups (3, 4) are not used by onnx.proto; 6, 7 do not exist
            raise _Malformed(f"wire type {wire}")
    if pos != end:
        raise _Malformed("field runs past its message")


def _text(buf, span) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a string is not valid UTF-8") from None


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# Which fields of which message hold nested messages. TensorProto is parsed separately.
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_KINDS = {"model": _MODEL, "training": _TRAINING, "function": _FUNCTION, "graph": _GRAPH, "node": _NODE,
          "attribute": _ATTRIBUTE, "sparse": _SPARSE}


def _tensor(buf, start: int, end: int) -> TensorRef:
    t = TensorRef(name="")
    for num, wire, value in _fields(buf, start, end):
        if num == 8 and wire == 2:
            t.name = _text(buf, value)
        elif num == 2 and wire == 0:
            t.data_type = value
        elif num == 14 and wire == 0:
            t.data_location = value
        elif num == 1 and wire == 0:
            t.dims.append(_signed(value))
        elif num == 1 and wire == 2:  # packed dims
            pos, stop = value
            while pos < stop:
                v, pos = _varint(buf, pos, stop)
                t.dims.append(_signed(v))
        elif num == 13 and wire == 2:
            key = val = ""
            for n, w, v in _fields(buf, *value):
                if n == 1 and w == 2:
                    key = _text(buf, v)
                elif n == 2 and w == 2:
                    val = _text(buf, v)
            t.keys.append(key)
            t.external[key] = val
    return t


def tensors(buf) -> list[TensorRef]:
    """Every TensorProto in a serialized ModelProto (iterative walk: no recursion to exhaust)."""
    found = []
    stack = [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Malformed(f"graphs nested deeper than {MAX_DEPTH} levels")
        nested = _KINDS[kind]
        for num, wire, value in _fields(buf, start, end):
            sub = nested.get(num)
            if sub is None or wire != 2:
                continue
            if sub == "tensor":
                found.append(_tensor(buf, *value))
            else:
                stack.append((sub, value[0], value[1], depth + 1))
    return found


@dataclass
class GraphInterface:
    """The main graph's inputs and outputs: name -> (element type, dims: int, str (symbolic) or None)."""

    inputs: dict[str, tuple[int, list]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, list]] = field(default_factory=dict)
    initializers: dict[str, list[int]] = field(default_factory=dict)  # name -> dims
    nodes: list[tuple[str, list[str]]] = field(default_factory=list)  # (op_type, inputs) of the main graph


def _value_info(buf, start: int, end: int) -> tuple[str, int, list]:
    name, elem, dims = "", 0, []
    for num, wire, value in _fields(buf, start, end):
        if num == 1 and wire == 2:
            name = _text(buf, value)
        elif num == 2 and wire == 2:  # TypeProto
            for n, w, v in _fields(buf, *value):
                if n != 1 or w != 2:  # tensor_type only
                    continue
                for n2, w2, v2 in _fields(buf, *v):
                    if n2 == 1 and w2 == 0:
                        elem = v2
                    elif n2 == 2 and w2 == 2:  # TensorShapeProto
                        for n3, w3, v3 in _fields(buf, *v2):
                            if n3 != 1 or w3 != 2:
                                continue
                            dim = None
                            for n4, w4, v4 in _fields(buf, *v3):
                                if n4 == 1 and w4 == 0:
                                    dim = _signed(v4)
                                elif n4 == 2 and w4 == 2:
                                    dim = _text(buf, v4)
                            dims.append(dim)
    return name, elem, dims


def interface(buf) -> GraphInterface:
    """Inputs, outputs and initializer names of the main graph (every `graph` field: protobuf merges them)."""
    iface = GraphInterface()
    for num, wire, value in _fields(buf, 0, len(buf)):
        if num != 7 or wire != 2:
            continue
        for n, w, v in _fields(buf, *value):
            if w != 2:
                continue
            if n in (11, 12):
                name, elem, dims = _value_info(buf, *v)
                (iface.inputs if n == 11 else iface.outputs)[name] = (elem, dims)
            elif n == 5:
                t = _tensor(buf, *v)
                iface.initializers[t.name] = t.dims
            elif n == 1:
                op, inputs = "", []
                for n2, w2, v2 in _fields(buf, *v):
                    if n2 == 1 and w2 == 2:
                        inputs.append(_text(buf, v2))
                    elif n2 == 4 and w2 == 2:
                        op = _text(buf, v2)
                iface.nodes.append((op, inputs))
    return iface


def _int_value(tensor: TensorRef, key: str) -> int | None:
    text = tensor.external.get(key)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit():
        raise IntegrityError(f"model.onnx: tensor {tensor.name!r} has external data {key} {text!r}, "
                             f"not a non-negative integer")
    return int(text)


def _nbytes(tensor: TensorRef) -> int | None:
    if any(d < 0 for d in tensor.dims):
        raise IntegrityError(f"model.onnx: tensor {tensor.name!r} has a negative dimension {tensor.dims}")
    bits = _BITS.get(tensor.data_type)
    if bits is None:
        return None
    return (math.prod(tensor.dims) * bits + 7) // 8


@dataclass
class ModelInfo:
    """What the checks learned about model.onnx without loading it."""

    external_tensors: int
    interface: GraphInterface


def check_model_file(folder: Path, model_file: str, st: os.stat_result,
                     listed: dict[str, os.stat_result]) -> ModelInfo:
    """Check every external-data reference of `model_file` (already member-checked, stat `st`). `listed`
    maps the manifest's files to their stats."""
    if st.st_size >= PROTOBUF_LIMIT:
        raise IntegrityError(f"{model_file}: {st.st_size / 1e9:.2f} GB; an ONNX graph file must be under 2 GiB "
                             f"(protobuf's limit): weights that large belong in external data (re-export)")
    if st.st_size == 0:
        raise IntegrityError(f"{model_file}: is empty, not an ONNX model")
    fd = open_checked(folder / model_file, st)
    try:
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
            try:
                found = tensors(buf)
                iface = interface(buf)
            except _Malformed as exc:
                raise IntegrityError(f"{model_file}: not a valid ONNX model ({exc})") from None
    finally:
        os.close(fd)
    external = 0
    for t in found:
        if t.data_location != 1 and not t.external:
            continue
        external += 1
        label = f"{model_file}: tensor {t.name!r}"
        if t.data_location != 1:
            raise IntegrityError(f"{label} has external_data entries but data_location is not EXTERNAL")
        unknown = [k for k in t.keys if k not in EXTERNAL_KEYS]
        if unknown:
            raise IntegrityError(f"{label} has unknown external data keys {unknown} (allowed: {', '.join(EXTERNAL_KEYS)})")
        if len(set(t.keys)) != len(t.keys):
            raise IntegrityError(f"{label} repeats an external data key: {t.keys}")
        if "location" not in t.external:
            raise IntegrityError(f"{label} is stored externally but names no location")
        location = t.external["location"]
        if location == ORT_MEM_ADDR:
            raise IntegrityError(f"{label} uses onnxruntime's in-memory address marker {ORT_MEM_ADDR!r} "
                                 f"(a raw pointer) as its location")
        check_relative(location, f"{label}: external data location")
        if location not in listed:
            member_stat(folder, location, f"external data of {label}",  # links and missing files first
                        missing=f"{label}: its external data file {location!r} does not exist")
            raise IntegrityError(f"{label}: its external data file {location!r} is not listed in the manifest "
                                 f"(so its sha256 is not checked)")
        size = listed[location].st_size
        offset = _int_value(t, "offset") or 0
        length = _int_value(t, "length")
        nbytes = _nbytes(t)
        if length is not None and nbytes is not None and length != nbytes:
            raise IntegrityError(f"{label}: external data length {length} differs from the tensor's "
                                 f"{nbytes} bytes (shape {t.dims})")
        need = length if length is not None else nbytes
        if offset > size or (need is not None and offset + need > size):
            raise IntegrityError(f"{label}: external data [{offset}, {offset + (need or 0)}) lies beyond "
                                 f"the end of {location} ({size} bytes)")
    return ModelInfo(external, iface)


# --------------------------------------------------------------------------------------------------
# the manifest's runtime contract against the graph
# --------------------------------------------------------------------------------------------------

KV_MODES = ("concat", "shared_buffer")
KV_LAYOUT = "batch,kv_heads,seq,head_dim"
FLOAT_TYPES = {"float32": 1, "float16": 10}  # manifest dtype name -> TensorProto.DataType
INT64 = 7


def check_contract(manifest, iface: GraphInterface) -> None:
    """ManifestError unless the manifest's io names, dtypes and shape agree with model.onnx, so the session
    is never fed names, types or sizes the graph does not have (onnxruntime would fail mid-generation with
    an error that is not ours). Reads the manifest only as the runtime will use it."""
    from onnx_edge.errors import ManifestError

    io, arch = manifest.io, manifest.architecture

    def bad(message: str):
        raise ManifestError(f"manifest disagrees with {manifest.model_file}: {message}")

    for name in ("input_ids", "attention_mask", "past_key", "past_value", "logits", "present_key", "present_value",
                 "kv_layout", "kv_dtype", "logits_dtype", "kv_mode"):
        if not isinstance(getattr(io, name), str) or not getattr(io, name):
            raise ManifestError(f"malformed manifest: io.{name} must be a non-empty string")
    for name in ("position_ids", "logits_to_keep"):
        if getattr(io, name) is not None and (not isinstance(getattr(io, name), str) or not getattr(io, name)):
            raise ManifestError(f"malformed manifest: io.{name} must be a non-empty string or null")
    if io.kv_mode not in KV_MODES:
        raise ManifestError(f"malformed manifest: io.kv_mode {io.kv_mode!r} is not one of {', '.join(KV_MODES)}")
    if io.kv_mode == "shared_buffer" and io.logits_to_keep is None:
        raise ManifestError("malformed manifest: io.kv_mode 'shared_buffer' needs io.logits_to_keep")
    if io.kv_layout != KV_LAYOUT:
        raise ManifestError(f"malformed manifest: io.kv_layout {io.kv_layout!r} (this runtime reads {KV_LAYOUT!r})")
    for name in ("kv_dtype", "logits_dtype"):
        if getattr(io, name) not in FLOAT_TYPES:
            raise ManifestError(f"malformed manifest: io.{name} {getattr(io, name)!r} is not one of "
                                f"{', '.join(FLOAT_TYPES)}")
    for name in ("bos_token_id", "pad_token_id"):
        value = arch.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < arch["vocab_size"]):
            raise ManifestError(f"malformed manifest: architecture.{name} must be null or an id below "
                                f"vocab_size {arch['vocab_size']}, got {value!r}")

    layers = []
    for i in range(arch["num_layers"]):
        names = []
        for template in (io.past_key, io.past_value, io.present_key, io.present_value):
            try:
                names.append(template.format(i=i))
            except (KeyError, IndexError, ValueError, AttributeError):
                raise ManifestError(f"malformed manifest: io name template {template!r} may only use {{i}}") from None
        layers.append(names)
    fed = {io.input_ids: INT64, io.attention_mask: INT64}
    if io.position_ids is not None:
        fed[io.position_ids] = INT64
    if io.logits_to_keep is not None:
        fed[io.logits_to_keep] = INT64
    kv = FLOAT_TYPES[io.kv_dtype]
    for past_k, past_v, _, _ in layers:
        fed[past_k] = fed[past_v] = kv
    fetched = {io.logits: FLOAT_TYPES[io.logits_dtype]}
    for _, _, present_k, present_v in layers:
        fetched[present_k] = fetched[present_v] = kv
    if len(fed) != 2 + (io.position_ids is not None) + (io.logits_to_keep is not None) + 2 * len(layers):
        bad("two io names collide (a name template without {i}?)")
    for name, elem in fed.items():
        if name not in iface.inputs:
            bad(f"input {name!r} is not an input of the graph")
        if iface.inputs[name][0] != elem:
            bad(f"input {name!r} has element type {iface.inputs[name][0]}, the manifest implies {elem}")
    unfed = [n for n in iface.inputs if n not in fed and n not in iface.initializers]
    if unfed:
        bad(f"graph input(s) {unfed} would never be fed")
    for name, elem in fetched.items():
        if name not in iface.outputs:
            bad(f"output {name!r} is not an output of the graph")
        if iface.outputs[name][0] != elem:
            bad(f"output {name!r} has element type {iface.outputs[name][0]}, the manifest implies {elem}")
    expect = {1: ("num_kv_heads", arch["num_kv_heads"]), 3: ("head_dim", arch["head_dim"])}
    kv_names = [(name, iface.inputs if j < 2 else iface.outputs) for names in layers for j, name in enumerate(names)]
    for name, where in kv_names:
        dims = where[name][1]
        if dims and len(dims) != 4:
            bad(f"{name!r} has {len(dims)} dimensions, the KV layout needs 4")
        for axis, (field_name, value) in expect.items():
            if dims and isinstance(dims[axis], int) and dims[axis] != value:
                bad(f"{name!r} has {dims[axis]} on axis {axis}, architecture.{field_name} is {value}")
    # Position tables (rotary cos/sin caches, learned position embeddings) need a row per position the
    # manifest's context window allows: generating past them fails inside onnxruntime.
    tables = set()
    for op, inputs in iface.nodes:
        if op == "RotaryEmbedding" and len(inputs) >= 4:
            tables.update(inputs[2:4])
        elif op == "GroupQueryAttention" and len(inputs) >= 9:
            tables.update(inputs[7:9])
        elif op == "Gather" and len(inputs) == 2 and io.position_ids is not None and inputs[1] == io.position_ids:
            tables.add(inputs[0])
    for name in sorted(tables):
        dims = iface.initializers.get(name)
        if dims and dims[0] < arch["context_length"]:
            bad(f"position table {name!r} has {dims[0]} rows, architecture.context_length is {arch['context_length']}")
    logits_dims = iface.outputs[io.logits][1]
    if logits_dims and isinstance(logits_dims[-1], int) and logits_dims[-1] != arch["vocab_size"]:
        bad(f"logits have {logits_dims[-1]} entries per position, architecture.vocab_size is {arch['vocab_size']}")


# --------------------------------------------------------------------------------------------------
# the sha256 cache
# --------------------------------------------------------------------------------------------------

CACHE_VERSION = 1
CACHE_FILE = "hashes.json"
CACHE_MAX_ENTRIES = 2048
# A file changed again within the filesystem's timestamp granularity of our hashing keeps the same
# (size, mtime, ctime): do not remember digests of files touched this recently ("racy git").
RACY_SECONDS = 2.0


def default_cache_dir() -> Path | None:
    """$ONNX_EDGE_CACHE_DIR, else the platform's user cache folder + onnx-edge-kit. None = no cache
    (ONNX_EDGE_HASH_CACHE=0)."""
    if os.environ.get("ONNX_EDGE_HASH_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    env = os.environ.get("ONNX_EDGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
        return base / "onnx-edge-kit" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "onnx-edge-kit"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else home / ".cache"  # the XDG spec ignores relative values
    return base / "onnx-edge-kit"


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class HashCache:
    """sha256 digests of files, valid while (size, mtime_ns, ctime_ns, inode, device) are unchanged.

    Trusted because only the local user's processes can write the cache file; a file rewritten with the
    same size and a restored mtime still gets a new ctime (only settable by changing the system clock),
    but `onnx-edge verify` always rehashes. Never an error source: an unreadable, corrupt or unwritable
    cache is ignored (and rebuilt when possible)."""

    def __init__(self, directory: Path | None):
        self.path = None if directory is None else Path(directory) / CACHE_FILE
        self._entries: dict[str, dict] = {}
        self._dirty: dict[str, dict] = {}
        if self.path is not None:
            self._entries = self._read()

    @classmethod
    def default(cls) -> "HashCache":
        return cls(default_cache_dir())

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read(64 << 20).decode("utf-8"))
        except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
            return {}
        good = {}
        for key, entry in data["files"].items():
            if (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
                    and isinstance(entry.get("stat"), list) and len(entry["stat"]) == 5
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in entry["stat"])):
                good[key] = entry
        return good

    def lookup(self, path: Path, st: os.stat_result) -> str | None:
        entry = self._entries.get(os.path.realpath(path))
        if entry is not None and entry["stat"] == _stat_key(st):
            return entry["sha256"]
        return None

    def store(self, path: Path, st: os.stat_result, digest: str) -> None:
        if self.path is None:
            return
        newest = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        if time.time() - newest < RACY_SECONDS:
            return
        entry = {"sha256": digest, "stat": _stat_key(st), "used": int(time.time())}
        key = os.path.realpath(path)
        self._entries[key] = entry
        self._dirty[key] = entry

    def save(self) -> None:
        """Merge this run's entries into the file on disk and replace it atomically; errors are ignored."""
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            merged = self._read()  # another process may have written since we read
            merged.update(self._dirty)
            if len(merged) > CACHE_MAX_ENTRIES:
                keep = sorted(merged, key=lambda k: merged[k].get("used", 0) if isinstance(merged[k].get("used"), int)
                              else 0)[-CACHE_MAX_ENTRIES:]
                merged = {k: merged[k] for k in keep}
            fd, tmp = tempfile.mkstemp(prefix=".hashes.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": CACHE_VERSION, "files": merged}, fh)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._dirty = {}
        except OSError:
            pass  # a read-only home or a full disk must not stop a model from loading
