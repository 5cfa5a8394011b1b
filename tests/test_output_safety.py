"""Nothing the user had is lost: output paths are resolved before any check (symlinked parents, `..`, an empty
path), --force replaces only what onnx-edge wrote, one writer per output, the final swap re-checks, killed
runs' leftovers are swept, unfinished folders never load, CLI files are written atomically, and quantize
copies only the files its input's manifest lists. Crafted folders and paths, no mocks of the checks."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_edge.errors import EdgeError, OutputError
from onnx_edge.manifest import PARTIAL_MARKER
from tests.cli_cases import assert_ok, assert_one_line_error, invoke
from tests.error_cases import PREVIOUS, previous_output


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (following nothing) -> sha256: what must survive a refused run unchanged."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def fp32(exported, tmp_path) -> Path:
    """A private copy of the exported tiny llama (the input of quantize)."""
    dst = tmp_path / "work" / "fp32"
    shutil.copytree(exported, dst)
    return dst


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -------------------------------------------------------------------------------------- path resolution


def test_export_through_a_symlinked_parent_onto_its_source_is_refused(source_copy, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(source_copy.parent)
    before = digest(source_copy)
    result = invoke("export", source_copy, "-o", link / source_copy.name, "--force", "--no-validate")
    assert_one_line_error(result, "is the input")
    assert digest(source_copy) == before


@pytest.mark.parametrize("via", ["plain", "symlink"])
def test_quantize_onto_its_input_through_dotdot_is_refused(fp32, via):
    sub = fp32.parent / "sub"
    if via == "plain":
        sub.mkdir()
    else:
        (fp32.parent / "elsewhere").mkdir()
        sub.symlink_to(fp32.parent / "elsewhere")
    before = digest(fp32)
    target = f"{sub}/../{fp32.name}"
    result = invoke("quantize", fp32, "-o", target, "--precision", "int8", "--force")
    # with the symlink, `sub/..` is `elsewhere/..` = `work` too: symlinks are followed before `..`
    assert_one_line_error(result, "is the input")
    assert digest(fp32) == before


@pytest.mark.parametrize("target, needle", [
    ("", "empty"), ("   ", "empty"), (".", "current directory"), ("..", "contains it"), ("/", "filesystem root"),
    ("~", "home directory"),
])
def test_dangerous_outputs_are_refused(exported, tmp_path, monkeypatch, target, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("precious", encoding="utf-8")
    result = invoke("quantize", exported, "-o", target, "--precision", "int8", "--force")
    assert_one_line_error(result, needle)
    assert (tmp_path / "mine.txt").read_text(encoding="utf-8") == "precious"


def test_output_inside_or_around_the_input_is_refused(fp32):
    before = digest(fp32)
    assert_one_line_error(invoke("quantize", fp32, "-o", fp32 / "int8", "--precision", "int8"), "lies inside the input")
    assert_one_line_error(invoke("quantize", fp32, "-o", fp32.parent, "--precision", "int8", "--force"),
                          "contains the input")
    assert digest(fp32) == before


def test_output_that_is_a_symlink_is_refused(exported, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    assert_one_line_error(invoke("quantize", exported, "-o", tmp_path / "out", "--precision", "int8"), "symbolic link")
    assert list(real.iterdir()) == []


def test_text_file_inside_the_output_is_an_input(exported, tmp_path):
    out = tmp_path / "out"
    previous_output(out)
    text = out / "keep.txt"
    text.write_text("word " * 400, encoding="utf-8")
    result = invoke("quantize", exported, "-o", out, "--precision", "int8", "--force", "--text-file", text)
    assert_one_line_error(result, "contains the input")
    assert text.is_file()


# ------------------------------------------------------------------------------------------ --force


def test_force_refuses_a_folder_of_user_files(exported, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"jpeg")
    (out / "notes").mkdir()
    result = invoke("quantize", exported, "-o", out, "--precision", "int8", "--force")
    assert_one_line_error(result, "did not write", "a.jpg", "notes", out=out)
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "notes"]


def test_force_refuses_an_onnx_edge_folder_with_an_added_file(exported, tmp_path):
    out = tmp_path / "out"
    previous_output(out)
    (out / "report.docx").write_bytes(b"mine")
    result = invoke("quantize", exported, "-o", out, "--precision", "int8", "--force")
    assert_one_line_error(result, "does not list", "report.docx", out=out)
    assert (out / "report.docx").read_bytes() == b"mine"


def test_force_replaces_an_onnx_edge_folder_and_an_empty_one(exported, tmp_path):
    out = tmp_path / "out"
    previous_output(out)
    assert_ok(invoke("quantize", exported, "-o", out, "--precision", "int8", "--force", "--json"))
    assert not (out / "keep.txt").exists() and (out / "model.onnx").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_ok(invoke("quantize", exported, "-o", empty, "--precision", "int8", "--json"))
    assert (empty / "model.onnx").is_file()


# ------------------------------------------------------------------------------- one writer, the swap


def test_a_second_writer_gets_a_clear_error(exported, tmp_path):
    from onnx_edge.staging import claim_output

    out = tmp_path / "out"
    with claim_output(out, force=False):
        # another process, as a second `onnx-edge quantize` would be
        proc = subprocess.run([sys.executable, "-c", "from onnx_edge.cli import main; main()", "quantize", str(exported), "-o", str(out),
                               "--precision", "int8"], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "another onnx-edge run is writing" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        with pytest.raises(OutputError, match="another onnx-edge run"):
            claim_output(out, force=False)  # and within one process
    with claim_output(out, force=False):  # released: free again
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no lock file left behind


def test_a_file_that_appears_during_the_run_is_kept_and_so_is_the_result(exported, tmp_path, monkeypatch):
    import onnx_edge.quantize.api as api
    from onnx_edge.quantize import QuantConfig
    from onnx_edge.runtime import load

    out = tmp_path / "out"
    real = api.write_manifest

    def write_and_meddle(folder, manifest):
        if not out.exists():  # the user saves something into OUT while the run works
            out.mkdir()
            (out / "draft.txt").write_text("mine", encoding="utf-8")
        return real(folder, manifest)

    monkeypatch.setattr(api, "write_manifest", write_and_meddle)
    with pytest.raises(OutputError, match="changed while this run was writing") as info:
        api.quantize(exported, out, QuantConfig(precision="int8", context=32, eval_windows=1))
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["draft.txt"]
    kept = Path(str(info.value).rsplit("finished result is in ", 1)[1])
    assert kept.parent == tmp_path and kept.name.startswith("out.onnx-edge-")
    load(kept).generate("Hello", chat=False, max_new_tokens=2)  # complete and loadable


def test_leftovers_of_killed_runs_are_swept(exported, tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    for kind in ("partial", "fp32"):
        junk = tmp_path / f".out.{kind}-{dead}"
        junk.mkdir()
        (junk / "model.onnx.data").write_bytes(b"\0" * 4096)
    alive = tmp_path / f".out.partial-{os.getppid()}"  # a live process's: never touched
    alive.mkdir()
    other = tmp_path / f".other.partial-{dead}"  # another output's: not ours to sweep
    other.mkdir()
    assert_ok(invoke("quantize", exported, "-o", out, "--precision", "int8", "--json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "out"])


def test_a_folder_moved_aside_by_a_killed_force_run_is_put_back(exported, tmp_path):
    out = tmp_path / "out"
    old = tmp_path / f".out.old-{_dead_pid()}"
    previous_output(old)
    result = invoke("quantize", exported, "-o", out, "--precision", "int8")
    # put back first, then refused like any non-empty output without --force
    assert_one_line_error(result, "not empty")
    assert sorted(p.name for p in out.iterdir()) == PREVIOUS and not old.exists()


def test_a_really_killed_run_leaves_nothing_a_later_run_keeps(exported, tmp_path):
    out = tmp_path / "out"
    code = ("import os, signal, onnx_edge.quantize.api as api\nfrom onnx_edge.quantize import QuantConfig\n"
            "real = api.write_manifest\n"
            "def die(folder, m):\n    real(folder, m); os.kill(os.getpid(), signal.SIGKILL)\n"
            "api.write_manifest = die\n"
            f"api.quantize({str(exported)!r}, {str(out)!r}, QuantConfig(precision='int8', context=32, eval_windows=1))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    partials = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert len(partials) == 1 and (partials[0] / PARTIAL_MARKER).exists()
    with pytest.raises(EdgeError, match="unfinished output"):  # it never looks finished
        from onnx_edge.runtime import load

        load(partials[0])
    assert_one_line_error(invoke("verify", partials[0]), "unfinished output")
    assert_one_line_error(invoke("info", partials[0]), "unfinished output")
    assert_ok(invoke("quantize", exported, "-o", out, "--precision", "int8", "--json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------------------------- written files


def test_written_files_follow_the_umask(exported, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert_ok(invoke("quantize", exported, "-o", out, "--precision", "int8", "--json"))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_quantize_copies_only_listed_files(fp32, tmp_path):
    with open(fp32 / "huge.sparse", "wb") as fh:  # unlisted: a user's file, never copied
        fh.truncate(1 << 30)
    out = tmp_path / "q"
    assert_ok(invoke("quantize", fp32, "-o", out, "--precision", "int8", "--json"))
    assert not (out / "huge.sparse").exists()
    assert_ok(invoke("verify", out))


def test_atomic_file_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import onnx_edge.staging as staging

    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")
    real = os.replace

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(staging.os, "replace", full_disk)
    with pytest.raises(OutputError, match="old file is unchanged"):
        staging.write_file_atomic(target, "new report")
    monkeypatch.setattr(staging.os, "replace", real)
    assert target.read_text(encoding="utf-8") == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    staging.write_file_atomic(target, "new report")
    assert target.read_text(encoding="utf-8") == "new report"


def test_compare_html_onto_an_input_is_refused_before_the_work(exported, tmp_path):
    before = digest(exported)
    result = invoke("compare", exported, "--no-speed", "--html", exported / "model.onnx")
    assert_one_line_error(result, "lies inside the input")
    assert digest(exported) == before
    assert_one_line_error(invoke("compare", exported, "--no-speed", "--html", ""), "empty")
