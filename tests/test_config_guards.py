"""Correctness guards that hold for every family: a config value the graph does not implement exactly, or a
checkpoint tensor it would not place, is refused before any weight loads, naming what; the config layouts of
transformers 4 and 5 (rope_parameters, eos lists, bf16 weights) read the same."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from onnx_edge.errors import SourceError, UnsupportedModelError
from onnx_edge.models import check_config, config_rules, get_spec, shape_from_config, supported_model_types
from tests.error_cases import edit_json, leftovers, raises_exactly

# Each family's supported config values, as its spec states them (models/*.py + models/spec.py config_rules).
ROPE = ("default", "linear", "dynamic", "llama3", "yarn")
SILU = ("silu", "swish")
FULL_ROTARY = {"partial_rotary_factor": (1.0,)}
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")  # gemma family
SUPPORTED = {
    "gemma": {"hidden_act": GELU_TANH, "rope_type": ROPE, **FULL_ROTARY,  # gemma family
              "use_bidirectional_attention": (None, False)},
    "gemma2": {"hidden_activation": GELU_TANH, "rope_type": ROPE, **FULL_ROTARY,
               "use_bidirectional_attention": (None, False), "layer_types": ("full_attention", "sliding_attention")},
    "gemma3_text": {"hidden_activation": GELU_TANH, "rope_type": ROPE, **FULL_ROTARY,
                    "use_bidirectional_attention": (None, False),
                    "layer_types": ("full_attention", "sliding_attention")},
    "gpt2": {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_weights": (True,),
             "scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,)},
    "llama": {"hidden_act": SILU, "rope_type": ROPE, **FULL_ROTARY},
    "mistral": {"hidden_act": SILU, "rope_type": ROPE, **FULL_ROTARY},
    "phi3": {"hidden_act": SILU, "rope_type": ROPE + ("longrope",)},  # longrope: tests/test_longrope.py
    "qwen2": {"hidden_act": SILU, "rope_type": ROPE, **FULL_ROTARY, "use_sliding_window": (False,),
              "layer_types": ("full_attention",)},
    "granite": {"hidden_act": SILU, "rope_type": ROPE, **FULL_ROTARY},  # granite / smollm3 / olmo2
    "smollm3": {"hidden_act": SILU, "rope_type": ROPE, **FULL_ROTARY, "use_sliding_window": (False,),
                "layer_types": ("full_attention",)},
    "olmo2": {"hidden_act": SILU, "rope_type": ROPE, **FULL_ROTARY},
}


@pytest.mark.parametrize("arch", sorted(SUPPORTED))
def test_every_spec_states_its_supported_config_values(arch):
    assert {r.field: r.allowed for r in config_rules(get_spec(arch))} == SUPPORTED[arch]


@pytest.mark.parametrize("arch", supported_model_types())
def test_transformers_defaults_pass_every_rule(arch):
    # check_config skips a field the config lacks, so transformers' default for it must be allowed.
    from transformers import AutoConfig

    check_config(get_spec(arch), AutoConfig.for_model(arch).to_dict())


@pytest.fixture
def no_load(monkeypatch):
    """Fails the test if export loads the model: every refusal here comes from the config or file headers."""
    from onnx_edge.export import torch_model

    def load_model(source):
        raise AssertionError("load_model called before the refusal")

    monkeypatch.setattr(torch_model, "load_model", load_model)


def _copy(tiny_models, arch, tmp_path, **changes):
    src = tmp_path / f"{arch}-src"
    shutil.copytree(tiny_models(arch), src)
    edit_json(src / "config.json", **changes)
    return src


_LONGROPE = dict(rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                  "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
                                  "original_max_position_embeddings": 128})
REFUSED = [
    ("gpt2", dict(activation_function="relu"), "gpt2 activation_function 'relu' is not supported (supported: gelu_new"),
    ("gpt2", dict(activation_function="gelu"), "gpt2 activation_function 'gelu'"),  # the erf GELU, not tanh
    ("gpt2", dict(scale_attn_weights=False), "gpt2 scale_attn_weights False"),
    ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), "gpt2 scale_attn_by_inverse_layer_idx True"),
    ("llama", dict(hidden_act="gelu"), "llama hidden_act 'gelu'"),
    ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
     "llama partial_rotary_factor 0.5"),
    ("mistral", dict(hidden_act="relu"), "mistral hidden_act 'relu'"),
    ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1, layer_types=None),
     "qwen2 use_sliding_window True"),
    # phi3 longrope is supported (tests/test_longrope.py); llama's is not.
    ("llama", _LONGROPE, "llama rope_type 'longrope' is not supported"),
]


@pytest.mark.parametrize("arch, changes, message", REFUSED, ids=[f"{a}-{m.split()[1]}" for a, _, m in REFUSED])
def test_unsupported_config_values_are_refused_before_loading(arch, changes, message, tiny_models, tmp_path, no_load):
    from onnx_edge.export import export

    src = _copy(tiny_models, arch, tmp_path, **changes)
    out = tmp_path / "out"
    error = raises_exactly(UnsupportedModelError, export, str(src), out)
    assert message in str(error)
    assert not out.exists() and leftovers(out) == []


def test_the_cli_says_it_in_one_line(tiny_models, tmp_path, no_load):
    from tests.cli_cases import assert_one_line_error, invoke

    src = _copy(tiny_models, "gpt2", tmp_path, activation_function="relu")
    out = tmp_path / "out"
    assert_one_line_error(invoke("export", src, "-o", out), "gpt2 activation_function 'relu' is not supported", out=out)


def _with_tensor(tiny_models, tmp_path, name):
    from safetensors.numpy import load_file, save_file

    src = _copy(tiny_models, "llama", tmp_path)
    tensors = load_file(src / "model.safetensors")
    tensors[name] = np.ones(16, np.float32)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    return src


def test_a_tensor_in_the_file_that_nothing_places_is_refused(tiny_models, tmp_path, no_load):
    """A Qwen3 relabelled llama: transformers would drop its q/k norms on load and the export would validate."""
    from onnx_edge.export import export

    src = _with_tensor(tiny_models, tmp_path, "model.layers.0.self_attn.q_norm.weight")
    error = raises_exactly(UnsupportedModelError, export, str(src), tmp_path / "out")
    assert "model.layers.0.self_attn.q_norm.weight" in str(error) and "checkpoint file" in str(error)


def test_file_names_as_transformers_maps_them():
    from onnx_edge.export.weights import check_file_tensors

    llama, gpt2 = get_spec("llama"), get_spec("gpt2")
    check_file_tensors(llama, 2, ["model.layers.1.self_attn.q_proj.weight", "model.layers.0.rotary_emb.inv_freq"])
    # GPT-2's hub checkpoint is a base model: no "transformer." prefix, and causal-mask buffers.
    check_file_tensors(gpt2, 2, ["h.0.attn.c_attn.weight", "wte.weight", "h.1.attn.bias"])
    gguf = ["token_embd.weight", "blk.1.attn_q.weight", "blk.0.ffn_gate.weight", "output.weight", "output_norm.weight"]
    check_file_tensors(llama, 2, gguf, gguf_architecture="llama")
    with pytest.raises(UnsupportedModelError, match="first: blk.0.attn_q_norm.weight"):
        check_file_tensors(llama, 2, gguf + ["blk.0.attn_q_norm.weight"], gguf_architecture="llama")
    with pytest.raises(UnsupportedModelError, match="model.layers.2.mlp.up_proj.weight"):  # a layer beyond config
        check_file_tensors(llama, 2, ["model.layers.2.mlp.up_proj.weight"])


def test_a_shard_index_naming_a_file_outside_the_folder_is_refused(tiny_models, tmp_path):
    from onnx_edge.export.sources import checkpoint_tensor_names, resolve_source

    src = _copy(tiny_models, "llama", tmp_path)
    index = {"weight_map": {"model.embed_tokens.weight": "../elsewhere.safetensors"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(SourceError, match="not a file in the folder"):
        checkpoint_tensor_names(resolve_source(str(src)))


# ------------------------------------------------------------------------------------ config layouts

_BASE = dict(model_type="phi3", hidden_size=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=512,
             max_position_embeddings=256, rms_norm_eps=1e-5)


def test_both_rope_layouts_read_the_same():
    phi3 = get_spec("phi3")
    v4 = shape_from_config(phi3, dict(_BASE, rope_theta=5e5, partial_rotary_factor=0.5,
                                      rope_scaling={"type": "linear", "factor": 2.0}))
    v5 = shape_from_config(phi3, dict(_BASE, rope_theta=None, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 5e5, "partial_rotary_factor": 0.5}))
    assert (v4.rope_type, v4.rope_theta, v4.rotary_dim) == (v5.rope_type, v5.rope_theta, v5.rotary_dim) \
        == ("linear", 5e5, 8)


def test_eos_lists_and_the_window_only_where_the_family_reads_it():
    config = dict(_BASE, eos_token_id=[2, 7], sliding_window=8)
    assert shape_from_config(get_spec("phi3"), config).eos_token_ids == [2, 7]
    assert shape_from_config(get_spec("phi3"), config, {"eos_token_id": [2, 9]}).eos_token_ids == [2, 9]
    assert shape_from_config(get_spec("phi3"), config).sliding_window == 8
    assert shape_from_config(get_spec("mistral"), dict(config, model_type="mistral")).sliding_window == 8
    # transformers' Llama has no window: a stray sliding_window in its config changes nothing there.
    assert shape_from_config(get_spec("llama"), dict(config, model_type="llama")).sliding_window is None


def test_partial_rotary_only_in_rope_parameters_exports_and_validates(tiny_models, tmp_path):
    from onnx_edge.export import export

    src = _copy(tiny_models, "phi3", tmp_path, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    config = json.loads((src / "config.json").read_text())
    del config["partial_rotary_factor"]
    (src / "config.json").write_text(json.dumps(config), encoding="utf-8")
    m = export(str(src), tmp_path / "out")
    assert m.validation["passed"] and m.architecture["rotary_dim"] == 8


def test_dynamic_rope_is_the_default_rope_within_the_context(tiny_models, tmp_path):
    """transformers' dynamic NTK rescales only past max_position_embeddings, the export's context: the
    tables the export takes equal the rotary module's own output at every position of that context."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from onnx_edge.export import export
    from onnx_edge.export.torch_model import rope_tables

    src = _copy(tiny_models, "llama", tmp_path, rope_parameters={"rope_type": "dynamic", "factor": 4.0,
                                                                 "rope_theta": 500000.0})
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    context = model.config.max_position_embeddings
    cos, sin = rope_tables(model, context, 16)
    rotary = model.model.rotary_emb
    with torch.no_grad():
        ref_cos, ref_sin = rotary(torch.zeros(1), torch.arange(context)[None])
    np.testing.assert_allclose(np.concatenate([cos, cos], -1), ref_cos[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.concatenate([sin, sin], -1), ref_sin[0].numpy(), atol=1e-6)
    assert export(str(src), tmp_path / "out").validation["passed"]


def test_a_bf16_checkpoint_exports_in_fp32(tiny_models, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from onnx_edge.export import export

    src = _copy(tiny_models, "llama", tmp_path)
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(src)
    assert json.loads((src / "config.json").read_text())["dtype"] == "bfloat16"
    m = export(str(src), tmp_path / "out")
    assert m.validation["passed"] and m.precision == "fp32"
