"""Output paths and atomic output folders: every output is resolved and checked before any work, one
process writes a given OUT at a time, the result is built beside OUT and swapped in only when complete.

Shared by export and quantize (folders) and by the CLI's file outputs (write_file_atomic), so an
interrupted or failed run never leaves a folder that looks complete and never destroys what the user had.
The guarantees are listed in DESIGN.md, Threat model."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from onnx_edge.errors import EdgeError, OutputError
# PARTIAL_MARKER is present in a folder while it is being built; read_manifest refuses such a folder.
from onnx_edge.manifest import FORMAT, MANIFEST_NAME, PARTIAL_MARKER
from onnx_edge.textfile import read_json

# Siblings a run leaves while it works: .NAME.partial-PID (the folder being built), .NAME.old-PID (a
# --force output moved aside for the swap), .NAME.fp32-PID (the fp32 step of a GGUF-block export).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old|fp32)-(?P<pid>\d+)$")


class DiskFullError(OutputError, OSError):
    """The disk (or a file-size limit) ran out while writing; still an OSError for callers that catch that."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "disk full"


# ----------------------------------------------------------------------------------------- resolving


def resolve_output(output, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """The real path `output` names (its existing parent's symlinks and `..` followed), after refusing an
    empty path, a symlink, the current or home directory, a filesystem root, and any path that is, contains
    or lies inside one of `inputs`."""
    raw = os.fspath(output) if output is not None else ""
    if not raw.strip():
        raise OutputError("the output path is empty (an unset shell variable?)")
    path = Path(os.getcwd(), os.path.expanduser(raw))  # not abspath: it would fold `link/..` before resolving
    if path.name in ("", ".", ".."):
        real = Path(os.path.realpath(path))
    else:
        real = Path(os.path.realpath(path.parent)) / path.name
        if real.is_symlink():
            raise OutputError(f"{raw}: is a symbolic link; name the real folder")
    here, home = Path(os.path.realpath(os.getcwd())), Path(os.path.realpath(os.path.expanduser("~")))
    if real.parent == real:
        raise OutputError(f"{raw}: is a filesystem root; choose a folder for the output")
    for what, place in (("the current directory", here), ("your home directory", home)):
        if real == place or real in place.parents:
            raise OutputError(f"{raw}: is {what}" + ("" if real == place else f" or contains it ({place})")
                              + "; choose a new folder for the output")
    for item in inputs:
        inp = Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(item)))))
        if real == inp:
            raise OutputError(f"{raw}: is the input {inp} itself; choose another output")
        if real in inp.parents:
            raise OutputError(f"{raw}: contains the input {inp}; choose another output")
        if inp in real.parents:
            raise OutputError(f"{raw}: lies inside the input {inp}; choose another output")
    return real


def _entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _unlisted(folder: Path) -> list[str] | None:
    """Top-level entries of `folder` that its onnx-edge manifest does not list (None: no such manifest)."""
    path = folder / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = read_json(path, EdgeError)
    except EdgeError:
        return None
    if data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        return None
    listed = {MANIFEST_NAME} | {str(name).split("/")[0] for name in data["files"]}
    return [e for e in _entries(folder) if e not in listed]


def _describe(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_output(out: Path, force: bool) -> None:
    """Refuse an `out` (resolved) that cannot be written or whose contents a run must not replace:
    a non-empty folder without --force, and even with --force one that holds anything onnx-edge did not write."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir():
        entries = _entries(out)
        if entries and not force:
            raise OutputError(f"{out}: folder exists and is not empty (use --force to replace an onnx-edge folder)")
        if entries:
            unlisted = _unlisted(out)
            if unlisted is None:
                raise OutputError(f"{out}: holds files onnx-edge did not write ({_describe(entries)}); --force "
                                  f"replaces only a folder onnx-edge wrote, so choose another output")
            if unlisted:
                raise OutputError(f"{out}: holds files its manifest does not list ({_describe(unlisted)}); --force "
                                  f"replaces only what onnx-edge wrote, so move them or choose another output")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{parent}: is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: not writable")


# ------------------------------------------------------------------------------------------- locking


@dataclass
class Claim:
    """The right to write one output folder: its resolved path, --force, and the lock that keeps a second
    onnx-edge process off it until release()."""

    path: Path
    force: bool
    _fd: int | None = None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.unlink(_lock_path(self.path))  # while still locked: a waiting opener re-checks the inode
        os.close(fd)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def claim_output(output, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Claim:
    """Resolve and check `output`, take its lock (a second writer gets a one-line error), sweep what killed
    runs left beside it. Release the claim (or use it as a context manager) when done."""
    out = resolve_output(output, inputs)
    check_output(out, force)
    lock = _lock_path(out)
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"{out.parent}: cannot create a lock file ({exc.strerror})") from None
        if not _try_lock(fd):
            os.close(fd)
            raise OutputError(f"{out}: another onnx-edge run is writing this output; wait for it or choose another")
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and lock: take the new one
    else:
        raise OutputError(f"{out}: could not lock the output")
    claim = Claim(out, force, fd)
    try:
        sweep_leftovers(out)
        check_output(out, force)  # a swept .old- folder may have been put back
    except BaseException:
        claim.release()
        raise
    return claim


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process (or no way to tell): leave its files alone
    return True


def sweep_leftovers(out: Path) -> list[Path]:
    """Remove what killed runs left beside `out` (their process is gone), or put back an old folder that a
    killed --force run had moved aside before its swap. Call with the output's lock held. Returns the removed."""
    removed = []
    try:
        names = _entries(out.parent)
    except OSError:
        return removed
    for name in names:
        m = _LEFTOVER.match(name)
        if not m or m["name"] != out.name or _alive(int(m["pid"])):
            continue
        path = out.parent / name
        if m["kind"] == "old" and not out.exists():
            os.replace(path, out)  # killed between moving the user's folder aside and the swap
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def staged_folder(claim: Claim) -> Iterator[Path]:
    """Yield an empty temporary folder beside the claimed output; on success swap it in, on any exit remove
    it. The swap re-checks the output: what appeared there meanwhile is kept, and so is the result (beside it)."""
    out = claim.path
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / PARTIAL_MARKER).write_bytes(b"")
        yield tmp
        follow_umask(tmp)
        os.unlink(tmp / PARTIAL_MARKER)
        _swap(tmp, claim)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DiskFullError(f"{out}: cannot write the output ({exc.strerror}); nothing was written") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written survives, whatever stopped us


def follow_umask(folder: Path) -> None:
    """Give every file and folder the mode a plain create would (onnx writes external data 0600, so a shared
    folder's weights were unreadable to the other users its other files are readable to)."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def _swap(tmp: Path, claim: Claim) -> None:
    out = claim.path
    try:
        check_output(out, claim.force)
    except OutputError as exc:
        kept = out.parent / f"{out.name}.onnx-edge-{os.getpid()}"
        os.replace(tmp, kept)
        raise OutputError(f"{out}: changed while this run was writing ({exc.args[0].split(': ', 1)[-1]}); it was "
                          f"left as it is and the finished result is in {kept}") from None
    replace_folder(tmp, out)


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


def write_file_atomic(path, data: str | bytes, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write a file the CLI produces (an HTML report, JSON): resolved and checked like a folder output, written
    to a temporary file beside it and renamed, so a failed write leaves any old file intact."""
    target = resolve_output(path, inputs)
    if target.is_dir():
        raise OutputError(f"{path}: is a folder")
    if not target.parent.is_dir():
        raise OutputError(f"{target.parent}: no such folder")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write ({exc.strerror}); any old file is unchanged") from None
    return target
