"""The gemma family: (1 + w) RMSNorm, sqrt(hidden)-scaled embedding rows, GeGLU with the tanh GELU; gemma2 adds
pre- and post-norms, attention and final-logit soft-capping, query_pre_attn_scalar and alternating windows;
gemma3_text adds per-head (1 + w) q/k norms and a second rope base for the sliding layers.

The tiny models (tests/fixtures.py): hidden 64, 4 query heads, head_dim 32, tied embeddings. The generic
per-family tests (tests/test_export.py, tests/test_fused.py) cover them too; here what is the family's own:
both graphs against PyTorch and transformers' generate, the fused graph's shape, quantized variants, the
folded norm weights and the config switches refused."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest

from onnx_edge.manifest import read_manifest
from onnx_edge.models import get_spec, shape_from_config
from tests.family_checks import assert_quantized_generates, export_variants, load_without_eos
from tests.test_qwen3 import _graph, _ops  # the graph helpers

torch = pytest.importorskip("torch")

FAMILIES = ["gemma", "gemma2", "gemma3_text"]
PROMPT = "The quick brown fox jumps over the lazy dog because"  # 40+ tokens with the tiny tokenizer
FAST = dict(context=64, eval_windows=4)


@pytest.fixture(scope="module")
def folders(tiny_models, exported_models, tmp_path_factory):
    return export_variants(tiny_models, exported_models, tmp_path_factory)


def test_spec_states_the_family_facts():
    spec = get_spec("gemma")
    assert (spec.norm_scale, spec.embed_scale, spec.activation, spec.mlp) == (
        "one_plus_weight", "sqrt_hidden", "gelu_tanh", "gated")
    assert spec.fused and spec.gguf is None
    assert get_spec("llama").norm_scale == "weight" and get_spec("llama").embed_scale == "none"
    import dataclasses

    with pytest.raises(ValueError, match="norm_scale 'w' is not one of weight, one_plus_weight"):
        dataclasses.replace(spec, norm_scale="w")
    with pytest.raises(ValueError, match="embed_scale 'x' is not one of none, sqrt_hidden"):
        dataclasses.replace(spec, embed_scale="x")


@pytest.mark.parametrize("family", FAMILIES)
def test_norms_fold_one_plus_weight_and_the_table_stays_unscaled(family, tiny_models):
    from transformers import AutoModelForCausalLM

    from onnx_edge.export.weights import canonical_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_models(family), dtype=torch.float32)
    spec = get_spec(family)
    shape = shape_from_config(spec, model.config.to_dict())
    sd = model.state_dict()
    w = canonical_weights(spec, shape, sd)
    hf = sd["model.layers.1.input_layernorm.weight"].numpy()
    np.testing.assert_array_equal(w["layers.1.attn_norm.weight"], (1.0 + torch.from_numpy(hf)).numpy())
    np.testing.assert_array_equal(w["final_norm.weight"], 1.0 + sd["model.norm.weight"].numpy())
    if spec.qk_norm != "none":  # gemma3: the q/k norms are (1 + w) norms too
        np.testing.assert_array_equal(w["layers.0.k_norm.weight"],
                                      1.0 + sd["model.layers.0.self_attn.k_norm.weight"].numpy())
    # The tied table is the unscaled one: the graph scales the gathered rows, the lm_head reads it as is.
    np.testing.assert_array_equal(w["embed_tokens.weight"], sd["model.embed_tokens.weight"].numpy())
    assert "lm_head.weight" not in w and shape.tie_word_embeddings


@pytest.mark.parametrize("variant", ["fused", "reference"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_validates_against_pytorch(family, variant, folders):
    m = read_manifest(folders(family, variant))
    v = m.validation
    assert m.graph == variant and m.architecture["model_type"] == family and m.architecture["head_dim"] == 32
    assert v["passed"] and v["greedy_match"] and v["greedy_reference"] == v["greedy_onnx"]
    assert v["max_abs_diff"] < 1e-4 and len(v["step_max_abs_diff"]) == v["decode_steps"] + 1 >= 4
    assert "lm_head.weight" not in {i.name for i in _graph(folders(family, variant)).initializer}


def test_gemma_fused_op_counts(folders):
    """Per layer: packed qkv into one GroupQueryAttention (rotary inside), GeGLU as FastGelu(gate) * up; the
    embedding rows scaled by one Mul; no decomposed attention."""
    folder = folders("gemma", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["GroupQueryAttention"] == n and ops["RotaryEmbedding"] == 0
    assert ops["MatMul"] == 4 * n and ops["Split"] == n  # gate|up only: qkv goes to GQA packed
    assert ops["FastGelu"] == n and ops["QuickGelu"] == 0
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * n and ops["ReduceMean"] == 1
    assert ops["Softmax"] == 0 and ops["Where"] == 0 and ops["Transpose"] == 0
    g = _graph(folder)
    scale = [x for x in g.node if x.name.startswith("/model/embed_scale")]
    assert len(scale) == 1 and scale[0].op_type == "Mul"
    const = next(i for i in g.initializer if i.name == scale[0].input[1])  # a small constant, stored inline
    assert onnx.numpy_helper.to_array(const) == np.float32(64 ** 0.5)
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_gemma2_shape_reads_its_config(tiny_models):
    config = json.loads((tiny_models("gemma2") / "config.json").read_text())
    shape = shape_from_config(get_spec("gemma2"), config)
    assert (shape.attn_softcap, shape.final_softcap, shape.sliding_window) == (5.0, 3.0, 8)
    assert shape.sliding_layers == [1, 0, 1] and [shape.window(i) for i in range(3)] == [8, None, 8]
    assert shape.attention_scale == 24 ** -0.5 and shape.head_dim == 32
    # Every other family: no caps, one window for all layers.
    llama = shape_from_config(get_spec("mistral"), {**config, "model_type": "mistral"})
    assert llama.attn_softcap is None and llama.sliding_layers is None and llama.window(1) == 8


def test_gemma2_fused_op_counts(folders):
    """Per layer: one GroupQueryAttention with the scale, the soft-cap and (sliding layers only) the window as
    attributes; the post-norms decomposed (onnxruntime fuses them) before the skip norms; one Tanh, the logits'."""
    folder = folders("gemma2", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["GroupQueryAttention"] == n and ops["FastGelu"] == n and ops["QuickGelu"] == 0
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * n and ops["ReduceMean"] == 1 + 2 * n
    assert ops["Tanh"] == 1 and ops["Softmax"] == 0 and ops["Where"] == 0
    gqa = [x for x in _graph(folder).node if x.op_type == "GroupQueryAttention"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in x.attribute} for x in gqa]
    assert [a.get("local_window_size") for a in attrs] == [8, None, 8]
    assert all(a["softcap"] == np.float32(5.0) and a["scale"] == np.float32(24 ** -0.5) for a in attrs)
    assert all(a["do_rotary"] == 1 for a in attrs)
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_gemma2_reference_masks_once_per_window(folders):
    """The reference graph: two masks (window 8, and full) shared by the layers, soft-caps as Div/Tanh/Mul."""
    ops = _ops(folders("gemma2", "reference"))
    n = 3
    # Tanh: the decomposed GELU and the score cap per layer, and the logits' cap.
    assert ops["Softmax"] == n and ops["Tanh"] == 2 * n + 1 and ops["Greater"] == 1  # one sliding-window bound


