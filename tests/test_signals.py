"""Real interruptions of real processes: `onnx-edge export` and `onnx-edge quantize` run in a subprocess,
get SIGINT or SIGTERM once their `.NAME.partial-PID` folder exists, or run out of file space
(RLIMIT_FSIZE: writes fail with EFBIG as on a full disk). Each must exit non-zero with one `error:` line
and no traceback, leave no output folder and no temporary folder, and leave a pre-existing --force
target exactly as it was.

test_errors.py / test_cli.py simulate the same failures in-process (a patched save_model raising
KeyboardInterrupt or ENOSPC); these tests send the real signals and hit the real OS limits.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.error_cases import PREVIOUS, previous_output

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")]

WAIT_S = 240  # upper bound for one subprocess (imports torch: slow on a busy 2-core machine)


@pytest.fixture
def env(tmp_path) -> dict:
    e = dict(os.environ)
    e["ONNX_EDGE_CACHE_DIR"] = str(tmp_path / "hash-cache")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def command(kind: str, src: Path, out: Path, force: bool) -> list[str]:
    args = [sys.executable, "-m", "onnx_edge.cli"]
    if kind == "export":
        args += ["export", str(src), "-o", str(out), "--json"]  # --json: no progress bars on stderr
    else:
        args += ["quantize", str(src), "-o", str(out), "--precision", "int8", "--json"]
    return args + (["--force"] if force else [])


def source(kind: str, tiny_models, exported_models) -> Path:
    return tiny_models("llama") if kind == "export" else exported_models("llama")


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def prepare_target(out: Path, force: bool) -> None:
    if force:
        previous_output(out)


def check_target(out: Path, force: bool) -> None:
    if force:
        assert sorted(p.name for p in out.iterdir()) == PREVIOUS
        assert (out / "keep.txt").read_text(encoding="utf-8") == "precious"
    else:
        assert not out.exists(), f"{out} exists: {sorted(p.name for p in out.iterdir())}"
    assert siblings(out) == []


def one_error_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert needle in errors[0], errors[0]


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["export", "quantize"])
def test_signal_mid_write(kind, sig, force, tiny_models, exported_models, tmp_path, env):
    src = source(kind, tiny_models, exported_models)
    out = tmp_path / "out"
    prepare_target(out, force)
    proc = subprocess.Popen(command(kind, src, out, force), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    partial = out.parent / f".{out.name}.partial-{proc.pid}"
    deadline = time.monotonic() + WAIT_S
    try:
        # The folder exists and the command is writing into it. (Signalling the very instant it appears
        # hits a separate window, pinned deterministically by test_interrupt_between_mkdir_and_try.)
        while not (partial.exists() and any(partial.iterdir())):
            if proc.poll() is not None:
                pytest.fail(f"{kind} ended (exit {proc.returncode}) before its partial folder was seen:\n"
                            f"{proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {partial.name} after {WAIT_S} s")
            time.sleep(0.002)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    one_error_line(stderr, "interrupted")
    check_target(out, force)


def _limit_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited across exec: writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
@pytest.mark.parametrize("kind", ["export", "quantize"])
def test_out_of_file_space(kind, force, tiny_models, exported_models, tmp_path, env):
    """Weights are the first file larger than 64 KiB either command writes."""
    src = source(kind, tiny_models, exported_models)
    out = tmp_path / "out"
    prepare_target(out, force)
    proc = subprocess.run(command(kind, src, out, force), env=env, capture_output=True, text=True,
                          timeout=WAIT_S, preexec_fn=_limit_file_size(64 << 10))
    assert proc.returncode != 0
    assert "File too large" in proc.stderr
    check_target(out, force)  # nothing half-written survives, the user's folder is intact
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    one_error_line(proc.stderr, "File too large")


# --------------------------------------------------------------------------------------------------
# the two windows in onnx_edge.staging an interrupt can still hit (deterministic, in-process)
# --------------------------------------------------------------------------------------------------


def test_interrupt_between_mkdir_and_try(tmp_path, monkeypatch):
    from onnx_edge.staging import claim_output, staged_folder

    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if ".partial-" in self.name:
            raise KeyboardInterrupt  # the signal arrives as mkdir returns

    monkeypatch.setattr(Path, "mkdir", mkdir)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with claim_output(out, force=False) as claim, staged_folder(claim):
            pass
    monkeypatch.undo()
    assert siblings(out) == []


def test_interrupt_while_removing_the_old_folder(tmp_path, monkeypatch):
    import shutil

    import onnx_edge.staging as staging

    out = tmp_path / "out"
    previous_output(out, "old")
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if ".old-" in Path(path).name:
            raise KeyboardInterrupt  # the signal arrives as the old folder is being removed
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(staging.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        with staging.claim_output(out, force=True) as claim, staging.staged_folder(claim) as tmp:
            (tmp / "manifest.json").write_text("{}", encoding="utf-8")
    monkeypatch.undo()
    assert (out / "manifest.json").is_file()
    assert siblings(out) == []
