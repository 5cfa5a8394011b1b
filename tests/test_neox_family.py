"""gpt_neox (Pythia, GPT-NeoX-20B): parallel residual, per-head packed query_key_value, partial rotary, erf GELU.
The tiny model (tests/fixtures.py) turns each on; tests/test_family_parity.py checks greedy against transformers'
generate. Here: both graphs' export validation, the fused graph's ops, the weight reorder, the 4.x config spelling
(rotary_pct / rotary_emb_base), int8 / int4 quantized variants, and the config values refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnx_edge.manifest import read_manifest
from onnx_edge.models import get_spec, shape_from_config

torch = pytest.importorskip("torch")

from tests.family_checks import (assert_quantized_generates, assert_refused_from_config, export_variants,  # noqa: E402
                                 load_without_eos)
from tests.test_qwen3 import FAST, PROMPT, _attrs, _graph, _ops  # noqa: E402  (the same graph helpers)


@pytest.fixture(scope="module")
def folders(tiny_models, exported_models, tmp_path_factory):
    return export_variants(tiny_models, exported_models, tmp_path_factory)


def test_spec_states_its_computation():
    import dataclasses

    spec = get_spec("gpt_neox")
    assert (spec.block, spec.qkv_layout, spec.activation, spec.norm, spec.mlp) == \
        ("parallel", "per_head", "gelu", "layer", "plain")
    assert spec.fused and spec.gguf is None
    with pytest.raises(ValueError, match="qkv_layout 'interleaved' is not one of packed, per_head"):
        dataclasses.replace(spec, qkv_layout="interleaved")


def test_shape_reads_the_4x_rope_spelling(tiny_models):
    config = json.loads((tiny_models("gpt_neox") / "config.json").read_text())
    config.pop("rope_parameters")
    spec = get_spec("gpt_neox")
    s = shape_from_config(spec, {**config, "rotary_pct": 0.5, "rotary_emb_base": 20000})
    assert (s.rotary_dim, s.rope_theta) == (32, 20000.0)
    # Neither spelling: transformers' GPTNeoXConfig default rotary_pct 0.25.
    assert shape_from_config(spec, config).rotary_dim == 16


def test_qkv_is_reordered_from_per_head_to_packed(tiny_models):
    """Our packed [q | k | v] equals transformers' view(heads, 3 * head_dim) then chunk, on a real projection."""
    from transformers import AutoModelForCausalLM

    from onnx_edge.export.weights import canonical_weights

    ref = AutoModelForCausalLM.from_pretrained(tiny_models("gpt_neox"), dtype=torch.float32).eval()
    spec = get_spec("gpt_neox")
    shape = shape_from_config(spec, ref.config.to_dict())
    w = canonical_weights(spec, shape, ref.state_dict())
    x = torch.randn(3, shape.hidden_size)
    with torch.no_grad():
        q, k, v = ref.gpt_neox.layers[0].attention.query_key_value(x).view(3, shape.num_heads, -1).chunk(3, dim=-1)
    ours = x.numpy() @ w["layers.0.qkv.weight"] + w["layers.0.qkv.bias"]
    expected = np.concatenate([t.reshape(3, -1).numpy() for t in (q, k, v)], axis=1)
    assert np.max(np.abs(ours - expected)) < 1e-5


@pytest.mark.parametrize("variant", ["fused", "reference"])
def test_export_validates_against_pytorch(variant, folders):
    m = read_manifest(folders("gpt_neox", variant))
    v = m.validation
    assert m.graph == variant
    assert v["passed"] and v["greedy_match"] and v["greedy_reference"] == v["greedy_onnx"]
    assert v["max_abs_diff"] < 2e-5 and len(v["step_max_abs_diff"]) == v["decode_steps"] + 1 >= 4


def test_fused_graph_is_the_parallel_block(folders):
    """Per layer: two LayerNormalization of the same x (no skip norms), GQA rotating its 16 of 64 channels
    itself, BiasGelu (erf GELU), one MatMul each for qkv, o, up, down; the final norm."""
    folder = folders("gpt_neox", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 2 * n + 1
    assert ops["GroupQueryAttention"] == n and ops["BiasGelu"] == n and ops["FastGelu"] == 0
    assert ops["MatMul"] == 4 * n and ops["RotaryEmbedding"] == 0
    for node in (x for x in _graph(folder).node if x.op_type == "GroupQueryAttention"):
        assert _attrs(node)["do_rotary"] == 1 and not node.input[1]  # the packed qkv, rotated inside
    assert "lm_head.weight" in {i.name for i in _graph(folder).initializer}  # untied embed_out


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_variants_generate(precision, folders, tmp_path):
    from onnx_edge.quantize import QuantConfig, quantize

    out = tmp_path / "q"
    quantize(folders("gpt_neox", "fused"), out, QuantConfig(precision=precision, **FAST))
    m = load_without_eos(out)
    assert m.manifest.precision == precision and m.manifest.graph == "fused"
    quality = m.manifest.quantization["quality"]
    assert quality["top1"] >= (0.85 if precision == "int8" else 0.3), quality
    assert_quantized_generates(m, PROMPT)  # weight-only: a left-padded batch gives each prompt's tokens


@pytest.mark.parametrize("change", [dict(use_parallel_residual=False), dict(hidden_act="gelu_fast"),
                                    dict(hidden_act="relu")], ids=["sequential", "gelu_fast", "relu"])
def test_unimplemented_config_values_are_refused_before_loading(change, tiny_models, tmp_path):
    assert_refused_from_config("gpt_neox", tiny_models("gpt_neox"), change, tmp_path)