def test_gemma3_shape_reads_both_rope_bases(tiny_models):
    from onnx_edge.models.spec import check_config, rope_parameters

    config = json.loads((tiny_models("gemma3_text") / "config.json").read_text())
    shape = shape_from_config(get_spec("gemma3_text"), config)
    assert shape.local_rope and shape.sliding_layers == [1, 1, 0] and shape.rope_theta == 1e6
    assert [shape.uses_local_rope(i) for i in range(3)] == [True, True, False]
    assert rope_parameters(config, "sliding_attention")["rope_theta"] == 1e4
    # Each layer type's rope settings are judged: a sliding-layer rope type the graph lacks is refused.
    bad = json.loads(json.dumps(config))
    bad["rope_parameters"]["sliding_attention"]["rope_type"] = "longrope"
    from onnx_edge.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="gemma3_text rope_type 'longrope' is not supported"):
        check_config(get_spec("gemma3_text"), bad)


def test_gemma3_rope_tables_stack_both_bases(tiny_models):
    from transformers import AutoModelForCausalLM

    from onnx_edge.export.torch_model import rope_tables

    model = AutoModelForCausalLM.from_pretrained(tiny_models("gemma3_text"), dtype=torch.float32)
    cos, sin = rope_tables(model, 16, 32)  # (2 * 16, 16): full-attention rows, then the sliding layers'
    ids = torch.arange(16)[None]
    x = torch.zeros(1, dtype=torch.float32)
    for half, kind in ((slice(0, 16), "full_attention"), (slice(16, 32), "sliding_attention")):
        want_cos, want_sin = model.model.rotary_emb(x, ids, kind)
        np.testing.assert_allclose(cos[half], want_cos[0, :, :16].numpy(), atol=1e-6)
        np.testing.assert_allclose(sin[half], want_sin[0, :, :16].numpy(), atol=1e-6)
    assert not np.allclose(cos[:16], cos[16:])


