"""The sha256 cache: digests keyed by (real path, size, mtime_ns, ctime_ns, inode, device) in $ONNX_EDGE_CACHE_DIR
or the user cache folder, so a desktop app's second start does not rehash 500 MB."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

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
