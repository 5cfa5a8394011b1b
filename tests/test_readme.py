"""README.md's command synopsis is the one scripts/readme_synopsis.py generates from the CLI (no drift)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _synopsis_module():
    spec = importlib.util.spec_from_file_location("readme_synopsis", ROOT / "scripts" / "readme_synopsis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_synopsis_matches_the_cli():
    mod = _synopsis_module()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert mod.readme_block(readme) == mod.block(), "README synopsis is stale: run python scripts/readme_synopsis.py --write"


def test_synopsis_names_every_command_and_option():
    from onnx_edge.cli import cli

    text = _synopsis_module().synopsis()
    for name, command in cli.commands.items():
        assert f"onnx-edge {name}" in text
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert opt in text, f"{name} {opt} missing from the synopsis"