def test_gemma3_fused_op_counts(folders):
    """Per layer: q, k, v split and normed per head, then GroupQueryAttention rotating with its layer's tables
    (the sliding layers' own caches) and the window on the sliding layers only; no soft-cap (none configured)."""
    folder = folders("gemma3_text", "fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["GroupQueryAttention"] == n and ops["FastGelu"] == n and ops["Split"] == 2 * n
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * n and ops["ReduceMean"] == 1 + 4 * n  # + post, q/k norms
    assert ops["Tanh"] == 0 and ops["Softmax"] == 0 and ops["RotaryEmbedding"] == 0
    gqa = [x for x in _graph(folder).node if x.op_type == "GroupQueryAttention"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in x.attribute} for x in gqa]
    assert [a.get("local_window_size") for a in attrs] == [8, 8, None]
    assert all("softcap" not in a and a["scale"] == np.float32(24 ** -0.5) and a["do_rotary"] == 1 for a in attrs)
    assert [x.input[7] for x in gqa] == ["model.rotary.local.cos_cache"] * 2 + ["model.rotary.cos_cache"]
    onnx.checker.check_model(str(folder / "model.onnx"))


@pytest.mark.parametrize("family", FAMILIES)
def test_dml_shape_rotates_outside_attention(family, folders):
    """DirectML's GQA ignores do_rotary and local_window_size: RotaryEmbedding nodes (gemma3's sliding layers
    reading their own tables) and, with a window, a context no longer than it (exporter.py)."""
    from onnx_edge.targets import unsupported_ops

    folder = folders(family, "dml")
    m = read_manifest(folder)
    n, window = m.architecture["num_layers"], m.architecture["sliding_window"]
    assert m.validation["passed"] and m.validation["max_abs_diff"] < 1e-4
    assert m.architecture["context_length"] == (window or 256)
    g = _graph(folder)
    rotary = [x for x in g.node if x.op_type == "RotaryEmbedding"]
    assert len(rotary) == 2 * n
    if family == "gemma3_text":
        assert [x.input[2] for x in rotary[::2]] == ["model.rotary.local.cos_cache"] * 2 + ["model.rotary.cos_cache"]
    assert unsupported_ops({(x.domain, x.op_type) for x in g.node}, "dml") == []


@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_cuda_variant_follows_fp32(family, folders, tmp_path):
    """Run on the CPU: the fp16 graph (soft-caps, post-norms and q/k norms included) stays close to fp32."""
    from onnx_edge.quantize import QuantConfig, quantize

    out = tmp_path / "q"
    quantize(folders(family, "fused"), out, QuantConfig(precision="fp16", provider="cuda", **FAST))
    m = load_without_eos(out)
    quality = m.manifest.quantization["quality"]
    assert quality["kl"] < 1e-3 and quality["top1"] >= 0.95, quality
    assert m.generate(PROMPT, chat=False, max_new_tokens=4).generated_tokens == 4


