"""qwen3: per-head q/k RMSNorm before rotary, head_dim independent of hidden / heads, tied 0.6B-style head.

The tiny model (tests/fixtures.py): hidden 64, 4 query heads over 2 kv heads, head_dim 32 (not 64 / 4), tied
embeddings, rope base 1e6. The generic per-family tests (tests/test_export.py, tests/test_fused.py) cover it
too; here what is qwen3's own: both graphs against PyTorch and transformers' generate, the fused graph's
shape (q/k normed apart, rotary still inside GQA), the DirectML shape, quantized variants, the config
switches refused, and a variant with q/k/v/o biases."""

from __future__ import annotations

import collections
import json

import onnx
import pytest

from onnx_edge.manifest import read_manifest
from onnx_edge.models import get_spec, shape_from_config
from tests.family_checks import assert_refused_from_config, load_without_eos, optimized_ops

torch = pytest.importorskip("torch")

PROMPT = "The quick brown fox jumps over the lazy dog because"
FAST = dict(context=64, eval_windows=4)


@pytest.fixture(scope="module")
def folders(tiny_models, exported_models, tmp_path_factory):
    """variant -> exported folder: 'fused' (the default export), 'reference', 'dml' (fp32, DirectML-shaped)."""
    from onnx_edge.export import export

    done = {"fused": exported_models("qwen3")}

    def get(variant: str):
        if variant not in done:
            out = tmp_path_factory.mktemp(f"qwen3-{variant}") / "model"
            if variant == "dml":
                export(str(tiny_models("qwen3")), out, provider="dml")
            else:
                export(str(tiny_models("qwen3")), out, graph=variant)
            done[variant] = out
        return done[variant]

    return get




def _graph(folder) -> onnx.GraphProto:
    return onnx.load(folder / "model.onnx", load_external_data=False).graph


def _ops(folder) -> collections.Counter:
    return collections.Counter(n.op_type for n in _graph(folder).node)


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_spec_states_the_qk_norm_and_the_gguf_layout():
    spec = get_spec("qwen3")
    assert spec.qk_norm == "per_head" and spec.fused and get_spec("qwen2").qk_norm == "none"
    assert spec.weights["layers.{i}.q_norm.weight"] == "model.layers.{i}.self_attn.q_norm.weight"
    assert spec.weights["layers.{i}.k_norm.weight"] == "model.layers.{i}.self_attn.k_norm.weight"
    assert (spec.gguf.architecture, spec.gguf.permuted_qk) == ("qwen3", False)
    import dataclasses

    with pytest.raises(ValueError, match="qk_norm 'full' is not one of none, per_head, full_width"):
        dataclasses.replace(spec, qk_norm="full")


