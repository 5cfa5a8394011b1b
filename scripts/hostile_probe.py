#!/usr/bin/env python3
"""A broad hostile probe of the command line: output paths, hostile JSON in every file of a folder, manifest
fields of every wrong type, hostile chat templates. Each case runs one `onnx-edge` command in-process and
must end with exit 0, or a non-zero exit and exactly one `error:` line, never a traceback; no case may
change the input folders or the user's files. Prints one line per failing case and a summary.

    .venv/bin/python scripts/hostile_probe.py            # ~400 cases on the tests' tiny llama, a few minutes

Not part of the test suite (tests/test_output_safety.py and tests/test_hostile_inputs.py hold the
representative cases); run it after changing anything that reads a folder or writes an output.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from click.testing import CliRunner  # noqa: E402

from onnx_edge.cli import cli  # noqa: E402

JSON_VALUES = {
    "list": "[]", "string": '"x"', "number": "3", "null": "null", "true": "true", "deep": "[" * 20000 + "]" * 20000,
    "empty": "", "truncated": '{"a": ', "huge-number": "1" + "0" * 5000, "object-of-junk": '{"\\u0000": {"": []}}',
}
NOT_UTF8 = b'{"a": "\xff\xfe"}'
WRONG = [None, "x", -1, 0, 10**12, 1.5, [], {}, True]
ARCH_FIELDS = ["num_layers", "num_heads", "num_kv_heads", "head_dim", "hidden_size", "intermediate_size", "vocab_size",
               "context_length", "eos_token_ids", "bos_token_id", "pad_token_id", "model_type"]
TOP_FIELDS = ["format", "schema_version", "model_file", "provider", "precision", "graph", "opset", "io", "files",
              "tokenizer", "architecture", "quantization", "validation", "provenance"]
TEMPLATES = [
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{% if true %}" * 3000 + "{% endif %}" * 3000,
    "{{ 'x' * 10**9 }}", "{{ 'x'|center(10**9) }}", "{{ ().__class__ }}", "{{ cycler.__init__.__globals__ }}",
    "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", "{{ raise_exception('no') }}",
    "{{ messages[99] }}", "{{ 1/0 }}", "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "{{",
]


def digest(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}


def reseal(folder: Path) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for rel in data["files"]:
        target = folder / rel
        if target.is_file():
            data["files"][rel] = {"sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
                                  "size": target.stat().st_size}
    path.write_text(json.dumps(data), encoding="utf-8")


class Probe:
    def __init__(self, work: Path, fp32: Path, source: Path):
        self.work, self.fp32, self.source = work, fp32, source
        self.cases, self.failures = 0, []
        self.guarded: dict[Path, dict] = {}  # the user's own files: no command may change them

    def run(self, label: str, *args, guard: tuple[Path, ...] = ()) -> None:
        """`guard`: this command's inputs (besides the user's files, always guarded), which it must not change."""
        self.cases += 1
        checked = {path: digest(path) for path in guard}
        result = CliRunner().invoke(cli, [str(a) for a in args])
        problem = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problem = f"{type(result.exception).__name__}: {str(result.exception)[:160]}"
        elif "Traceback" in result.output:
            problem = "traceback in output"
        elif result.exit_code:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            if len(errors) != 1 and result.exit_code != 2:  # 2: click's own usage error
                problem = f"exit {result.exit_code} with {len(errors)} error lines: {result.output[-300:]!r}"
        for path, before in {**self.guarded, **checked}.items():
            if digest(path) != before:
                problem = (problem or "") + f" CHANGED {path}"
        if problem:
            self.failures.append(f"{label}: {problem}")

    def folder(self, name: str) -> Path:
        dst = self.work / "cases" / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.fp32, dst)
        return dst


def path_cases(p: Probe) -> None:
    here = p.work / "paths"
    here.mkdir()
    (here / "user").mkdir()
    (here / "user" / "a.txt").write_text("mine", encoding="utf-8")
    (here / "link").symlink_to(p.fp32.parent)
    (here / "srclink").symlink_to(p.source.parent)
    (here / "sub").mkdir()
    p.guarded[here / "user"] = digest(here / "user")
    os.chdir(here)
    targets = ["", " ", ".", "..", "/", "~", str(here / "user"), str(here / "link" / p.fp32.name),
               f"{here}/sub/../../{p.fp32.parent.name}/{p.fp32.name}", str(p.fp32), str(p.fp32 / "inner"),
               str(p.fp32.parent), str(here / "srclink" / p.source.name), str(p.source), str(p.source / "x"),
               str(here / "link"), str(here / "user" / "a.txt")]
    for target, force in itertools.product(targets, (False, True)):
        flags = ["--force"] if force else []
        p.run(f"export -o {target!r} {flags}", "export", p.source, "-o", target, "--no-validate", *flags,
              guard=(p.source,))
        restore(p)
        p.run(f"quantize -o {target!r} {flags}", "quantize", p.fp32, "-o", target, "--precision", "int8", *flags,
              guard=(p.fp32,))
        restore(p)
    for target in targets:
        if target.endswith("a.txt"):
            continue  # an existing file named by --html is replaced (atomically), as `>` would
        p.run(f"compare --html {target!r}", "compare", p.fp32, "--no-speed", "--context", "16", "--eval-windows", "1",
              "--agreement-tokens", "1", "--html", target, guard=(p.fp32,))
    os.chdir(p.work)


def restore(p: Probe) -> None:
    """Put the pristine fp32 folder back after a case that was allowed to replace it (export --force onto it)."""
    if digest(p.fp32) != p.pristine:
        shutil.rmtree(p.fp32, ignore_errors=True)
        shutil.copytree(p.work / "pristine", p.fp32)


def json_cases(p: Probe) -> None:
    for name, (kind, value) in itertools.product(
            ["manifest.json", "tokenizer_config.json", "config.json", "generation_config.json", "tokenizer.json"],
            [*JSON_VALUES.items(), ("not-utf8", None)]):
        f = p.folder(f"json-{name}-{kind}")
        if value is None:
            (f / name).write_bytes(NOT_UTF8)
        else:
            (f / name).write_text(value, encoding="utf-8")
        if name != "manifest.json":
            reseal(f)
        for cmd in (("info",), ("verify",), ("generate", "Hello", "--no-chat", "--max-new-tokens", "1")):
            p.run(f"{cmd[0]} with {name}={kind}", cmd[0], f, *cmd[1:])


def manifest_cases(p: Probe) -> None:
    for where, field, value in [("arch", f, v) for f in ARCH_FIELDS for v in WRONG] + \
                               [("top", f, v) for f in TOP_FIELDS for v in WRONG]:
        f = p.folder(f"m-{where}-{field}-{json.dumps(value)}")
        path = f / "manifest.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        (data["architecture"] if where == "arch" else data)[field] = value
        path.write_text(json.dumps(data), encoding="utf-8")
        for cmd in (("verify",), ("generate", "Hello", "--no-chat", "--max-new-tokens", "1")):
            p.run(f"{cmd[0]} with {where}.{field}={value!r}", cmd[0], f, *cmd[1:])


def template_cases(p: Probe) -> None:
    for i, template in enumerate(TEMPLATES):
        f = p.folder(f"template-{i}")
        (f / "chat_template.jinja").write_text(template, encoding="utf-8")
        reseal(f)
        p.run(f"generate --chat with template {template[:40]!r}", "generate", f, "Hello", "--chat",
              "--max-new-tokens", "1")
    f = p.folder("template-bytes")
    (f / "chat_template.jinja").write_bytes(b"\xff{{ messages }}")
    reseal(f)
    p.run("generate --chat with a non-UTF-8 template", "generate", f, "Hello", "--chat", "--max-new-tokens", "1")


def main() -> int:
    from onnx_edge.export import export
    from tests.fixtures import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="hostile-probe-"))
    try:
        source = build_tiny_model("llama", work / "src" / "tiny-llama", seed=0)
        fp32 = work / "models" / "fp32"
        export(str(source), fp32)
        shutil.copytree(fp32, work / "pristine")
        p = Probe(work, fp32, source)
        p.pristine = digest(fp32)
        for section in (path_cases, json_cases, manifest_cases, template_cases):
            before = p.cases
            section(p)
            print(f"{section.__name__}: {p.cases - before} cases", file=sys.stderr)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    for line in p.failures:
        print("FAIL", line)
    print(f"{p.cases} cases, {len(p.failures)} failures")
    return 1 if p.failures else 0


if __name__ == "__main__":
    sys.exit(main())
