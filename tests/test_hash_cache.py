"""The sha256 cache of runtime/hash_cache.py: a second load hashes nothing, `verify` always rehashes, a
tampered file is caught however its stat was kept, and the cache file is private, atomic and optional."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from onnx_edge.errors import IntegrityError
from tests.hostile import DATA, _private_hash_cache, folder  # noqa: F401 - fixtures, by name

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file identities")


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
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files
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
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files
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
    from onnx_edge.runtime import hash_cache, load

    (folder / DATA).write_bytes((folder / DATA).read_bytes())  # fresh ctime
    load(folder, provider="cpu")
    cached = json.loads(_cache_file(tmp_path).read_text(encoding="utf-8"))["files"] \
        if _cache_file(tmp_path).exists() else {}
    assert os.path.realpath(folder / DATA) not in cached
    assert hash_cache.RACY_SECONDS > 0


def test_cache_location(monkeypatch, tmp_path):
    from onnx_edge.runtime.hash_cache import default_cache_dir

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
