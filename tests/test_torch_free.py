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


# Each folder's allowed imports (its own package is always allowed). Third-party names are listed only where
# they are forbidden; an onnx_edge package not listed is forbidden.
RULES = {
    "runtime": ({"onnx_edge", "onnx_edge.models"},
                ("torch", "transformers", "optimum", "onnx", "onnxscript", "gguf", "llama_cpp", "safetensors")),
    "models": ({"onnx_edge"}, ("torch", "transformers", "onnx", "onnxruntime", "numpy")),
    "evaluate": ({"onnx_edge", "onnx_edge.models", "onnx_edge.runtime"},
                 ("torch", "transformers", "optimum", "onnxscript")),
    "quantize": ({"onnx_edge", "onnx_edge.models", "onnx_edge.runtime", "onnx_edge.evaluate"},
                 ("transformers", "optimum", "llama_cpp")),
    "export": ({"onnx_edge", "onnx_edge.models", "onnx_edge.runtime", "onnx_edge.evaluate", "onnx_edge.quantize"},
               ("llama_cpp",)),
}
PACKAGES = ("onnx_edge.runtime", "onnx_edge.models", "onnx_edge.evaluate", "onnx_edge.quantize", "onnx_edge.export")
# The root package's modules, cli and __init__ excepted: they tie the folders together (lazily).
ROOT_ALLOWED = ({"onnx_edge", "onnx_edge.models"}, ("torch", "transformers", "onnx", "onnxruntime", "llama_cpp"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in the file names, wherever the statement sits (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def rule_breaks(files: list[Path], own: str, allowed: set[str], forbidden: tuple[str, ...],
                base: Path = ROOT) -> list[str]:
    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    bad = []
    for path in files:
        for line, name in imported_modules(path):
            if any(within(name, f) for f in forbidden):
                bad.append(f"{path.relative_to(base)}:{line} imports {name}")
            elif within(name, "onnx_edge"):
                package = next((p for p in PACKAGES if within(name, p)), "onnx_edge")
                if package != own and package not in allowed:
                    bad.append(f"{path.relative_to(base)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("folder", sorted(RULES))
def test_dependency_rules(folder):
    """runtime imports none of evaluate, quantize, export, torch or llama_cpp; evaluate only runtime and the root
    package; quantize may use evaluate; export may use all. Checked over every import, lazy ones included."""
    allowed, forbidden = RULES[folder]
    files = sorted((ROOT / folder).glob("*.py"))
    assert files
    assert rule_breaks(files, f"onnx_edge.{folder}", allowed, forbidden) == []


def test_root_package_imports_no_folder():
    files = [p for p in sorted((ROOT / "src" / "onnx_edge").glob("*.py")) if p.name not in ("cli.py", "__init__.py")]
    assert rule_breaks(files, "onnx_edge", *ROOT_ALLOWED) == []


def test_dependency_rules_catch_a_break(tmp_path):
    """The rule check itself: a lazy import of evaluate inside a runtime function is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from onnx_edge.evaluate.bench import bench\n    import llama_cpp\n")
    (tmp_path / "ok.py").write_text("from onnx_edge.runtime.model import load\n")
    allowed, forbidden = RULES["runtime"]
    breaks = rule_breaks([bad, tmp_path / "ok.py"], "onnx_edge.runtime", allowed, forbidden, base=tmp_path)
    assert [b.split(" imports ")[1] for b in breaks] == ["onnx_edge.evaluate.bench", "llama_cpp"]
