"""Python API errors: each kind of user mistake raises its specific `onnx_edge.errors` type, and a failed
or interrupted export leaves nothing behind (no output folder, no `.NAME.partial-PID` folder) and never
harms a pre-existing output folder given with force=True.

One tiny llama is exported once per session (`exported`); tests that tamper with it work on a copy.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
from pathlib import Path

import pytest

from onnx_edge.errors import (
    EdgeError,
    GenerationError,
    IntegrityError,
    ManifestError,
    OutputError,
    ProviderError,
    SourceError,
    UnsupportedModelError,
    ValidationError,
)

# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exported(tiny_models, tmp_path_factory) -> Path:
    """The tiny llama exported once (validated). Read-only: copy before tampering."""
    from onnx_edge.export import export

    out = tmp_path_factory.mktemp("errors-exported") / "tiny-llama"
    export(str(tiny_models("llama")), out)
    return out


@pytest.fixture(scope="session")
def edge_model(exported):
    from onnx_edge.runtime import load

    return load(exported, provider="cpu")


@pytest.fixture
def model_copy(exported, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(exported, dst)
    return dst


@pytest.fixture
def source_copy(tiny_models, tmp_path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(tiny_models("llama"), dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def leftovers(out: Path) -> list[str]:
    """Hidden siblings the exporter creates next to `out` (.NAME.partial-PID, .NAME.old-PID)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def raises_exactly(exc_type, fn, *args, **kwargs):
    """Like pytest.raises, but the exception must be of exactly `exc_type` (IntegrityError is a
    ManifestError subclass, so pytest.raises(ManifestError) alone could not tell them apart)."""
    with pytest.raises(EdgeError) as info:
        fn(*args, **kwargs)
    assert info.type is exc_type, f"{info.type.__name__}: {info.value}"
    assert "\n" not in str(info.value)  # the CLI prints it as one line
    return info.value


def write_gguf(path: Path, arch: str = "llama", truncate: bool = False) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 4096])
    return path


# --------------------------------------------------------------------------------------------------
# export(): source and output mistakes
# --------------------------------------------------------------------------------------------------


def _missing(tmp_path, src, mp):
    return str(tmp_path / "no-such-model"), {}


def _no_config(tmp_path, src, mp):
    (src / "config.json").unlink()
    return str(src), {}


def _pickle_only(tmp_path, src, mp):
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    return str(src), {}


def _no_tokenizer(tmp_path, src, mp):
    (src / "tokenizer.json").unlink()
    return str(src), {}


def _malformed_config(tmp_path, src, mp):
    (src / "config.json").write_bytes(b"\xff\xfe not json")
    return str(src), {}


def _config_not_object(tmp_path, src, mp):
    (src / "config.json").write_text("[1, 2]", encoding="utf-8")
    return str(src), {}


def _auto_map(tmp_path, src, mp):
    edit_json(src / "config.json", auto_map={"AutoConfig": "configuration_x.XConfig"})
    return str(src), {}


def _falcon(tmp_path, src, mp):
    edit_json(src / "config.json", model_type="falcon")
    return str(src), {}


def _no_model_type(tmp_path, src, mp):
    edit_json(src / "config.json", model_type="")
    return str(src), {}


def _model_type_spec(tmp_path, src, mp):
    edit_json(src / "config.json", model_type="spec")  # a module in onnx_edge.models, but not an arch
    return str(src), {}


def _not_gguf(tmp_path, src, mp):
    path = tmp_path / "x.gguf"
    path.write_text("hello", encoding="utf-8")
    return str(path), {}


def _truncated_gguf(tmp_path, src, mp):
    return str(write_gguf(tmp_path / "cut.gguf", truncate=True)), {}


def _gguf_bert(tmp_path, src, mp):
    return str(write_gguf(tmp_path / "bert.gguf", arch="bert")), {}


def _plain_file(tmp_path, src, mp):
    path = tmp_path / "weights.txt"
    path.write_text("hello", encoding="utf-8")
    return str(path), {}


def _alias_not_installed(tmp_path, src, mp):
    def files(dist):
        raise md.PackageNotFoundError(dist)

    mp.setattr(md, "files", files)
    return "smollm2-135m-instruct", {}


