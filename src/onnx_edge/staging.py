"""Atomic output folders: build next to OUT, rename into place only when complete.

Shared by export and quantize, so an interrupted or failed run never leaves a folder that looks
complete and never destroys what the user had at OUT."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from onnx_edge.errors import OutputError


class DiskFullError(OutputError, OSError):
    """The disk (or a file-size limit) ran out while writing; still an OSError for callers that catch that."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "disk full"


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{out}: folder exists and is not empty (use --force to replace it)")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{parent}: is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: not writable")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on success swap it in, on any exit remove it."""
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
        replace_folder(tmp, out)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DiskFullError(f"{out}: cannot write the output ({exc.strerror}); nothing was written") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written survives, whatever stopped us


def replace_folder(tmp: Path, out: Path) -> None:
    """Swap the finished folder in; an old folder (--force) is removed only after the swap."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)  # put the user's folder back
        raise
    if old is not None:
        try:
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:  # interrupted: finish the cleanup before letting the signal through
            _remove_tree(old)
            raise


def _remove_tree(path: Path) -> None:
    """Plain bottom-up removal, used once an interrupt already hit shutil.rmtree."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    if path.exists():
        os.rmdir(path)
