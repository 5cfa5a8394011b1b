"""Hostile but self-consistent folders (hashes recomputed) and odd user input: each ends as one `error:` line
on the command line and an EdgeError subclass in the API, in bounded time and memory, never a traceback.
Folder cases run `info`, `verify` and `generate` (and `load`); input cases the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_edge.errors import EdgeError
from tests.cli_cases import assert_ok, assert_one_line_error, invoke
from tests.hostile import _private_hash_cache, folder  # noqa: F401 - fixtures, by name
from tests.hostile import reseal

DEEP = 20000  # far past Python's recursion limit


def _deep_json() -> str:
    return "[" * DEEP + "]" * DEEP


def _edit_manifest_text(folder: Path, fn) -> None:
    path = folder / "manifest.json"
    path.write_text(fn(path.read_text(encoding="utf-8")), encoding="utf-8")


def _every_command_refuses(folder: Path, *needles: str, strict: tuple[str, ...] = ("generate",)) -> None:
    """`load` raises an EdgeError; the commands in `strict` fail with one `error:` line naming `needles`; the
    others (info reads only the manifest, verify only hashes) either succeed or fail the same way."""
    from onnx_edge.runtime import load

    for args in (("info", folder), ("verify", folder), ("generate", folder, "Hello", "--no-chat", "--max-new-tokens", "2")):
        result = invoke(*args)
        if args[0] in strict or result.exit_code:
            assert_one_line_error(result, *needles)
        else:
            assert_ok(result)
    with pytest.raises(EdgeError):
        load(folder, provider="cpu")


# ---------------------------------------------------------------------------------- hostile folders


@pytest.mark.parametrize("value", [[], "a string", 3])
def test_tokenizer_config_of_the_wrong_json_type(folder, value):
    (folder / "tokenizer_config.json").write_text(json.dumps(value), encoding="utf-8")
    reseal(folder)
    _every_command_refuses(folder, "tokenizer_config.json")


@pytest.mark.parametrize("name", ["manifest.json", "tokenizer_config.json"])
def test_json_nested_thousands_deep(folder, name):
    if name == "manifest.json":
        _edit_manifest_text(folder, lambda t: t.replace('"provenance": {', f'"deep": {_deep_json()}, "provenance": {{', 1))
    else:
        (folder / name).write_text(_deep_json(), encoding="utf-8")
        reseal(folder)
    _every_command_refuses(folder, name, "nested",
                           strict=("info", "verify", "generate") if name == "manifest.json" else ("generate",))


@pytest.mark.parametrize("name", ["config.json", "generation_config.json"])
def test_deep_json_in_files_the_runtime_only_hashes(folder, name):
    (folder / name).write_text(_deep_json(), encoding="utf-8")
    reseal(folder)
    for args in (("info", folder), ("verify", folder), ("generate", folder, "Hello", "--no-chat", "--max-new-tokens", "2")):
        result = invoke(*args)
        if result.exit_code:
            assert_one_line_error(result, name)
        else:
            assert_ok(result)


def test_chat_template_that_is_not_utf8(folder):
    (folder / "chat_template.jinja").write_bytes(b"{{ messages }}\xff\xfe")
    reseal(folder)
    result = invoke("generate", folder, "Hello", "--no-chat", "--max-new-tokens", "2")
    assert_ok(result)  # --no-chat never reads the template
    assert_one_line_error(invoke("generate", folder, "Hello", "--chat", "--max-new-tokens", "2"), "chat_template.jinja",
                          "UTF-8")


@pytest.mark.parametrize("template, needle", [
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "too deep"),
    ("{% if true %}" * 3000 + "x" + "{% endif %}" * 3000, "too deep"),
    ("{{ 'x' * 1000000000 }}", "too large"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}", "refused"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i %}{% endfor %}{% endfor %}", "longer than"),
    ("{{ 'x'|center(1000000000) }}", "width"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     "too large"),
])
def test_hostile_templates_are_bounded(folder, template, needle):
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    reseal(folder)
    proc = subprocess.run([sys.executable, "-c", "from onnx_edge.cli import main; main()", "generate", str(folder),
                           "Hello", "--chat", "--max-new-tokens", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]


def test_tokenizer_panic_becomes_an_edge_error(folder):
    from onnx_edge.runtime import load

    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    # A Split pre-tokenizer whose regex the tokenizer's engine gives up on (catastrophic backtracking).
    tok["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a|a?)+b|(a+)+c"}, "behavior": "Isolated",
                            "invert": False}
    (folder / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    reseal(folder)
    model = load(folder, provider="cpu")
    try:
        model.generate("a" * 5000 + "!", chat=False, max_new_tokens=1)
    except EdgeError:
        pass  # the regex engine gave up: reported as one of ours
    except BaseException as exc:  # PanicException derives from BaseException
        pytest.fail(f"{type(exc).__name__} escaped: {exc}")


@pytest.mark.parametrize("value", [3_000_000, 10**12])
def test_huge_manifest_numbers_fail_fast(folder, value):
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["architecture"]["num_layers"] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", "from onnx_edge.cli import main; main()", "verify", str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "num_layers" in proc.stderr, proc.stderr


def test_gpt2_context_longer_than_its_position_table(exported_models, tmp_path):
    import shutil

    folder = tmp_path / "gpt2"
    shutil.copytree(exported_models("gpt2"), folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["architecture"]["context_length"] *= 4
    path.write_text(json.dumps(data), encoding="utf-8")
    _every_command_refuses(folder, "context_length", "position", strict=("verify", "generate"))


def test_nan_weights_under_sampling_name_the_cause(folder):
    from onnx_edge.runtime import load

    data = folder / "model.onnx.data"
    data.write_bytes(np.full(data.stat().st_size // 4, np.nan, dtype=np.float32).tobytes())  # broken weights
    reseal(folder)
    model = load(folder, provider="cpu")
    for kwargs in (dict(temperature=0.8, seed=1), dict(temperature=0.0)):
        with pytest.raises(EdgeError, match="NaN logits"):
            model.generate("Hello", chat=False, max_new_tokens=3, **kwargs)
    assert_one_line_error(invoke("generate", folder, "Hello", "--no-chat", "--max-new-tokens", "2"), "NaN")


def test_info_on_partial_records(folder):
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["validation"] = {"passed": True}  # no max_abs_diff
    data["precision"] = "int8"
    data["quantization"] = {"config": {"precision": "int8", "scheme": "weight_only"}, "size_mb": {"before": 1.0}}
    path.write_text(json.dumps(data), encoding="utf-8")
    assert_ok(invoke("info", folder))
    assert_ok(invoke("info", folder, "--json"))


# ------------------------------------------------------------------------------------------ user input


def test_prompt_that_is_not_utf8(exported):
    proc = subprocess.run([sys.executable.encode(), b"-c", b"from onnx_edge.cli import main; main()", b"generate",
                           str(exported).encode(), b"caf\xe9 \xff", b"--no-chat", b"--max-new-tokens", b"2"],
                          capture_output=True, timeout=120)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1 and "Traceback" not in stderr and "UTF-8" in stderr, stderr


def test_lone_surrogate_through_the_api(exported):
    from onnx_edge.runtime import load

    with pytest.raises(EdgeError, match="UTF-8"):
        load(exported, provider="cpu").generate("bad \udc80 text", chat=False, max_new_tokens=1)


@pytest.mark.parametrize("redirect", ["full", "closed-pipe", "closed"])
def test_stdout_write_errors(exported, redirect):
    cmd = f"{sys.executable} -c 'from onnx_edge.cli import main; main()' info {exported}"
    shell = {"full": f"{cmd} > /dev/full", "closed-pipe": f"{cmd} | true", "closed": f"{cmd} >&-"}[redirect]
    proc = subprocess.run(["bash", "-c", shell + "; echo rc=${PIPESTATUS[0]} >&2"], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    rc = int(proc.stderr.strip().rsplit("rc=", 1)[1])
    assert rc != 0, proc.stderr
    if redirect != "closed-pipe":
        assert "error:" in proc.stderr, proc.stderr


def test_stop_as_a_string_is_one_stop_string(exported):
    from onnx_edge.runtime import load

    model = load(exported, provider="cpu")
    model.eos_ids = set()
    free = model.generate("Hello", chat=False, max_new_tokens=12)
    char = free.text.strip()[:1]
    if not char:
        pytest.skip("no text generated")
    one = model.generate("Hello", chat=False, max_new_tokens=12, stop=char + "\u2603never")
    assert one.text == free.text  # the whole string never appears; its first character must not stop it


@pytest.mark.parametrize("kwargs, needle", [
    (dict(stop=[1]), "stop"),
    (dict(stop=["ok", None]), "stop"),
    (dict(threads="two"), "threads"),
    (dict(threads=10**6), "threads"),
    (dict(threads=0), "threads"),
])
def test_bad_api_values_are_generation_errors(exported, kwargs, needle):
    from onnx_edge.runtime import load

    if "threads" in kwargs:
        with pytest.raises(EdgeError, match=needle):
            load(exported, provider="cpu", **kwargs)
        return
    with pytest.raises(EdgeError, match=needle):
        load(exported, provider="cpu").generate("Hello", chat=False, max_new_tokens=2, **kwargs)


def test_generate_batch_refuses_a_string(exported):
    from onnx_edge.runtime import load

    with pytest.raises(EdgeError, match="list"):
        load(exported, provider="cpu").generate_batch("hello", chat=False, max_new_tokens=2)


def test_threads_flag_is_validated(exported):
    assert_one_line_error(invoke("bench", exported, "--threads", "100000"), "--threads")


def test_seeded_sampled_batch_rows_equal_their_own_runs(exported):
    from onnx_edge.runtime import load

    model = load(exported, provider="cpu")
    model.eos_ids = set()
    kw = dict(chat=False, max_new_tokens=10, temperature=1.0, seed=7)
    rows = model.generate_batch(["Hello there", "Hello there", "The quick brown fox"], **kw)
    for prompt, row in zip(["Hello there", "Hello there", "The quick brown fox"], rows):
        assert row.token_ids == model.generate(prompt, **kw).token_ids


def test_compare_html_of_identical_models(exported, tmp_path):
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(exported, twin)
    html = tmp_path / "r.html"
    result = invoke("compare", exported, twin, "--no-speed", "--context", "32", "--eval-windows", "2",
                    "--agreement-tokens", "2", "--html", html)
    assert_ok(result)
    assert "<svg" in html.read_text(encoding="utf-8")


def test_model_file_in_a_subfolder_is_refused(folder):
    """onnxruntime resolves external data against the graph's own folder, the checks against the root: a
    graph in a subfolder with its own unlisted data file must never run."""
    import shutil

    sub = folder / "sub"
    sub.mkdir()
    shutil.copy(folder / "model.onnx", sub / "model.onnx")
    shutil.copy(folder / "model.onnx.data", sub / "model.onnx.data")  # unlisted: what would really run
    reseal(folder, add=("sub/model.onnx",), model_file="sub/model.onnx")
    _every_command_refuses(folder, "model_file", strict=("info", "verify", "generate"))


def test_unknown_provider_is_refused_at_load(folder):
    reseal(folder, provider="tpu")
    _every_command_refuses(folder, "provider", "tpu", strict=("info", "verify", "generate"))


def test_compare_html_of_two_exports_of_one_model(exported, tiny_models, tmp_path):
    from onnx_edge.export import export

    again = tmp_path / "again"
    export(str(tiny_models("llama")), again)  # the same model exported twice: KL ~1e-12, not 0
    html = tmp_path / "r.html"
    result = invoke("compare", exported, again, "--no-speed", "--context", "32", "--eval-windows", "2",
                    "--agreement-tokens", "2", "--html", html)
    assert_ok(result)
    assert "<svg" in html.read_text(encoding="utf-8")
