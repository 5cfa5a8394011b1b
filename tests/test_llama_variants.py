"""granite, smollm3, olmo2: Llama's layout with one computation each that Llama lacks.

granite: four config scalars (embedding, residual and attention multipliers, logits scaling); smollm3: NoPE
layers (no_rope_layers[i] = 0: no rotary at all); olmo2: post-norm blocks and full-width q/k norms. The tiny
models (tests/fixtures.py) turn each on. The generic per-family tests (tests/test_export.py, tests/test_fused.py)
cover them too; here: both graphs against PyTorch and transformers' generate, the DirectML shape, each fused
graph's op counts, int8 / int4 quantized variants, and the config values refused."""

from __future__ import annotations

import json

import onnx
import pytest

from onnx_edge.manifest import read_manifest
from onnx_edge.models import get_spec, shape_from_config

torch = pytest.importorskip("torch")

from tests.family_checks import (assert_quantized_generates, assert_refused_from_config, export_variants,
                                 load_without_eos, optimized_ops)
from tests.test_qwen3 import FAST, PROMPT, _attrs, _graph, _ops  # noqa: E402  (the same graph helpers)

ARCHS = ["granite", "smollm3", "olmo2"]


@pytest.fixture(scope="module")
def folders(tiny_models, exported_models, tmp_path_factory):
    return export_variants(tiny_models, exported_models, tmp_path_factory)


def _gqa(folder) -> list:
    return [n for n in _graph(folder).node if n.op_type == "GroupQueryAttention"]


def test_specs_state_their_computation():
    import dataclasses

    granite, smollm3, olmo2 = map(get_spec, ARCHS)
    assert (olmo2.block, olmo2.qk_norm) == ("post_norm", "full_width")
    assert olmo2.weights["layers.{i}.attn_norm.weight"] == "model.layers.{i}.post_attention_layernorm.weight"
    assert olmo2.weights["layers.{i}.mlp_norm.weight"] == "model.layers.{i}.post_feedforward_layernorm.weight"
    assert all((s.block, s.qk_norm) == ("pre_norm", "none") for s in (granite, smollm3, get_spec("llama")))
    assert all(s.fused and s.gguf is None for s in (granite, smollm3, olmo2))
    with pytest.raises(ValueError, match="block 'diagonal' is not one of pre_norm, post_norm"):
        dataclasses.replace(olmo2, block="diagonal")


def test_shapes_read_the_family_scalars(tiny_models):
    def shape(arch, **change):
        config = json.loads((tiny_models(arch) / "config.json").read_text())
        return shape_from_config(get_spec(arch), {**config, **change})

    g = shape("granite")
    assert (g.embedding_multiplier, g.residual_multiplier, g.attention_scale, g.logits_scaling) == \
        (12.0, 0.22, 0.0625, 4.0)
    assert shape("smollm3").rope_layers == [1, 0]
    # A config without the list takes transformers' default from the interval (every 4th layer NoPE).
    assert shape("smollm3", no_rope_layers=None, no_rope_layer_interval=4, num_hidden_layers=8).rope_layers == \
        [1, 1, 1, 0, 1, 1, 1, 0]
    # Every other family keeps llama's graph: no multipliers, every layer rotates.
    for arch in ("olmo2", "llama"):
        s = shape(arch)
        assert (s.embedding_multiplier, s.residual_multiplier, s.attention_scale, s.logits_scaling) == \
            (1.0, 1.0, None, 1.0)
        assert s.rope_layers is None and all(s.uses_rope(i) for i in range(s.num_layers))


@pytest.mark.parametrize("variant", ["fused", "reference", "dml"])
@pytest.mark.parametrize("arch", ARCHS)
def test_export_validates_against_pytorch(arch, variant, folders):
    m = read_manifest(folders(arch, variant))
    v = m.validation
    assert m.graph == ("reference" if variant == "reference" else "fused")
    assert v["passed"] and v["greedy_match"] and v["greedy_reference"] == v["greedy_onnx"]
    assert v["max_abs_diff"] < 2e-5 and len(v["step_max_abs_diff"]) == v["decode_steps"] + 1 >= 4


def test_granite_fused_graph_applies_each_multiplier(folders):
    """One Mul on the embeddings, one per sublayer output (the o / down biases absent: attention_bias and mlp_bias
    false), GQA's scale attribute, a Mul by 1 / logits_scaling on the logits; the skip-norm chain stays."""
    folder = folders("granite", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["GroupQueryAttention"] == n and ops["SkipSimplifiedLayerNormalization"] == 2 * n
    assert ops["Div"] == 1 and ops["MatMul"] == 4 * n and ops["QuickGelu"] == n  # the first norm's Div
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in _graph(folder).initializer
              if i.data_location != onnx.TensorProto.EXTERNAL}  # the graph's small constants
    muls = [x for x in _graph(folder).node if x.op_type == "Mul" and x.input[1] in consts
            and consts[x.input[1]].size == 1]
    assert sorted(float(consts[x.input[1]]) for x in muls) == pytest.approx([0.22] * (2 * n) + [0.25, 12.0])
    for node in _gqa(folder):
        assert _attrs(node)["scale"] == pytest.approx(0.0625) and _attrs(node)["do_rotary"] == 1
    assert "lm_head.weight" not in {i.name for i in _graph(folder).initializer}  # tied: the embedding serves


