"""Python API errors, export side: each kind of source or output mistake raises its specific
`onnx_edge.errors` type, and a failed or interrupted export leaves nothing behind (no output folder, no
`.NAME.partial-PID` folder) and never harms a pre-existing output folder given with force=True.
Loading and generating: test_errors_runtime.py; shared fixtures: error_cases.py.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest

from onnx_edge.errors import (
    OutputError,
    SourceError,
    UnsupportedModelError,
    ValidationError,
)

from tests.error_cases import PREVIOUS, edit_json, leftovers, previous_output, raises_exactly, write_gguf


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
    # Once bugs, now regression cases: corrupt or truncated safetensors fail at the header read (the export's
    # checkpoint tensor check, before loading) as SourceError; a numeric model_type is an UnsupportedModelError.
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
    previous_output(out)
    raises_exactly(ValidationError, export, str(tiny_models("llama")), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == PREVIOUS
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
    previous_output(out)
    with pytest.raises(KeyboardInterrupt):
        export(str(tiny_models("llama")), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == PREVIOUS
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
    previous_output(out)
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
