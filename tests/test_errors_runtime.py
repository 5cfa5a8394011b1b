"""Python API errors, runtime side: manifests and integrity, providers and generation, each raising its
specific `onnx_edge.errors` type in one line. The export side: test_errors.py.
"""

from __future__ import annotations

import json
import shutil

import pytest

from onnx_edge.errors import (
    GenerationError,
    IntegrityError,
    ManifestError,
    ProviderError,
)

from tests.error_cases import edge_model  # noqa: F401 - fixtures, by name
from tests.error_cases import edit_json, raises_exactly


# --------------------------------------------------------------------------------------------------
# manifest and integrity
# --------------------------------------------------------------------------------------------------


def _no_manifest(folder):
    (folder / "manifest.json").unlink()


def _schema_9(folder):
    edit_json(folder / "manifest.json", schema_version="9.0")


def _no_schema(folder):
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del data["schema_version"]
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def _malformed_json(folder):
    (folder / "manifest.json").write_text("{not json", encoding="utf-8")


def _not_utf8(folder):
    (folder / "manifest.json").write_bytes(b"\xff\xfe\x00{")


def _json_list(folder):
    (folder / "manifest.json").write_text("[]", encoding="utf-8")


def _other_format(folder):
    edit_json(folder / "manifest.json", format="gguf")


def _unknown_field_type(folder):
    edit_json(folder / "manifest.json", files={"model.onnx": {"sha256": "0" * 64}})  # size missing


def _no_architecture(folder):
    edit_json(folder / "manifest.json", architecture={"model_type": "llama"})


def _appended_byte(folder):
    with open(folder / "model.onnx.data", "ab") as fh:
        fh.write(b"\0")


def _flipped_byte(folder):
    data = bytearray((folder / "model.onnx.data").read_bytes())
    data[100] ^= 0x01
    (folder / "model.onnx.data").write_bytes(bytes(data))


def _deleted_file(folder):
    (folder / "model.onnx").unlink()


def _path_escape(folder):
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    data["files"]["../outside.txt"] = {"sha256": "0" * 64, "size": 1}
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


MANIFEST_CASES = [
    ("no-manifest", _no_manifest, ManifestError),
    ("schema-9.0", _schema_9, ManifestError),
    ("no-schema", _no_schema, ManifestError),
    ("malformed-json", _malformed_json, ManifestError),
    ("not-utf8", _not_utf8, ManifestError),
    ("json-list", _json_list, ManifestError),
    ("other-format", _other_format, ManifestError),
    ("file-entry-lacks-size", _unknown_field_type, ManifestError),
    ("architecture-lacks-num-layers", _no_architecture, ManifestError),
    ("appended-byte", _appended_byte, IntegrityError),
    ("flipped-byte", _flipped_byte, IntegrityError),
    ("deleted-file", _deleted_file, IntegrityError),
    ("path-escape", _path_escape, IntegrityError),
]


@pytest.mark.parametrize("name, tamper, expected", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_load_error_types(name, tamper, expected, model_copy):
    from onnx_edge.runtime import load

    tamper(model_copy)
    raises_exactly(expected, load, model_copy, provider="cpu")


@pytest.mark.parametrize("name, tamper, expected", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_verify_error_types(name, tamper, expected, model_copy):
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files

    tamper(model_copy)

    def verify():
        verify_files(model_copy, read_manifest(model_copy), check_hashes=True)

    raises_exactly(expected, verify)


def test_load_without_hash_check_misses_same_size_change(model_copy):
    # verify=False checks sizes only: a same-size change is (by design) not detected, a resize is.
    from onnx_edge.runtime import load

    _flipped_byte(model_copy)
    load(model_copy, provider="cpu", verify=False)
    _appended_byte(model_copy)
    raises_exactly(IntegrityError, load, model_copy, provider="cpu", verify=False)


def test_missing_and_file_paths(tmp_path):
    from onnx_edge.manifest import read_manifest

    raises_exactly(ManifestError, read_manifest, tmp_path / "nothing")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    raises_exactly(ManifestError, read_manifest, tmp_path / "file")


# Malformed manifests that pass Manifest.from_dict's checks but crash later with a plain Python exception.
BAD_SHAPES = {
    "files-null": {"files": None},
    "files-list": {"files": ["model.onnx"]},
    "io-string": {"io": "x"},
    "tokenizer-null": {"tokenizer": None},
    "architecture-incomplete": {"architecture": {"num_layers": 2}},
}


@pytest.mark.parametrize("change", list(BAD_SHAPES))
def test_malformed_manifest_fields_are_manifest_errors(change, model_copy):
    from onnx_edge.runtime import load

    edit_json(model_copy / "manifest.json", **BAD_SHAPES[change])
    raises_exactly(ManifestError, load, model_copy, provider="cpu")


# --------------------------------------------------------------------------------------------------
# providers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider, needle", [("cuda", "onnx-edge-kit[cuda]"), ("dml", "onnx-edge-kit[directml]"),
                                              ("tpu", "unknown provider")])
