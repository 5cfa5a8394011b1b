"""The runtime never imports torch, transformers, optimum, export or quantize: proven by running
load + generate + the CLI in a subprocess where those imports raise."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "transformers", "optimum", "onnx_edge.export", "onnx_edge.quantize", "onnxscript", "gguf")

BLOCKER = f"""
import sys, importlib.abc
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked in the torch-free test: " + name)
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=300)


def test_blocker_really_blocks():
    res = _run("import torch")
    assert res.returncode != 0 and "blocked in the torch-free test" in res.stderr


def test_load_generate_stream_pipeline_without_torch(exported_models):
    folder = exported_models("llama")
    code = f"""
import json, sys
from onnx_edge.runtime import load, pipeline
m = load({str(folder)!r}, provider="cpu")
r = m.generate("Hello", chat=False, max_new_tokens=5)
s = "".join(c.text for c in m.stream("Hello", chat=False, max_new_tokens=5))
p = pipeline("text-generation", model={str(folder)!r}, provider="cpu")("Hello", max_new_tokens=5)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "transformers", "optimum"))
print(json.dumps({{"text": r.text, "stream": s, "pipe": p[0]["generated_text"], "leaked": leaked}}))
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []
    assert out["stream"] == out["text"] and out["pipe"] == "Hello" + out["text"]


def test_cli_generate_without_torch(exported_models):
    folder = exported_models("llama")
    code = f"""
import sys
from onnx_edge.cli import cli
sys.exit(cli.main(["generate", {str(folder)!r}, "Hello", "--no-chat", "--max-new-tokens", "4", "--json",
                   "--provider", "cpu"], standalone_mode=False))
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["generated_tokens"] <= 4


@pytest.mark.parametrize("folder", ["runtime", "models"])
def test_no_forbidden_imports_in_source(folder):
    """Static check too, so an import inside a rarely-run branch is caught."""
    bad = []
    for path in (ROOT / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if any(n == b or n.startswith(b + ".") for b in BLOCKED)]
    assert bad == []
