"""Quantization on tiny random models: every scheme loads and generates, agrees with fp32 above a
floor, shrinks as expected, records its plan; sensitivity meets its budget; bad options fail clearly."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnx_edge.errors import EdgeError
from onnx_edge.quantize import QuantConfig, QuantizeError, quantize
from onnx_edge.runtime import load

FAST = dict(context=64, eval_windows=4)
PROMPTS = ["Hello there", "The quick brown fox", "In the beginning"]

# name -> (quantize kwargs, floor for top-1 agreement with fp32 on held-out text). Random weights with
# std 0.2 are off any grid, which is hard for 4 bits; the floors sit below what was measured.
SCHEMES = {
    "int8": (dict(precision="int8"), 0.85),  # accuracy level 4 (int8 activations) by default on CPU
    "int8-acc0": (dict(precision="int8", accuracy_level=0), 0.90),
    "int8-dynamic": (dict(precision="int8", scheme="dynamic"), 0.85),
    "int8-static": (dict(precision="int8", scheme="static"), 0.80),
    "int8-static-percentile": (dict(precision="int8", scheme="static", calibration="percentile"), 0.80),
    "int4": (dict(precision="int4"), 0.30),
    "int4-sym-b16-acc4": (dict(precision="int4", symmetric=True, block_size=16, accuracy_level=4), 0.30),
    "int4-b64-acc1": (dict(precision="int4", block_size=64, accuracy_level=1), 0.25),
    "int4-hqq": (dict(precision="int4", algorithm="hqq"), 0.30),
    "int4-gptq": (dict(precision="int4", algorithm="gptq"), 0.30),
    "fp16": (dict(precision="fp16", provider="cuda"), 0.99),
}


@pytest.fixture(scope="module")
def quantized(exported_models, tmp_path_factory):
    """Each scheme applied once to the tiny llama (untied head) and once per tied-table case."""
    done = {}

    def get(name: str, arch: str = "llama"):
        key = (name, arch)
        if key not in done:
            out = tmp_path_factory.mktemp(f"q-{arch}-{name}") / "model"
            quantize(exported_models(arch), out, QuantConfig(**SCHEMES[name][0], **FAST))
            done[key] = out
        return done[key]

    return get


@pytest.mark.parametrize("name", list(SCHEMES))
def test_scheme_loads_generates_and_reports(name, quantized, exported_models):
    folder = quantized(name)
    m = load(folder, provider="cpu")
    q = m.manifest.quantization
    assert m.manifest.precision == SCHEMES[name][0]["precision"]
    assert q["config"]["scheme"] in ("weight_only", "dynamic", "static", "cast")
    quality = q["quality"]
    assert quality["top1"] >= SCHEMES[name][1], quality
    assert 0 <= quality["kl"] < 1.0 and quality["tokens"] > 0
    assert quality["perplexity"] > 1 and quality["perplexity_reference"] > 1
    for prompt in PROMPTS:
        r = m.generate(prompt, chat=False, max_new_tokens=6)
        assert r.generated_tokens >= 1 and all(0 <= t < 512 for t in r.token_ids)


def test_int8_weight_only_follows_fp32_greedy(quantized, exported_models):
    """Tokens before the first divergence, summed over prompts (random weights have near-ties)."""
    fp32 = load(exported_models("llama"), provider="cpu")
    int8 = load(quantized("int8-acc0"), provider="cpu")
    fp32.eos_ids = int8.eos_ids = set()
    agreed = 0
    for p in PROMPTS:
        a = fp32.generate(p, chat=False, max_new_tokens=8).token_ids
        b = int8.generate(p, chat=False, max_new_tokens=8).token_ids
        agreed += next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    assert agreed >= 12  # of 24


def _data_mb(folder) -> float:
    return (folder / "model.onnx.data").stat().st_size / 1e6


def test_sizes_shrink_as_expected(quantized, exported_models):
    fp32 = _data_mb(exported_models("llama"))
    int8, int4 = _data_mb(quantized("int8")), _data_mb(quantized("int4"))
    fp16 = _data_mb(quantized("fp16"))
    assert int8 <= 0.40 * fp32  # 1 byte + a 4-byte scale (and zero point) per 32 weights, vs 4 bytes
    assert int4 <= 0.75 * int8
    assert 0.45 * fp32 <= fp16 <= 0.55 * fp32
    sizes = json.loads((quantized("int4") / "manifest.json").read_text())["quantization"]["size_mb"]
    assert sizes["after"] < sizes["before"]


def test_manifest_records_the_plan(quantized):
    q = json.loads((quantized("int4-sym-b16-acc4") / "manifest.json").read_text())["quantization"]
    cfg = q["config"]
    assert (cfg["precision"], cfg["block_size"], cfg["symmetric"], cfg["accuracy_level"], cfg["algorithm"]) == \
        ("int4", 16, True, 4, "rtn")
    assert set(q["weights"].values()) == {"int4"}
    assert "lm_head.weight" in q["weights"] and "model.embed_tokens.weight" in q["weights"]
    model = onnx.load(quantized("int4-sym-b16-acc4") / "model.onnx", load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all({a.name: a.i for a in n.attribute}["block_size"] == 16 for n in nbits)
    assert all({a.name: a.i for a in n.attribute}["accuracy_level"] == 4 for n in nbits)


@pytest.mark.parametrize("symmetric", [False, True])
def test_tied_embedding_shares_one_quantized_table(symmetric, exported_models, tmp_path):
    """qwen2's tiny model ties lm_head to the embedding (the case onnxruntime-genai's int4 build fails on)."""
    out = tmp_path / "q"
    quantize(exported_models("qwen2"), out, QuantConfig(precision="int4", symmetric=symmetric, **FAST))
    model = onnx.load(out / "model.onnx", load_external_data=False)
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.input[1] == gather.input[0])
    assert head.input[1] == "model.embed_tokens.weight.q4"
    m = load(out, provider="cpu")
    assert m.generate("Hello", chat=False, max_new_tokens=5).generated_tokens >= 1


def test_keep_pattern_leaves_weights_fp32(exported_models, tmp_path):
    out = tmp_path / "q"
    quantize(exported_models("llama"), out, QuantConfig(precision="int8", keep=["*.down", "lm_head*"], **FAST))
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["weights"]["model.layers.0.mlp.down.weight"] == "fp32"
    assert q["weights"]["lm_head.weight"] == "fp32"
    assert q["weights"]["model.layers.0.attn.qkv.weight"] == "int8"
    model = onnx.load(out / "model.onnx", load_external_data=False)
    kept = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1].endswith("mlp.down.weight")]
    assert len(kept) == 2


def test_block_128_on_a_64_wide_model_falls_back_for_tables(exported_models, tmp_path):
    m = quantize(exported_models("llama"), tmp_path / "q", QuantConfig(precision="int4", block_size=128, **FAST))
    assert m.quantization["config"]["block_size"] == 128 and m.quantization["table_block_size"] == 64
    assert load(tmp_path / "q", provider="cpu").generate("Hi", chat=False, max_new_tokens=3).generated_tokens >= 1


def test_embeddings_keep_leaves_tables_fp32(exported_models, tmp_path):
    out = tmp_path / "q"
    quantize(exported_models("qwen2"), out, QuantConfig(precision="int4", embeddings="keep", **FAST))
    model = onnx.load(out / "model.onnx", load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert "GatherBlockQuantized" not in ops and "Gemm" in ops and "Gather" in ops
    weights = json.loads((out / "manifest.json").read_text())["quantization"]["weights"]
    assert "model.embed_tokens.weight" not in weights and set(weights.values()) == {"int4"}


def test_keep_precision_int8_under_int4(exported_models, tmp_path):
    out = tmp_path / "q"
    quantize(exported_models("llama"), out, QuantConfig(precision="int4", keep=["model.layers.1.*"], **FAST))
    weights = json.loads((out / "manifest.json").read_text())["quantization"]["weights"]
    assert weights["model.layers.1.attn.o.weight"] == "int8" and weights["model.layers.0.attn.o.weight"] == "int4"
    model = onnx.load(out / "model.onnx", load_external_data=False)
    bits = {n.input[1]: {a.name: a.i for a in n.attribute}["bits"] for n in model.graph.node if n.op_type == "MatMulNBits"}
    assert bits["model.layers.1.attn.o.weight_Q8"] == 8 and bits["model.layers.0.attn.o.weight_Q4"] == 4


def test_sensitivity_plan_meets_budget(exported_models, tmp_path):
    out = tmp_path / "q"
    m = quantize(exported_models("llama"), out, QuantConfig(precision="int4", max_kl=0.05, **FAST))
    s = m.quantization["sensitivity"]
    assert s["met"] and s["plan_kl"] <= 0.05
    assert s["steps"][0]["kl"] > 0.05  # plain int4 misses the budget, so the search had work to do
    order = sorted(s["unit_kl"], key=s["unit_kl"].get, reverse=True)
    assert s["kept"] == order[:len(s["kept"])]  # kept most-sensitive first
    assert m.quantization["config"]["auto_keep"] == s["kept"]
    plain = quantize(exported_models("llama"), tmp_path / "plain", QuantConfig(precision="int4", **FAST))
    assert m.quantization["quality"]["kl"] < plain.quantization["quality"]["kl"]
    assert m.quantization["size_mb"]["after"] > plain.quantization["size_mb"]["after"]


def test_fp16_keeps_logits_fp32_and_kv_fp16(quantized):
    folder = quantized("fp16")
    m = load(folder, provider="cpu")
    assert m.manifest.io.kv_dtype == "float16"
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types["logits"] == onnx.TensorProto.FLOAT and types["present.0.key"] == onnx.TensorProto.FLOAT16
    assert m.generate("Hello", chat=False, max_new_tokens=4).generated_tokens >= 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(precision="int4", block_size=7), "--block-size must be one of 16/32/64/128, got 7"),
    (dict(precision="int3"), "--precision must be one of int8/int4/fp16"),
    (dict(precision="int4", provider="tpu"), "--provider must be one of cpu/cuda/dml"),
    (dict(precision="int8", scheme="dynamic", provider="cuda"), "not supported on provider 'cuda'"),
    (dict(precision="int8", provider="dml"), "not supported on provider 'dml'"),
    (dict(precision="int4", scheme="static"), "does not apply to int4"),
    (dict(precision="int4", accuracy_level=2), "--accuracy-level must be one of 0/1/4"),
    (dict(precision="int8", algorithm="gptq"), "int4 only"),
    (dict(precision="int4", max_kl=-1.0), "positive"),
    (dict(precision="int8", int8_format="u8s8"), "applies to the int8 dynamic and static schemes only"),
    (dict(precision="int8", scheme="dynamic", int8_format="s8s8"), "does not apply to int8 dynamic"),
    (dict(precision="int8", scheme="dynamic", max_kl=0.1), "--max-kl works with weight-only schemes"),
    (dict(precision="int4", context=2), "--context must be at least 4"),
    (dict(precision="int4", eval_windows=0), "--eval-windows must be at least 1"),
])
def test_bad_options_fail_clearly(kwargs, match, exported_models, tmp_path):
    with pytest.raises(QuantizeError, match=match):
        quantize(exported_models("llama"), tmp_path / "q", QuantConfig(**kwargs))
    assert not (tmp_path / "q").exists()


def test_refuses_quantized_input_and_existing_output(quantized, exported_models, tmp_path):
    with pytest.raises(QuantizeError, match="already int4"):
        quantize(quantized("int4"), tmp_path / "again", QuantConfig(precision="int8"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(EdgeError, match="not empty"):
        quantize(exported_models("llama"), tmp_path / "busy", QuantConfig(precision="int8"))
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_cli_quantize_prints_report(exported_models, tmp_path):
    from click.testing import CliRunner

    from onnx_edge.cli import cli

    res = CliRunner().invoke(cli, ["quantize", str(exported_models("llama")), "-o", str(tmp_path / "q"),
                                   "--precision", "int8", "--context", "64", "--eval-windows", "2"])
    assert res.exit_code == 0, res.output
    assert "KL" in res.output and "top-1 agreement" in res.output and "perplexity" in res.output
    bad = CliRunner().invoke(cli, ["quantize", str(exported_models("llama")), "-o", str(tmp_path / "b"),
                                   "--block-size", "7"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "--block-size must be one of 16/32/64/128, got 7" in bad.output


def test_quality_metrics_by_hand():
    from onnx_edge.evaluate.quality import log_softmax, score_window

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5))
    window = rng.integers(0, 5, size=8)
    ref = log_softmax(logits)
    same = score_window(ref, ref, window)
    assert same.kl_sum == 0 and same.top1_agree == same.tokens == 3  # positions 4..6 score tokens 5..7
    assert same.nll_sum == pytest.approx(-sum(ref[t, window[t + 1]] for t in range(4, 7)))
    other = log_softmax(logits + rng.normal(scale=0.5, size=logits.shape))
    s = score_window(ref, other, window)
    p = np.exp(ref[4:7])
    assert s.kl_sum == pytest.approx(float(np.sum(p * (ref[4:7] - other[4:7]))))
    assert s.kl_sum > 0


def test_config_resolves_defaults_once_and_stays_frozen():
    import dataclasses

    from onnx_edge.manifest import Manifest

    cfg = QuantConfig(precision="int8", scheme="dynamic")
    assert (cfg.int8_format, cfg.accuracy_level, cfg.keep_precision) == ("u8u8", 0, "fp32")
    assert cfg.provider is None and cfg.embeddings is None  # the source folder decides these
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.block_size = 64
    dml = Manifest(architecture={}, provider="dml")
    int4 = QuantConfig(precision="int4", keep=["lm_head*"])
    resolved = int4.for_source(dml)
    assert (resolved.provider, resolved.accuracy_level, resolved.embeddings) == ("dml", 0, "keep")
    assert resolved.keep == ("lm_head*",) and int4.provider is None  # a new config; the first is unchanged
    assert QuantConfig(precision="int4", provider="cpu").for_source(dml).provider == "cpu"
    assert QuantConfig(precision="int4", provider="cpu").accuracy_level == 4
    with pytest.raises(QuantizeError, match="GatherBlockQuantized"):
        QuantConfig(precision="int4", embeddings="quantize").for_source(dml)


def test_quantize_takes_a_config(exported_models, tmp_path):
    with pytest.raises(TypeError, match="QuantConfig"):
        quantize(exported_models("llama"), tmp_path / "q", "int8")
    with pytest.raises(QuantizeError, match="fp16 cast is not supported on provider 'cpu'"):
        quantize(exported_models("llama"), tmp_path / "q", QuantConfig(precision="fp16"))  # a cpu folder's target
    assert not (tmp_path / "q").exists()


def test_record_reads_both_shapes_and_labels_them_once():
    from onnx_edge.manifest import Manifest
    from onnx_edge.quant_record import QuantRecord
    from onnx_edge.quantize.report import format_report

    gguf = {"method": "gguf_blocks", "gguf": "m.gguf", "gguf_sha256": "ab", "accuracy_level": 0, "exact": True,
            "imported": 2, "size_mb": {"before": 4.0, "after": 1.0},
            "weights": {"a": {"status": "imported", "qtype": "Q4_0"}, "b": {"status": "imported", "qtype": "Q8_0"},
                        "c": {"status": "kept"}}}
    record = QuantRecord.from_dict(gguf)
    assert record.label("gguf-q4_0") == "gguf Q4_0/Q8_0 blocks (exact)"
    assert record.to_dict() == gguf  # the import's own shape, nothing added
    text = format_report("out", Manifest(architecture={}, precision="gguf-q4_0", quantization=gguf))
    assert "gguf Q4_0/Q8_0 blocks (exact) from m.gguf" in text and "1 Q4_0, 1 Q8_0, 1 fp32" in text

    config = {"precision": "int4", "scheme": "weight_only", "algorithm": "rtn", "block_size": 32,
              "symmetric": False, "accuracy_level": 4, "keep": ["lm_head*"], "provider": "cpu"}
    assert QuantRecord.from_dict({"config": config}).label("int4") == "int4 weight_only rtn b32 asym acc4 (+1 kept)"
    dynamic = {"precision": "int8", "scheme": "dynamic", "int8_format": "u8u8"}
    assert QuantRecord.from_dict({"config": dynamic}).label("int8") == "int8 dynamic u8u8"
    # older, partial and hand-edited records still read, and say they are incomplete
    for broken in ({"config": {"precision": "int8", "scheme": "weight_only"}, "size_mb": {"before": 1.0}},
                   {"config": "x", "weights": [], "size_mb": None, "method": 3}, {}):
        record = QuantRecord.from_dict(broken)
        assert record.label("int8").startswith("int8") and not record.complete
        text = format_report("out", Manifest(architecture={}, precision="int8", quantization=broken))
        assert "incomplete record" in text
