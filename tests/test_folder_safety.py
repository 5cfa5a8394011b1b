"""Hostile folders, part two (part one, external data and model.onnx: test_security.py): links, FIFOs and
stray files among the folder's own entries, manifests that contradict their graph, a tokenizer larger than the
model, and no pickle or remote code anywhere in the source."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from onnx_edge.errors import EdgeError, IntegrityError

from tests.hostile import _private_hash_cache, folder, no_onnxruntime, secret  # noqa: F401 - fixtures, by name
from tests.hostile import ROOT, SECRET, SOURCE_DIRS, craft, refused, reseal, sha256

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlink/hardlink/FIFO crafting needs POSIX")


# --------------------------------------------------------------------------------------------------
# the folder's own entries
# --------------------------------------------------------------------------------------------------


def _listed_symlink_outside(f, t):
    shutil.copy(f / "tokenizer.json", t / "tok.json")
    (f / "tokenizer.json").unlink()
    (f / "tokenizer.json").symlink_to(t / "tok.json")
    reseal(f)


def _listed_symlink_inside(f, t):
    os.replace(f / "tokenizer.json", f / "tok2.json")
    (f / "tokenizer.json").symlink_to("tok2.json")
    reseal(f, add=("tok2.json",))


def _listed_in_symlinked_folder(f, t):
    (t / "tokdir").mkdir()
    os.replace(f / "tokenizer.json", t / "tokdir" / "tokenizer.json")
    (f / "tok").symlink_to(t / "tokdir", target_is_directory=True)
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["tok/tokenizer.json"] = data["files"].pop("tokenizer.json")
    data["tokenizer"]["file"] = "tok/tokenizer.json"
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _listed_hardlink_inside(f, t):
    os.link(f / "tokenizer.json", f / "tok2.json")
    reseal(f, add=("tok2.json",))


def _listed_hardlink_outside(f, t):
    os.link(f / "config.json", t / "elsewhere.json")


def _listed_fifo(f, t):
    (f / "generation_config.json").unlink()
    os.mkfifo(f / "generation_config.json")


def _listed_folder(f, t):
    (f / "generation_config.json").unlink()
    (f / "generation_config.json").mkdir()


def _manifest_symlink(f, t):
    os.replace(f / "manifest.json", t / "manifest.json")
    (f / "manifest.json").symlink_to(t / "manifest.json")


def _manifest_hardlink(f, t):
    os.link(f / "manifest.json", t / "manifest-copy.json")


def _unlisted_symlink(f, t):
    (f / "notes.txt").symlink_to(t / "secret.bin")  # quantize copies unlisted files into its output


def _unlisted_symlink_folder(f, t):
    (f / "extras").symlink_to(t, target_is_directory=True)


def _unlisted_hardlink(f, t):
    os.link(t / "secret.bin", f / "notes.txt")


def _unlisted_fifo(f, t):
    os.mkfifo(f / "notes.fifo")


def _unlisted_chat_template(f, t):
    reseal(f, drop=("chat_template.jinja",))


def _unlisted_tokenizer_config(f, t):
    reseal(f, drop=("tokenizer_config.json",))


def _model_file_parent(f, t):
    shutil.copy(f / "model.onnx", t / "model.onnx")
    reseal(f, model_file="../model.onnx")


def _model_file_absolute(f, t):
    reseal(f, model_file=str(f / "model.onnx"))


def _model_file_unlisted(f, t):
    reseal(f, drop=("model.onnx",))


def _tokenizer_file_parent(f, t):
    shutil.copy(f / "tokenizer.json", t / "tokenizer.json")
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["tokenizer"]["file"] = "../tokenizer.json"
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _tokenizer_file_absolute(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["tokenizer"]["file"] = "/etc/hostname"
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _tokenizer_file_not_string(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["tokenizer"]["file"] = 7
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _files_absolute(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["/etc/hostname"] = {"sha256": "0" * 64, "size": os.stat("/etc/hostname").st_size}
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _files_nested_dotdot(f, t):
    (f / "sub").mkdir()
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["sub/../../secret.bin"] = {"sha256": sha256(t / "secret.bin"), "size": len(SECRET)}
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _files_backslash(f, t):
    data = json.loads((f / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["..\\secret.bin"] = {"sha256": sha256(t / "secret.bin"), "size": len(SECRET)}
    (f / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


FOLDER_CASES = {
    "listed-symlink-to-outside": (_listed_symlink_outside, ["tokenizer.json", "symlink"]),
    "listed-symlink-to-inside": (_listed_symlink_inside, ["tokenizer.json", "symlink"]),
    "listed-in-symlinked-folder": (_listed_in_symlinked_folder, ["tok/tokenizer.json", "symlink"]),
    "listed-hardlink-inside": (_listed_hardlink_inside, ["hardlink"]),
    "listed-hardlink-outside": (_listed_hardlink_outside, ["config.json", "hardlink"]),
    "listed-fifo": (_listed_fifo, ["generation_config.json", "not a regular file"]),
    "listed-folder": (_listed_folder, ["generation_config.json", "not a regular file"]),
    "manifest-symlink": (_manifest_symlink, ["manifest.json", "symlink"]),
    "manifest-hardlink": (_manifest_hardlink, ["manifest.json", "hardlink"]),
    "unlisted-symlink": (_unlisted_symlink, ["notes.txt", "symlink"]),
    "unlisted-symlinked-folder": (_unlisted_symlink_folder, ["extras", "symlink"]),
    "unlisted-hardlink": (_unlisted_hardlink, ["notes.txt", "hardlink"]),
    "unlisted-fifo": (_unlisted_fifo, ["notes.fifo", "not a regular file"]),
    "unlisted-chat-template": (_unlisted_chat_template, ["chat_template.jinja", "not listed"]),
    "unlisted-tokenizer-config": (_unlisted_tokenizer_config, ["tokenizer_config.json", "not listed"]),
    "model-file-parent": (_model_file_parent, ["../model.onnx"]),
    "model-file-absolute": (_model_file_absolute, ["model_file"]),
    "model-file-unlisted": (_model_file_unlisted, ["model.onnx", "not listed"]),
    "tokenizer-file-parent": (_tokenizer_file_parent, ["../tokenizer.json"]),
    "tokenizer-file-absolute": (_tokenizer_file_absolute, ["/etc/hostname"]),
    "tokenizer-file-not-string": (_tokenizer_file_not_string, ["tokenizer.file", "not a file name"]),
    "files-absolute": (_files_absolute, ["/etc/hostname", "outside the model folder"]),
    "files-nested-dotdot": (_files_nested_dotdot, ["sub/../../secret.bin", "outside the model folder"]),
    "files-backslash": (_files_backslash, ["secret.bin", "outside the model folder"]),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_folder_entries_refused(case, folder, secret, no_onnxruntime):
    setup, needles = FOLDER_CASES[case]
    setup(folder, folder.parent)
    refused(folder, *needles)


def _edit(folder: Path, section: str | None, **changes) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    (data if section is None else data[section]).update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


# A manifest can pass Manifest.from_dict and the file checks yet disagree with its graph: onnxruntime would
# then fail mid-generation with its own error. load() compares them first.
CONTRACT_CASES = {
    "io-name-not-in-graph": (("io", {"logits": "scores"}), "'scores' is not an output"),
    "io-input-not-in-graph": (("io", {"input_ids": "tokens"}), "'tokens' is not an input"),
    "io-template-without-i": (("io", {"past_key": "past.key"}), "collide"),
    "io-template-other-field": (("io", {"present_key": "present.{j}.key"}), "may only use {i}"),
    "io-not-string": (("io", {"past_value": {"a": 1}}), "io.past_value"),
    "io-position-ids-dropped": (("io", {"position_ids": None}), "never be fed"),
    "io-kv-mode-unknown": (("io", {"kv_mode": "paged"}), "kv_mode"),
    "io-kv-layout-other": (("io", {"kv_layout": "batch,seq,kv_heads,head_dim"}), "kv_layout"),
    "io-kv-dtype-mismatch": (("io", {"kv_dtype": "float16"}), "element type"),
    "io-kv-dtype-unknown": (("io", {"kv_dtype": "int4"}), "kv_dtype"),
    "arch-kv-heads-mismatch": (("architecture", {"num_kv_heads": 3}), "num_kv_heads"),
    "arch-head-dim-mismatch": (("architecture", {"head_dim": 8}), "head_dim"),
    "arch-vocab-mismatch": (("architecture", {"vocab_size": 1024}), "vocab_size"),
    "arch-more-layers": (("architecture", {"num_layers": 3}), "'past_key_values.2.key' is not an input"),
    "arch-pad-out-of-range": (("architecture", {"pad_token_id": 100000}), "pad_token_id"),
    "arch-bos-not-int": (("architecture", {"bos_token_id": "1"}), "bos_token_id"),
    "arch-context-past-rotary-table": (("architecture", {"context_length": 100000}), "position table"),
}


@pytest.mark.parametrize("case", list(CONTRACT_CASES))
def test_manifest_contradicting_graph(case, folder, no_onnxruntime):
    from onnx_edge.errors import ManifestError
    from onnx_edge.runtime import load

    (section, changes), needle = CONTRACT_CASES[case]
    _edit(folder, section, **changes)
    with pytest.raises(EdgeError) as info:
        load(folder, provider="cpu")
    assert info.type is ManifestError, f"{info.type.__name__}: {info.value}"
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_tokenizer_larger_than_model_vocabulary(folder, no_onnxruntime):
    from onnx_edge.errors import ManifestError
    from onnx_edge.runtime import load

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"].append({"id": 4000, "content": "<|extra|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    reseal(folder)
    with pytest.raises(ManifestError, match=r"tokenizer has \d+ ids but the model only 512"):
        load(folder, provider="cpu")


def test_cli_verify_refuses_with_one_line(folder, secret):
    from click.testing import CliRunner

    from onnx_edge.cli import cli

    craft(folder, [("location", "../secret.bin"), ("offset", "0"), ("length", "8192")], "constant")
    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and "../secret.bin" in result.stderr
    assert "Traceback" not in result.output


def test_quantize_refuses_before_onnx_reads_or_writes(folder, secret, tmp_path):
    """CVE-2025-51480 is the write side: a tool that loads and re-saves a model writes to its locations.
    quantize re-saves models, so a crafted one must be refused before onnx.load touches it."""
    import onnx

    from onnx_edge.quantize import QuantConfig, quantize

    craft(folder, [("location", "../secret.bin"), ("offset", "0"), ("length", "8192")], "constant")
    before = os.stat(secret)
    called = []
    real_load = onnx.load

    def spy(*args, **kwargs):
        called.append(args)
        return real_load(*args, **kwargs)

    onnx.load, onnx.load_model = spy, spy
    try:
        with pytest.raises(IntegrityError, match="secret.bin"):
            quantize(folder, tmp_path / "q", QuantConfig(precision="int8"))
    finally:
        onnx.load, onnx.load_model = real_load, real_load
    assert called == []
    assert not (tmp_path / "q").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".q.")] == []
    after = os.stat(secret)
    assert secret.read_bytes() == SECRET and after.st_mtime_ns == before.st_mtime_ns


def test_symlinked_model_folder_itself_is_fine(folder, tmp_path):
    """The path the user gives may be a link to the folder (their own choice); links inside it are not."""
    from onnx_edge.runtime import load

    link = tmp_path / "link-to-model"
    link.symlink_to(folder, target_is_directory=True)
    model = load(link, provider="cpu")
    assert model.generate("hello", chat=False, max_new_tokens=2).generated_tokens <= 2


# --------------------------------------------------------------------------------------------------
# no code execution: pickle, remote code
# --------------------------------------------------------------------------------------------------


def _sources():
    for top in SOURCE_DIRS:
        yield from sorted((ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("pattern", [r"torch\.load\s*\(", r"\bpickle\.", r"import\s+pickle", r"from\s+pickle",
                                     r"trust_remote_code\s*=\s*True", r"allow_pickle\s*=\s*True",
                                     r"weights_only\s*=\s*False", r"\bdill\b", r"\bcloudpickle\b", r"joblib\.load",
                                     r"import\s+marshal", r"import\s+shelve"])
def test_no_unsafe_deserialization_in_source(pattern):
    hits = []
    for path in _sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


def test_every_from_pretrained_refuses_remote_code():
    """Each Hugging Face loader call passes trust_remote_code=False explicitly (a literal, not a variable)."""
    calls = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "from_pretrained" and "scripts" not in path.parts:
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value is False
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no from_pretrained call found: the test looks in the wrong place"
    assert [c for c, ok in calls if not ok] == []


def test_auto_map_configs_are_refused_by_tests():
    """trust_remote_code stays off: an auto_map config (remote code) is refused by export, and tests say so."""
    text = (ROOT / "tests" / "test_errors.py").read_text(encoding="utf-8")
    assert '("auto-map", _auto_map, UnsupportedModelError)' in text
    assert '"auto-map": _src_auto_map' in (ROOT / "tests" / "test_cli.py").read_text(encoding="utf-8")


def test_runtime_never_unpickles_numpy():
    """The runtime reads numbers only through onnxruntime and tokenizers; no np.load anywhere in it."""
    for path in (ROOT / "runtime").glob("*.py"):
        assert "np.load(" not in path.read_text(encoding="utf-8"), path.name