def test_smollm3_nope_layers_skip_the_rotary(folders):
    """Layer 0 rotates inside GQA (cos/sin caches); layer 1 (NoPE) has do_rotary 0 and no caches. In the DirectML
    shape only layer 0 has RotaryEmbedding nodes."""
    folder = folders("smollm3", "fused")
    rope_layer, nope_layer = _gqa(folder)
    assert _attrs(rope_layer)["do_rotary"] == 1 and len(rope_layer.input) == 9
    assert _attrs(nope_layer).get("do_rotary", 0) == 0 and len(nope_layer.input) == 7
    assert _ops(folder)["RotaryEmbedding"] == 0 and _ops(folder)["Split"] == 2  # gate|up; qkv stays packed
    dml = [x for x in _graph(folders("smollm3", "dml")).node if x.op_type == "RotaryEmbedding"]
    assert len(dml) == 2 and all(x.name.startswith("/model/layers.0/") for x in dml)
    reference = [x.name for x in _graph(folders("smollm3", "reference")).node if x.op_type == "Neg"]
    assert reference and all(name.startswith("/model/layers.0/") for name in reference)  # rotate-half of layer 0


def test_olmo2_fused_graph_norms_outputs_and_full_width_qk(folders):
    """No skip norms (nothing is normed on its way into a sublayer): per layer q and k normed over the whole
    projection, the attention and MLP outputs normed, then added; the final norm. onnxruntime fuses every one."""
    folder = folders("olmo2", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["SkipSimplifiedLayerNormalization"] == 0 and ops["GroupQueryAttention"] == n
    assert ops["ReduceMean"] == ops["Pow"] == 4 * n + 1
    assert ops["Split"] == 2 * n and ops["MatMul"] == 4 * n and ops["RotaryEmbedding"] == 0
    shapes = {i.name: tuple(i.dims) for i in _graph(folder).initializer}
    assert shapes["model.layers.0.attn.q_norm.weight"] == (64,) and shapes["model.layers.0.attn.k_norm.weight"] == (32,)
    for node in _gqa(folder):
        assert node.input[1] and node.input[2] and _attrs(node)["do_rotary"] == 1  # normed q, k, v apart
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_olmo2_norms_fuse_in_onnxruntime(folders, tmp_path):
    folder = folders("olmo2", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = optimized_ops(folder, tmp_path)
    assert ops["SimplifiedLayerNormalization"] == 4 * n + 1 and ops["Pow"] == 0


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_variants_generate(arch, precision, folders, tmp_path):
    from onnx_edge.quantize import QuantConfig, quantize

    out = tmp_path / "q"
    quantize(folders(arch, "fused"), out, QuantConfig(precision=precision, **FAST))
    m = load_without_eos(out)
    assert m.manifest.precision == precision and m.manifest.graph == "fused"
    quality = m.manifest.quantization["quality"]
    assert quality["top1"] >= (0.85 if precision == "int8" else 0.3), quality
    assert_quantized_generates(m, PROMPT)  # weight-only: a left-padded batch gives each prompt's tokens


@pytest.mark.parametrize("variant", ["cuda-fp16", "dml-fp16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_fp16_gpu_variants_follow_fp32(arch, variant, folders, tmp_path):
    """Run on the CPU: the fp16 graphs of the cuda and dml targets stay close to fp32."""
    from onnx_edge.quantize import QuantConfig, quantize

    provider = variant.split("-")[0]
    out = tmp_path / "q"
    quantize(folders(arch, "dml" if provider == "dml" else "fused"), out,
             QuantConfig(precision="fp16", provider=provider, **FAST))
    m = load_without_eos(out)
    quality = m.manifest.quantization["quality"]
    assert quality["kl"] < 1e-3 and quality["top1"] >= 0.95, quality
    assert m.generate(PROMPT, chat=False, max_new_tokens=4).generated_tokens == 4


@pytest.mark.parametrize("change", [dict(use_sliding_window=True, sliding_window=16),
                                    dict(layer_types=["full_attention", "sliding_attention"])],
                         ids=["use_sliding_window", "layer_types"])
def test_smollm3_sliding_window_is_refused_before_loading(change, tiny_models, tmp_path):
    """transformers slides only SmolLM3's NoPE layers; the graph has one window for all."""
    assert_refused_from_config("smollm3", tiny_models("smollm3"), change, tmp_path)


def test_olmo2_checkpoint_read_as_llama_is_refused(tiny_models):
    """Its post norms and q/k norms have no place in llama's weight map: refused, not dropped."""
    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.export.sources import checkpoint_tensor_names, resolve_source
    from onnx_edge.export.weights import check_file_tensors

    names = checkpoint_tensor_names(resolve_source(str(tiny_models("olmo2"))))
    check_file_tensors(get_spec("olmo2"), 2, names)
    with pytest.raises(UnsupportedModelError, match="no place in the graph"):
        check_file_tensors(get_spec("llama"), 2, names)