def test_shape_keeps_head_dim_from_the_config(tiny_models):
    config = json.loads((tiny_models("qwen3") / "config.json").read_text())
    shape = shape_from_config(get_spec("qwen3"), config)
    assert (shape.head_dim, shape.hidden_size // shape.num_heads) == (32, 16)
    assert shape.rotary_dim == 32 and shape.rope_theta == 1e6 and shape.tie_word_embeddings
    assert shape.sliding_window is None


@pytest.mark.parametrize("variant", ["fused", "reference", "dml"])
def test_export_validates_against_pytorch(variant, folders):
    m = read_manifest(folders(variant))
    v = m.validation
    assert m.graph == ("reference" if variant == "reference" else "fused")
    assert m.architecture["head_dim"] == 32 and m.architecture["model_type"] == "qwen3"
    assert v["passed"] and v["greedy_match"] and v["greedy_reference"] == v["greedy_onnx"]
    assert v["max_abs_diff"] < 1e-4 and len(v["step_max_abs_diff"]) == v["decode_steps"] + 1 >= 4
    # The head is tied: no lm_head initializer, the embedding table serves both.
    assert "lm_head.weight" not in {i.name for i in _graph(folders(variant)).initializer}


def test_fused_op_counts(folders):
    """Per layer: q, k and v split, q/k normed per head (the decomposed RMSNorm onnxruntime fuses), then one
    GroupQueryAttention that still applies the rotary itself (head_dim 32: cos_cache width 16)."""
    folder = folders("fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = _ops(folder)
    assert ops["GroupQueryAttention"] == n and ops["RotaryEmbedding"] == 0
    assert ops["MatMul"] == 4 * n and ops["Split"] == 2 * n  # q|k|v and gate|up
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * n and ops["QuickGelu"] == n
    assert ops["ReduceMean"] == ops["Pow"] == 1 + 2 * n  # the first norm, and q and k per layer
    assert ops["Softmax"] == 0 and ops["Where"] == 0 and ops["Transpose"] == 0
    for node in (x for x in _graph(folder).node if x.op_type == "GroupQueryAttention"):
        assert node.input[1] and node.input[2]  # normed q, k and v apart
        assert _attrs(node)["do_rotary"] == 1 and len(node.input) == 9  # ... + cos_cache, sin_cache
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_onnxruntime_fuses_the_qk_norms(folders, tmp_path):
    folder = folders("fused")
    n = read_manifest(folder).architecture["num_layers"]
    ops = optimized_ops(folder, tmp_path)
    assert ops["SimplifiedLayerNormalization"] == 1 + 2 * n and ops["Pow"] == 0


def test_dml_shape_rotates_normed_q_k_outside_attention(folders):
    """DirectML's GQA ignores do_rotary: the norms come first, then RotaryEmbedding, then GQA on q, k, v."""
    from onnx_edge.targets import unsupported_ops

    folder = folders("dml")
    n = read_manifest(folder).architecture["num_layers"]
    g = _graph(folder)
    assert _ops(folder)["RotaryEmbedding"] == 2 * n and _ops(folder)["ReduceMean"] == 1 + 2 * n
    producers = {o: x for x in g.node for o in x.output}
    for node in (x for x in g.node if x.op_type == "RotaryEmbedding"):
        assert producers[node.input[0]].op_type == "Reshape" and "_norm" in producers[node.input[0]].name
    for node in (x for x in g.node if x.op_type == "GroupQueryAttention"):
        assert _attrs(node).get("do_rotary", 0) == 0 and node.input[1] and node.input[2]
    assert unsupported_ops({(x.domain, x.op_type) for x in g.node}, "dml") == []


@pytest.mark.parametrize("config", [dict(precision="int8"), dict(precision="int8", scheme="dynamic"),
                                    dict(precision="int4"), dict(precision="int4", algorithm="gptq")],
                         ids=["int8", "int8-dynamic", "int4", "int4-gptq"])
def test_quantized_variants_generate(config, folders, tmp_path):
    from onnx_edge.quantize import QuantConfig, quantize

    out = tmp_path / "q"
    quantize(folders("fused"), out, QuantConfig(**config, **FAST))
    m = load_without_eos(out)
    assert m.manifest.precision == config["precision"] and m.manifest.graph == "fused"
    quality = m.manifest.quantization["quality"]
    assert quality["top1"] >= (0.85 if config["precision"] == "int8" else 0.3), quality
    ops = collections.Counter(x.op_type for x in _graph(out).node)
    assert ops["GroupQueryAttention"] == m.manifest.architecture["num_layers"]
    r = m.generate(PROMPT, chat=False, max_new_tokens=8)
    assert r.generated_tokens == 8 and all(0 <= t < 512 for t in r.token_ids)
    if config.get("scheme") == "dynamic":
        return  # one activation scale per tensor couples a batch's rows: batched tokens may differ from alone
    # Weight-only: the same tokens through a left-padded batch as alone.
    batch = m.generate_batch(["Hello", PROMPT], chat=False, max_new_tokens=6)
    m.session.reuse_prefix = False
    assert [b.token_ids for b in batch] == [m.generate(p, chat=False, max_new_tokens=6).token_ids
                                            for p in ("Hello", PROMPT)]


@pytest.mark.parametrize("variant", ["cuda-fp16", "dml-fp16"])
def test_fp16_gpu_variants_follow_fp32(variant, folders, tmp_path):
    """Run on the CPU: the fp16 graphs (q/k norm reductions kept in fp32) stay close to fp32."""
    from onnx_edge.quantize import QuantConfig, quantize

    provider = variant.split("-")[0]
    out = tmp_path / "q"
    quantize(folders("dml" if provider == "dml" else "fused"), out,
             QuantConfig(precision="fp16", provider=provider, **FAST))
    m = load_without_eos(out)
    quality = m.manifest.quantization["quality"]
    assert quality["kl"] < 1e-3 and quality["top1"] >= 0.95, quality
    assert m.generate(PROMPT, chat=False, max_new_tokens=4).generated_tokens == 4


@pytest.mark.parametrize("change", [dict(use_sliding_window=True, sliding_window=16, max_window_layers=1),
                                    dict(layer_types=["full_attention", "sliding_attention"])],
                         ids=["use_sliding_window", "layer_types"])
def test_sliding_window_config_is_refused_before_loading(change, tiny_models, tmp_path):
    """Qwen2's rules, inherited: transformers slides only some layers, the graph has one window for all."""
    import shutil

    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.models.spec import check_config

    src = tmp_path / "src"
    shutil.copytree(tiny_models("qwen3"), src)
    config = json.loads((src / "config.json").read_text())
    config.update(change)
    field = next(iter(change))
    with pytest.raises(UnsupportedModelError, match=f"qwen3 {field} .* is not supported"):
        check_config(get_spec("qwen3"), config)
    assert_refused_from_config("qwen3", tiny_models("qwen3"), change, tmp_path / "export")


def test_checkpoint_without_the_qk_norms_is_refused(tiny_models):
    from transformers import AutoModelForCausalLM

    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.export.weights import canonical_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_models("qwen3"), dtype=torch.float32)
    spec = get_spec("qwen3")
    shape = shape_from_config(spec, model.config.to_dict())
    sd = dict(model.state_dict())
    weights = canonical_weights(spec, shape, sd)
    assert weights["layers.1.k_norm.weight"].shape == (32,)
    # Read with qwen2's spec (no q/k norm), the norms have no place: refused, not dropped.
    with pytest.raises(UnsupportedModelError, match="no place in the graph"):
        canonical_weights(get_spec("qwen2"), shape, sd)
    sd.pop("model.layers.0.self_attn.q_norm.weight")
    with pytest.raises(UnsupportedModelError, match="q_norm.weight' missing"):
        canonical_weights(spec, shape, sd)


def test_attention_bias_variant_exports_exactly(tmp_path_factory):
    """attention_bias=true gives q/k/v/o biases: added before the q/k norms (as in HF) and into the skip norm."""
    from onnx_edge.export import export
    from tests.fixtures import build_tiny_model

    src = build_tiny_model("qwen3", tmp_path_factory.mktemp("qwen3-bias"), attention_bias=True,
                           tie_word_embeddings=False)
    for graph in ("fused", "reference"):
        out = tmp_path_factory.mktemp(f"qwen3-bias-{graph}") / "model"
        m = export(str(src), out, graph=graph)
        assert m.validation["passed"] and m.validation["max_abs_diff"] < 1e-4, m.validation
        names = {i.name for i in _graph(out).initializer}
        assert "model.layers.0.attn.qkv.bias" in names and "model.layers.0.attn.o.bias" in names
        assert "lm_head.weight" in names


def test_gguf_blocks_import_into_the_qwen3_graph(exported_models, tmp_path):
    """A GGUF of general.architecture qwen3 (q/k rows as transformers has them, as llama.cpp's Qwen3Model
    writes them) imports its blocks into the fused graph: tests/test_gguf_blocks.py's end-to-end check."""
    pytest.importorskip("gguf")
    from tests import test_gguf_blocks

    test_gguf_blocks.test_tiny_decoder_imported_end_to_end(exported_models, tmp_path, "qwen3")
