"""Checks that make a downloaded model folder safe to hand to onnxruntime.

A model folder is untrusted input: every byte of every file in it may come from an attacker. Before
onnxruntime (or onnx, or tokenizers) opens anything, `verify_files` (below) checks it against its manifest and uses the checks here to:

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

The protobuf walk lives in onnx_proto.py, the manifest-against-graph check in graph_contract.py and the sha256
cache in hash_cache.py.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from onnx_edge.errors import IntegrityError
from onnx_edge.manifest import Manifest, sha256_stream
from onnx_edge.runtime.onnx_proto import GraphInterface, TensorRef, interface, tensors
from onnx_edge.runtime.hash_cache import HashCache
from onnx_edge.runtime.onnx_proto import Malformed as _Malformed


MANIFEST_NAME = "manifest.json"
PROTOBUF_LIMIT = 2**31  # protobuf refuses messages of 2 GiB and more
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


def sha256_fd(fd: int) -> str:
    """sha256 of an open file descriptor (closed afterwards)."""
    with os.fdopen(fd, "rb", closefd=True) as fh:
        return sha256_stream(fh)


# --------------------------------------------------------------------------------------------------
# model.onnx: every external-data reference the protobuf walk (onnx_proto.py) finds
# --------------------------------------------------------------------------------------------------


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


def verify_files(folder: str | os.PathLike, manifest: Manifest, check_hashes: bool = True,
                 use_cache: bool = False):
    """Raise IntegrityError unless the folder is safe to open and matches its manifest.

    Always (cheap, before anything is parsed or hashed): no entry of the folder is a symlink, hardlink or
    special file; every listed file is a plain relative path to a regular file of the recorded size; the
    files the runtime reads (model, tokenizer, tokenizer_config.json, chat_template.jinja) are listed;
    every external-data reference in the model graph stays inside a listed file (see
    the module docstring). With `check_hashes`, every listed file's sha256. `use_cache` takes
    digests from the user's hash cache when (size, mtime, ctime, inode) are unchanged; without it every
    file is rehashed (what `onnx-edge verify` does) and the cache is refreshed. Returns what was learned
    about the graph (ModelInfo) without loading it."""
    folder = Path(folder).resolve()
    check_manifest_entry(folder)
    stats: dict[str, os.stat_result] = {}
    for rel, entry in manifest.files.items():
        if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.replace("\\", "/").split("/"):
            raise IntegrityError(f"manifest lists a file outside the model folder: {rel}")
        st = member_stat(folder, rel, "manifest file",
                                   missing=f"{rel}: listed in the manifest but missing from {folder}")
        if st.st_size != entry.size:
            raise IntegrityError(f"{rel}: size {st.st_size} differs from the manifest's {entry.size} "
                                 f"(truncated or replaced)")
        stats[rel] = st
    scan_folder(folder)
    _check_read_files(folder, manifest, stats)
    info = check_model_file(folder, manifest.model_file, stats[manifest.model_file], stats)
    if not check_hashes:
        return info
    cache = HashCache.default()
    try:
        for rel, entry in manifest.files.items():
            path, st = folder / rel, stats[rel]
            digest = cache.lookup(path, st) if use_cache else None
            if digest is None:
                digest = sha256_fd(open_checked(path, st))
                if _same_file(st, os.stat(path, follow_symlinks=False)):  # not changed while we read it
                    cache.store(path, st, digest)
            if digest != entry.sha256:
                raise IntegrityError(f"{rel}: sha256 differs from the manifest (file was modified)")
    finally:
        cache.save()
    return info


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino, a.st_dev) == \
        (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino, b.st_dev)


def _check_read_files(folder: Path, manifest: Manifest, stats: dict) -> None:
    """Each file the runtime opens must be listed (so it was checked above and gets hashed)."""
    tokenizer_file = manifest.tokenizer.get("file", "tokenizer.json") if isinstance(manifest.tokenizer, dict) else None
    required = {"model_file": manifest.model_file, "tokenizer.file": tokenizer_file}
    for key, rel in required.items():
        if not isinstance(rel, str) or not rel:
            raise IntegrityError(f"manifest {key} {rel!r} is not a file name")
        if rel not in stats:
            check_relative(rel, f"manifest {key}")
            raise IntegrityError(f"{rel}: the manifest's {key} is not listed in its files")
    for optional in ("tokenizer_config.json", "chat_template.jinja"):
        if optional not in stats and os.path.lexists(folder / optional):
            raise IntegrityError(f"{optional}: in the folder but not listed in the manifest (added after export?); "
                                 f"the runtime would read it unchecked")
