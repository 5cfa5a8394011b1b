"""The CLI's shared vocabulary: one meaning per option name across commands, an example in every help, the
prompt from PROMPT / -p / -f / standard input, short flags, a system message, and --json on verify."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from onnx_edge.cli import cli
from tests.cli_cases import _restore_sigterm  # noqa: F401 - autouse fixture
from tests.cli_cases import assert_ok, assert_one_line_error, invoke

# Names that mean one thing whose values are the command's own: what --json prints, the folder -o writes, the
# precision it writes, the provider it builds for or runs on, the text it evaluates on.
OWN_MEANING = {"--json", "--output", "--precision", "--provider", "--text-file", "--help"}


def _options() -> dict[str, list[tuple[str, click.Option]]]:
    by_name: dict[str, list[tuple[str, click.Option]]] = {}
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    if opt.startswith("--"):
                        by_name.setdefault(opt, []).append((name, param))
    return by_name


def test_a_shared_option_means_the_same_in_every_command():
    """--gen-tokens once meant a speed run in bench and an agreement length in compare; no name may differ."""
    shared = {name: uses for name, uses in _options().items() if len(uses) > 1 and name not in OWN_MEANING}
    assert {"--threads", "--context", "--eval-windows", "--gen-tokens", "--runs", "--force"} <= set(shared)
    for name, uses in shared.items():
        first = uses[0][1]
        for command, param in uses[1:]:
            assert (param.help, param.default, param.type.name, param.opts) == \
                (first.help, first.default, first.type.name, first.opts), f"{name} differs in {command}"


def test_provider_defaults_to_auto_everywhere():
    for name, uses in _options().items():
        if name == "--provider":
            assert {command for command, _ in uses} == {"export", "generate", "quantize", "bench", "compare"}
            assert all(param.default == "auto" and "auto" in param.type.choices for _, param in uses)


def test_threads_and_json_wherever_a_model_loads_or_a_report_prints():
    options = _options()
    assert {c for c, _ in options["--threads"]} == {"export", "generate", "quantize", "bench", "compare"}
    assert {c for c, _ in options["--json"]} == set(cli.commands)


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_help_has_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    examples = result.output.split("Examples:", 1)
    assert len(examples) == 2 and f"onnx-edge {command} " in examples[1], result.output


def _generate(model, *args, stdin: str | None = None) -> dict:
    result = CliRunner().invoke(cli, ["generate", str(model), *args, "--no-stream", "--json"], input=stdin)
    assert_ok(result)
    return json.loads(result.stdout)


def test_the_prompt_from_an_argument_a_flag_a_file_or_stdin(exported, tmp_path):
    prompt = "The capital of France is"
    file = tmp_path / "prompt.txt"
    file.write_text(prompt, encoding="utf-8")
    want = _generate(exported, prompt, "-n", "4", "--no-chat")["token_ids"]
    assert _generate(exported, "-p", prompt, "-n", "4", "--no-chat")["token_ids"] == want
    assert _generate(exported, "-f", str(file), "-n", "4", "--no-chat")["token_ids"] == want
    assert _generate(exported, "-", "-n", "4", "--no-chat", stdin=prompt)["token_ids"] == want
    assert _generate(exported, "-f", "-", "-n", "4", "--no-chat", stdin=prompt)["token_ids"] == want


def test_two_prompts_or_none_is_one_error(exported):
    assert_one_line_error(invoke("generate", exported, "Hi", "-p", "Hello"), "give the prompt once")
    assert_one_line_error(invoke("generate", exported), "give a PROMPT, -p/--prompt or -f/--prompt-file")
    result = CliRunner().invoke(cli, ["generate", str(exported), "-", "--no-chat"], input=b"caf\xe9")
    assert_one_line_error(result, "standard input: not valid UTF-8")


def test_short_flags(exported):
    response = _generate(exported, "Hello", "-n", "3", "-t", "1", "--no-chat")
    assert 0 < response["generated_tokens"] <= 3


def test_a_system_message_goes_before_the_prompt(exported):
    plain = _generate(exported, "Hello", "-n", "2")
    with_system = _generate(exported, "Hello", "-n", "2", "-s", "You answer in one word.")
    assert with_system["prompt_tokens"] > plain["prompt_tokens"]
    assert_one_line_error(invoke("generate", exported, "Hello", "-s", "Be brief.", "--no-chat"), "--system")


def test_verify_json(exported):
    result = invoke("verify", exported, "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["files"] >= 3 and data["path"] == str(exported)


@pytest.mark.parametrize("command", [["quantize", "-o", "{out}", "--precision", "int8"],
                                     ["export", "-o", "{out}"], ["bench"], ["compare", "--no-speed"]])
def test_bad_threads_name_the_flag_before_any_work(exported, tmp_path, command):
    args = [a.format(out=tmp_path / "out") for a in command]
    source = "smollm2-135m-instruct" if args[0] == "export" else str(exported)
    result = invoke(args[0], source, *args[1:], "-t", "0")
    assert_one_line_error(result, "--threads")
    assert not (tmp_path / "out").exists()