def test_provider_errors(exported, provider, needle):
    import onnxruntime

    from onnx_edge.runtime import load
    from onnx_edge.targets import TARGETS

    if provider in TARGETS and TARGETS[provider].ort_name in onnxruntime.get_available_providers():
        pytest.skip(f"this onnxruntime build has {provider}")
    err = raises_exactly(ProviderError, load, exported, provider=provider)
    assert needle in str(err)


def test_onnxruntime_missing(monkeypatch):
    import sys

    from onnx_edge.runtime.providers import resolve_provider

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    err = raises_exactly(ProviderError, resolve_provider, "cpu")
    assert "onnx-edge-kit[cpu]" in str(err)


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"temperature": True},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"top_k": 2.5},
        {"min_p": 1.0},
        {"min_p": -0.1},
        {"repetition_penalty": 0.0},
        {"repetition_penalty": -1.0},
        {"seed": -1},
        {"seed": "7"},
    ],
    ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_sampling_errors(edge_model, kwargs):
    from onnx_edge.runtime import SamplingParams

    raises_exactly(GenerationError, SamplingParams, **kwargs)
    raises_exactly(GenerationError, edge_model.generate, "hello", max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("max_new_tokens", [0, -1, 2.0, True, None])
def test_max_new_tokens_errors(edge_model, max_new_tokens):
    raises_exactly(GenerationError, edge_model.generate, "hello", max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("prompt", ["", None])
def test_empty_prompt(edge_model, prompt):
    raises_exactly(GenerationError, edge_model.generate, prompt, chat=False)
    raises_exactly(GenerationError, edge_model.generate, prompt)


def test_prompt_longer_than_context(edge_model):
    prompt = "the quick brown fox jumps over the lazy dog " * 120
    err = raises_exactly(GenerationError, edge_model.generate, prompt, chat=False, max_new_tokens=4)
    assert "context window is 256" in str(err)
    raises_exactly(GenerationError, lambda: list(edge_model.stream(prompt, chat=False)))
    response = edge_model.generate(prompt, chat=False, max_new_tokens=4, truncate=True)
    assert response.prompt_tokens == 255 and response.generated_tokens <= 1


def test_batch_errors(edge_model):
    raises_exactly(GenerationError, edge_model.generate_batch, [])
    raises_exactly(GenerationError, edge_model.generate_batch, ["hello", ""], chat=False)


def test_chat_without_template(exported, tmp_path):
    from onnx_edge.runtime import load

    folder = tmp_path / "no-template"
    shutil.copytree(exported, folder)
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    (folder / "chat_template.jinja").unlink()
    del data["files"]["chat_template.jinja"]
    data["tokenizer"]["chat_template"] = None
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    model = load(folder, provider="cpu")
    if model.chat_template is not None:
        pytest.skip("the chat template also lives elsewhere in this tokenizer_config.json")
    raises_exactly(GenerationError, model.generate, "hello", chat=True)
    assert model.generate("hello", max_new_tokens=2).generated_tokens <= 2  # chat=None -> plain prompt


def test_export_onto_its_own_source_is_refused(tiny_models, tmp_path):
    """`export SRC -o SRC --force` once deleted the source weights."""
    import shutil

    from onnx_edge.errors import OutputError
    from onnx_edge.export import export

    src = tmp_path / "src"
    shutil.copytree(tiny_models("llama"), src)
    before = sorted(p.name for p in src.iterdir())
    for out, says in ((src, "is the input"), (tmp_path, "contains the input")):
        with pytest.raises(OutputError, match=says):
            export(str(src), out, force=True)
    assert sorted(p.name for p in src.iterdir()) == before