def _alias_without_file(tmp_path, src, mp):
    mp.setattr(md, "files", lambda dist: [])
    return "smollm2-135m-instruct", {}


def _hub_offline(tmp_path, src, mp):
    import huggingface_hub.constants

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HOME", str(tmp_path / "hf-home"))
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return "nobody/nothing", {}


def _out_is_file(tmp_path, src, mp):
    (tmp_path / "out").write_text("keep", encoding="utf-8")
    return str(src), {"force": True}


def _out_not_empty(tmp_path, src, mp):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("keep", encoding="utf-8")
    return str(src), {}


def _out_parent_is_file(tmp_path, src, mp):
    (tmp_path / "parent").write_text("keep", encoding="utf-8")
    return str(src), {"output": tmp_path / "parent" / "out"}


def _bad_opset(tmp_path, src, mp):
    return str(src), {"opset": 5}


EXPORT_CASES = [
    ("missing-path", _missing, SourceError),
    ("no-config", _no_config, SourceError),
    ("pickle-only", _pickle_only, SourceError),
    ("no-tokenizer", _no_tokenizer, SourceError),
    ("malformed-config", _malformed_config, SourceError),
    ("config-not-object", _config_not_object, SourceError),
    ("not-gguf", _not_gguf, SourceError),
    ("truncated-gguf", _truncated_gguf, SourceError),
    ("plain-file", _plain_file, SourceError),
    ("alias-not-installed", _alias_not_installed, SourceError),
    ("alias-without-file", _alias_without_file, SourceError),
    ("hub-offline", _hub_offline, SourceError),
    ("auto-map", _auto_map, UnsupportedModelError),
    ("model-type-falcon", _falcon, UnsupportedModelError),
    ("model-type-empty", _no_model_type, UnsupportedModelError),
    ("model-type-spec", _model_type_spec, UnsupportedModelError),
    ("gguf-bert", _gguf_bert, UnsupportedModelError),
    ("output-is-file", _out_is_file, OutputError),
    ("output-not-empty", _out_not_empty, OutputError),
    ("output-parent-is-file", _out_parent_is_file, OutputError),
    ("bad-opset", _bad_opset, OutputError),
]


