"""runtime/memory.py: mapped weight pages handed back after a session load, contents unchanged."""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np
import pytest

from onnx_edge.runtime.memory import released_mapped_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc and madvise")


def resident_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    target, total, current = os.path.realpath(path), 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                current = len(parts) >= 6 and parts[5] == target
            elif current and parts[0] == "Rss:":
                total += int(parts[1])
    return total


@pytest.mark.parametrize("access", [mmap.ACCESS_READ, mmap.ACCESS_COPY])
def test_mapped_pages_are_released_and_read_back_unchanged(tmp_path, access):
    data = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8)
    path = tmp_path / "model.onnx.data"
    data.tofile(path)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=access) as mapped:
        view = np.frombuffer(mapped, dtype=np.uint8)
        assert int(view.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))  # touch every page
        assert resident_kb(path) >= 8000
        with released_mapped_pages([path], interval=0.005):
            pass
        assert resident_kb(path) == 0
        assert np.array_equal(view, data)  # read back from the page cache or the file, byte for byte
        del view


def test_other_files_are_left_alone(tmp_path):
    keep, other = tmp_path / "keep.bin", tmp_path / "other.bin"
    np.ones(4 << 20, dtype=np.uint8).tofile(keep)
    np.ones(16, dtype=np.uint8).tofile(other)
    with open(keep, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = np.frombuffer(mapped, dtype=np.uint8)
        with released_mapped_pages([other]):
            view.sum()
        assert resident_kb(keep) >= 4000
        del view
