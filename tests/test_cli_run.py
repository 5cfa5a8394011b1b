"""The `onnx-edge` command line, part two: generate, info and verify, with the same one-line-error rule for
every user mistake (part one, help and export: test_cli.py).
"""

from __future__ import annotations

import json

import pytest

from tests.cli_cases import _restore_sigterm  # noqa: F401 - autouse fixture
from tests.cli_cases import RESPONSE_KEYS, invoke, assert_ok, assert_one_line_error, edit_json, generate_json


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
        ("--temperature", "-1", "--temperature"),
        ("--temperature", "nan", "--temperature"),
        ("--top-p", "0", "--top-p"),
        ("--top-p", "1.5", "--top-p"),
        ("--top-k", "-1", "--top-k"),
        ("--min-p", "1", "--min-p"),
        ("--max-new-tokens", "0", "--max-new-tokens"),
        ("--max-new-tokens", "-3", "--max-new-tokens"),
        ("--repetition-penalty", "0", "--repetition-penalty"),
        ("--seed", "-1", "--seed"),
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


@pytest.mark.parametrize("file_type, said", [("Q4_1", True), ("Q8_0", True), ("F16", False), (None, False)])
def test_info_says_when_fp32_weights_are_a_dequantized_gguf(exported, tmp_path, file_type, said):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    edit_json(folder / "manifest.json", provenance=dict(manifest["provenance"], gguf_file_type=file_type))
    result = invoke("info", folder)
    assert_ok(result)
    line = f"weights       from a {file_type} GGUF: the fp32 weights are its blocks dequantized"
    assert (line in result.stdout) == said, result.stdout


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