# The released 270M and 1B text configs' shapes (hub config.json values): multi-query, head_dim 256, window 512,
# five sliding layers to one global, rope bases 1e4 / 1e6.
GEMMA3_SHAPES = {
    "270m": dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, vocab_size=262144),
    "1b": dict(hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, vocab_size=262144),
}
_GEMMA3_COMMON = dict(num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                      query_pre_attn_scalar=256, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                      max_position_embeddings=32768, hidden_activation="gelu_pytorch_tanh")


@pytest.mark.parametrize("size", sorted(GEMMA3_SHAPES))
def test_gemma3_released_shapes_are_accepted(size):
    from transformers import AutoConfig

    from onnx_edge.export.fused import gqa_rotary
    from onnx_edge.models.spec import check_config

    config = AutoConfig.for_model("gemma3_text", **GEMMA3_SHAPES[size], **_GEMMA3_COMMON).to_dict()
    spec = get_spec("gemma3_text")
    check_config(spec, config)
    shape = shape_from_config(spec, config)
    assert shape.head_dim == 256 and shape.num_kv_heads == 1 and shape.local_rope and gqa_rotary(shape)
    assert shape.sliding_layers == [int((i + 1) % 6 != 0) for i in range(shape.num_layers)]
    assert [shape.window(i) for i in range(6)] == [512] * 5 + [None]


def test_gemma3_270m_layer_shape_exports_exactly(tmp_path):
    """Six layers of the 270M's width (640 hidden, head_dim 256 rotated inside GQA, one kv head), the 5:1
    pattern from transformers' default, a window of 16 so the validation prompt slides past it."""
    from onnx_edge.export import export
    from tests.fixtures import build_tiny_model

    shape = {**GEMMA3_SHAPES["270m"], **_GEMMA3_COMMON, "num_hidden_layers": 6, "vocab_size": 512,
             "sliding_window": 16, "max_position_embeddings": 256, "layer_types": None}
    src = build_tiny_model("gemma3_text", tmp_path / "src", **shape)
    m = export(str(src), tmp_path / "out")
    assert m.graph == "fused" and m.validation["passed"] and m.validation["max_abs_diff"] < 2e-4, m.validation
    assert m.architecture["sliding_layers"] == [1, 1, 1, 1, 1, 0] and m.architecture["head_dim"] == 256


@pytest.mark.parametrize("config", [dict(precision="int8"), dict(precision="int4")], ids=["int8", "int4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_variants_generate(family, config, folders, tmp_path):
    from onnx_edge.quantize import QuantConfig, quantize

    out = tmp_path / "q"
    quantize(folders(family, "fused"), out, QuantConfig(**config, **FAST))
    m = load_without_eos(out)
    assert m.manifest.precision == config["precision"] and m.manifest.graph == "fused"
    quality = m.manifest.quantization["quality"]
    assert quality["top1"] >= (0.85 if config["precision"] == "int8" else 0.3), quality
    assert collections.Counter(x.op_type for x in _graph(out).node)["GroupQueryAttention"] == \
        m.manifest.architecture["num_layers"]
    assert_quantized_generates(m, PROMPT)


@pytest.mark.parametrize("family, change", [
    ("gemma", dict(use_bidirectional_attention=True)),
    ("gemma", dict(hidden_act="silu")),
    ("gemma2", dict(layer_types=["chunked_attention", "full_attention", "sliding_attention"])),
    ("gemma2", dict(hidden_activation="gelu")),
    ("gemma3_text", dict(use_bidirectional_attention=True)),
], ids=["gemma-bidirectional", "gemma-silu", "gemma2-chunked", "gemma2-erf-gelu", "gemma3-bidirectional"])
def test_unimplemented_config_is_refused_before_loading(family, change, tiny_models, tmp_path):
    import shutil

    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.export import export

    src = tmp_path / "src"
    shutil.copytree(tiny_models(family), src)
    config = json.loads((src / "config.json").read_text())
    config.update(change)
    (src / "config.json").write_text(json.dumps(config))
    (src / "model.safetensors").write_bytes(b"not loaded")  # refused from config.json alone
    with pytest.raises(UnsupportedModelError, match=f"{family} {next(iter(change))} .* is not supported"):
        export(str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()