@pytest.mark.parametrize("name, setup, expected", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_export_error_types(name, setup, expected, tmp_path, source_copy, monkeypatch):
    from onnx_edge.export import export

    source, kwargs = setup(tmp_path, source_copy, monkeypatch)
    out = kwargs.pop("output", tmp_path / "out")
    before = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else None
    raises_exactly(expected, export, source, out, **kwargs)
    after = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else None
    assert after == before  # nothing created, nothing removed next to the output
    if out.is_file():
        assert out.read_text(encoding="utf-8") == "keep"
    if out.is_dir():
        assert (out / "keep.txt").read_text(encoding="utf-8") == "keep"


def _corrupt_safetensors(tmp_path, src, mp):
    (src / "model.safetensors").write_bytes(b"garbage" * 10)
    return str(src), {}


def _truncated_safetensors(tmp_path, src, mp):
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    return str(src), {}


def _model_type_number(tmp_path, src, mp):
    edit_json(src / "config.json", model_type=5)
    return str(src), {}


KNOWN_BUGS = [
    # torch_model.load_model catches OSError/ValueError/KeyError; safetensors' SafetensorError is none of them.
    ("corrupt-safetensors", _corrupt_safetensors, SourceError),
    ("truncated-safetensors", _truncated_safetensors, SourceError),
    # models.get_spec calls model_type.isidentifier() on whatever config.json holds.
    ("model-type-number", _model_type_number, UnsupportedModelError),
]


def _leaked_types():
    from safetensors import SafetensorError

    return (SafetensorError, AttributeError)


@pytest.mark.parametrize("name, setup, expected", KNOWN_BUGS, ids=[c[0] for c in KNOWN_BUGS])
def test_export_error_types_known_bugs(name, setup, expected, tmp_path, source_copy, monkeypatch):
    from onnx_edge.export import export

    source, kwargs = setup(tmp_path, source_copy, monkeypatch)
    out = tmp_path / "out"
    try:
        raises_exactly(expected, export, source, out, **kwargs)
    finally:
        assert leftovers(out) == [] and not out.exists()


# --------------------------------------------------------------------------------------------------
# export(): failures after the temp folder exists
# --------------------------------------------------------------------------------------------------


def _failed_report(*args, **kwargs):
    from onnx_edge.export.validate import ValidationReport

    return ValidationReport(prefill_tokens=4, decode_steps=3, max_abs_diff=0.5, step_max_abs_diff=[0.5],
                            tolerance=1e-4, greedy_tokens=16, greedy_match=False, passed=False)


def _interrupting_save(proto, folder):
    (folder / "model.onnx").write_bytes(b"half-written")
    raise KeyboardInterrupt


@pytest.fixture
def fail_validation(monkeypatch):
    # exporter imports `validate` from onnx_edge.export.validate inside export(), at call time,
    # so patching the module attribute takes effect.
    import onnx_edge.export.validate as validate_module

    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        return _failed_report()

    monkeypatch.setattr(validate_module, "validate", fake)
    return calls


def test_failed_validation_leaves_no_output(tiny_models, tmp_path, fail_validation):
    from onnx_edge.export import export

    out = tmp_path / "out"
    err = raises_exactly(ValidationError, export, str(tiny_models("llama")), out)
    assert fail_validation, "the patched validate() was not called"
    assert "no output written" in str(err)
    assert not out.exists()
    assert leftovers(out) == []


def test_failed_validation_keeps_forced_output(tiny_models, tmp_path, fail_validation):
    from onnx_edge.export import export

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious", encoding="utf-8")
    raises_exactly(ValidationError, export, str(tiny_models("llama")), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text(encoding="utf-8") == "precious"
    assert leftovers(out) == []


def test_no_validate_skips_validation(tiny_models, tmp_path, fail_validation):
    from onnx_edge.export import export

    manifest = export(str(tiny_models("llama")), tmp_path / "out", validate=False)
    assert manifest.validation is None
    assert not fail_validation


def test_interrupted_export_leaves_nothing(tiny_models, tmp_path, monkeypatch):
    import onnx_edge.export.exporter as exporter
    from onnx_edge.export import export

    monkeypatch.setattr(exporter, "save_model", _interrupting_save)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export(str(tiny_models("llama")), out)
    assert not out.exists()
    assert leftovers(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_interrupted_export_keeps_forced_output(tiny_models, tmp_path, monkeypatch):
    import onnx_edge.export.exporter as exporter
    from onnx_edge.export import export

    monkeypatch.setattr(exporter, "save_model", _interrupting_save)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        export(str(tiny_models("llama")), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert leftovers(out) == []


def test_error_mid_export_leaves_nothing(tiny_models, tmp_path, monkeypatch):
    import onnx_edge.export.exporter as exporter
    from onnx_edge.export import export

    def broken(proto, folder):
        (folder / "model.onnx").write_bytes(b"half-written")
        raise OSError(28, "No space left on device")  # an ordinary exception, not KeyboardInterrupt

    monkeypatch.setattr(exporter, "save_model", broken)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        export(str(tiny_models("llama")), out)
    assert not out.exists() and leftovers(out) == []


def test_failed_swap_keeps_forced_output(tiny_models, tmp_path, monkeypatch):
    import os

    import onnx_edge.staging as staging
    from onnx_edge.export import export

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious", encoding="utf-8")
    real_replace = os.replace

    def replace(src, dst):
        if ".partial-" in Path(src).name:  # the finished temp folder -> out: fail (disk full, EXDEV, ...)
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)
    with pytest.raises(OSError):
        export(str(tiny_models("llama")), out, force=True, validate=False)
    monkeypatch.undo()
    assert (out / "keep.txt").is_file(), f"output gone; left over: {leftovers(out)}"
    assert leftovers(out) == []


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
    from onnx_edge.manifest import read_manifest, verify_files

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
    from onnx_edge.runtime.providers import ORT_NAMES

    if ORT_NAMES.get(provider) in onnxruntime.get_available_providers():
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
    for out in (src, tmp_path):
        with pytest.raises(OutputError, match="replace the source"):
            export(str(src), out, force=True)
    assert sorted(p.name for p in src.iterdir()) == before
