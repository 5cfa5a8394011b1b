"""Export parity for every architecture: ONNX vs PyTorch logits, greedy tokens, batches, manifest."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnx_edge.manifest import MANIFEST_NAME, read_manifest
from onnx_edge.runtime.integrity import verify_files
from onnx_edge.models import get_spec, supported_model_types
from tests.fixtures import TINY_CONFIGS

ARCHS = sorted(TINY_CONFIGS)


def test_every_supported_architecture_has_a_tiny_model():
    # A new models/<type>.py without a test model fails here.
    assert sorted(supported_model_types()) == ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_export_validates_and_records_it(arch, exported_models):
    folder = exported_models(arch)
    m = read_manifest(folder)
    v = m.validation
    assert v["passed"] and v["greedy_match"]
    assert v["max_abs_diff"] < 1e-4
    assert v["decode_steps"] >= 3 and len(v["step_max_abs_diff"]) == v["decode_steps"] + 1
    assert v["greedy_tokens"] == 16 and v["greedy_reference"] == v["greedy_onnx"]
    assert m.architecture["model_type"] == arch
    assert m.precision == "fp32" and m.provider == "cpu"
    verify_files(folder, m)  # every file hashed and present


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_io_contract(arch, exported_models):
    folder = exported_models(arch)
    m = read_manifest(folder)
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    n = m.architecture["num_layers"]
    inputs = {i.name: i for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    expected_in = ["input_ids", "attention_mask", "position_ids"]
    expected_in += [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    if m.io.logits_to_keep:  # optional input (initializer-backed, default 0 = all positions), fused graphs
        expected_in.append(m.io.logits_to_keep)
    assert list(inputs) == expected_in
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    dims = [d.dim_param or d.dim_value for d in inputs["past_key_values.0.key"].type.tensor_type.shape.dim]
    assert dims == ["batch", m.architecture["num_kv_heads"], "past_sequence", m.architecture["head_dim"]]
    # Weights live in the external data file, not in the graph file.
    assert (folder / "model.onnx.data").stat().st_size > 10 * (folder / "model.onnx").stat().st_size
    onnx.checker.check_model(str(folder / "model.onnx"))


@pytest.mark.parametrize("arch", ARCHS)
def test_runtime_greedy_equals_transformers_generate(arch, tiny_models, exported_models):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from onnx_edge.runtime import load

    src = tiny_models(arch)
    ref_model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(src)
    prompt = "The quick brown fox jumps over the lazy dog because"
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = ref_model.generate(**ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=3)
    ref = out[0, ids["input_ids"].shape[1]:].tolist()

    model = load(exported_models(arch), provider="cpu")
    model.eos_ids = set()  # compare all 24 tokens, as generate() above ignores eos
    got = model.generate(prompt, chat=False, max_new_tokens=24)
    assert got.token_ids == ref


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mistral"])
def test_left_padded_batch_equals_single_runs(arch, exported_models):
    from onnx_edge.runtime import load

    model = load(exported_models(arch), provider="cpu")
    model.eos_ids = set()
    prompts = ["Hello", "The quick brown fox jumps over the lazy dog again and again", "A list of"]
    batch = model.generate_batch(prompts, chat=False, max_new_tokens=12)
    single = [model.generate(p, chat=False, max_new_tokens=12) for p in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]


def test_sliding_window_matches_pytorch_past_the_window(tiny_models, exported_models):
    """Mistral's window is 16 tokens: a 40-token prompt plus decode exercises the windowed mask."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from onnx_edge.runtime import load

    ref = AutoModelForCausalLM.from_pretrained(tiny_models("mistral"), dtype=torch.float32).eval()
    model = load(exported_models("mistral"), provider="cpu")
    ids = np.arange(4, 44, dtype=np.int64)[None]  # (1, 40)
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
    s = model.session
    got, _ = s.forward(ids, np.ones_like(ids), np.arange(40)[None], s.empty_cache(1))
    assert np.max(np.abs(got - expected)) < 1e-4


def test_manifest_records_contract_and_provenance(exported_models):
    folder = exported_models("llama")
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["schema_version"].startswith("1.")
    arch = data["architecture"]
    for key in ("num_layers", "num_heads", "num_kv_heads", "head_dim", "hidden_size", "vocab_size",
                "context_length", "bos_token_id", "eos_token_ids", "pad_token_id"):
        assert key in arch
    assert data["io"]["past_key"] == "past_key_values.{i}.key"
    assert data["io"]["present_value"] == "present.{i}.value"
    assert data["io"]["kv_layout"] == "batch,kv_heads,seq,head_dim"
    prov = data["provenance"]
    assert prov["source_kind"] == "folder" and len(prov["source_sha256"]) == 64
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(prov["libraries"])
    files = data["files"]
    for name in ("model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "generation_config.json", "config.json"):
        assert name in files and len(files[name]["sha256"]) == 64


def test_untied_and_tied_heads(exported_models):
    """Tied models reuse the embedding (no lm_head initializer); untied ones carry their own."""
    names = {}
    for arch in ("llama", "qwen2"):
        model = onnx.load(exported_models(arch) / "model.onnx", load_external_data=False)
        names[arch] = {i.name for i in model.graph.initializer}
    assert "lm_head.weight" in names["llama"]  # tie_word_embeddings=False in the fixture
    assert "lm_head.weight" not in names["qwen2"]


def test_weight_map_refuses_unknown_tensors(tiny_models):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.export.weights import canonical_weights
    from onnx_edge.models import shape_from_config

    model = AutoModelForCausalLM.from_pretrained(tiny_models("llama"), dtype=torch.float32)
    spec = get_spec("llama")
    shape = shape_from_config(spec, model.config.to_dict())
    sd = dict(model.state_dict())
    sd["model.layers.0.self_attn.surprise.weight"] = torch.zeros(2)
    with pytest.raises(UnsupportedModelError, match="no place in the graph"):
        canonical_weights(spec, shape, sd)
    sd.pop("model.layers.0.self_attn.surprise.weight")
    sd.pop("model.layers.1.mlp.down_proj.weight")
    with pytest.raises(UnsupportedModelError, match="missing"):
        canonical_weights(spec, shape, sd)


@pytest.mark.parametrize("opset", [18, 21])
def test_other_opsets_export_and_validate(opset, tiny_models, tmp_path):
    from onnx_edge.export import export

    m = export(str(tiny_models("llama")), tmp_path / "out", opset=opset)
    assert m.validation["passed"] and m.opset == opset
    assert onnx.load(tmp_path / "out" / "model.onnx", load_external_data=False).opset_import[0].version == opset


# Each family's facts as its spec states them (models/*.py): the fused emitter, and the GGUF layout that
# `export --precision gguf` imports blocks from (architecture name, q/k rows permuted by llama.cpp).
FAMILY_FACTS = {
    "gemma": (True, None),  # gemma family
    "gemma2": (True, None),
    "gemma3_text": (True, None),
    "gpt2": (True, None),
    "llama": (True, ("llama", True)),
    "mistral": (True, ("mistral", False)),
    "phi3": (True, None),
    "qwen2": (True, ("qwen2", False)),
    "qwen3": (True, ("qwen3", False)),
    "granite": (True, None),  # granite / smollm3 / olmo2
    "smollm3": (True, None),
    "olmo2": (True, None),
    "gpt_neox": (True, None),
}


def test_every_spec_states_its_family_facts():
    from onnx_edge.models import ArchSpec, GGUFLayout

    assert sorted(FAMILY_FACTS) == ARCHS
    for arch in ARCHS:
        spec = get_spec(arch)
        assert isinstance(spec.fused, bool) and (spec.gguf is None or isinstance(spec.gguf, GGUFLayout))
        layout = spec.gguf and (spec.gguf.architecture, spec.gguf.permuted_qk)
        assert (spec.fused, layout) == FAMILY_FACTS[arch], arch
    # A spec copied with dataclasses.replace must restate its layout, not claim its base's file name.
    names = [get_spec(a).gguf.architecture for a in ARCHS if get_spec(a).gguf]
    assert len(names) == len(set(names))
    # Nothing falls back by omission: a spec without these facts does not build.
    with pytest.raises(TypeError, match="fused"):
        ArchSpec(model_type="x", norm="rms", positions="rope", mlp="gated", activation="silu", weights={})


def test_gguf_layout_comes_from_the_spec():
    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.models import gguf_layout

    assert gguf_layout("llama") is get_spec("llama").gguf
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2, qwen3 tensor layouts, not 'gpt2'"):
        gguf_layout("gpt2")


@pytest.mark.parametrize("arch", ARCHS)
def test_default_export_takes_the_graph_its_spec_says(arch, exported_models):
    m = read_manifest(exported_models(arch))
    assert m.graph == ("fused" if get_spec(arch).fused else "reference")


def test_a_family_without_a_fused_graph_exports_the_reference(tiny_models, tmp_path, monkeypatch):
    import dataclasses

    from onnx_edge.models import gpt2
    from onnx_edge.errors import OutputError
    from onnx_edge.export import export

    monkeypatch.setattr(gpt2, "SPEC", dataclasses.replace(gpt2.SPEC, fused=False))
    m = export(str(tiny_models("gpt2")), tmp_path / "auto", validate=False)
    assert m.graph == "reference" and m.io.kv_mode == "concat" and m.io.logits_to_keep is None
    with pytest.raises(OutputError, match="no fused graph for gpt2"):
        export(str(tiny_models("gpt2")), tmp_path / "fused", validate=False, graph="fused")
    assert not (tmp_path / "fused").exists()


def test_builders_return_their_io(tiny_models):
    """Each graph builder says what I/O it wrote (the manifest's io); two builds share no IOSpec."""
    from onnx_edge.export.decoder import build_decoder
    from onnx_edge.export.fused import build_fused_decoder
    from onnx_edge.manifest import IOSpec
    from onnx_edge.models import shape_from_config

    spec = get_spec("gpt2")
    config = json.loads((tiny_models("gpt2") / "config.json").read_text())
    shape = shape_from_config(spec, config)
    rng = np.random.default_rng(0)
    h, n, v, c = shape.hidden_size, shape.intermediate_size, shape.vocab_size, shape.context_length
    weights = {"embed_tokens.weight": rng.standard_normal((v, h), np.float32),
               "pos_embed.weight": rng.standard_normal((c, h), np.float32),
               "final_norm.weight": np.ones(h, np.float32), "final_norm.bias": np.zeros(h, np.float32)}
    for i in range(shape.num_layers):
        p = f"layers.{i}."
        for key, size in (("attn_norm", h), ("mlp_norm", h)):
            weights[p + key + ".weight"], weights[p + key + ".bias"] = np.ones(size, np.float32), np.zeros(size, np.float32)
        for key, rows, cols in (("qkv", h, 3 * h), ("o", h, h), ("up", h, n), ("down", n, h)):
            weights[p + key + ".weight"] = rng.standard_normal((rows, cols), np.float32)
    proto, io = build_decoder(spec, shape, weights, None)
    assert io == IOSpec() and proto.graph.output[0].name == io.logits
    fused_proto, fused = build_fused_decoder(spec, shape, weights, None)
    assert fused == IOSpec(kv_mode="shared_buffer", logits_to_keep="logits_to_keep")
    assert fused.logits_to_keep in [i.name for i in fused_proto.graph.input]
    _, again = build_fused_decoder(spec, shape, weights, None)
    assert again == fused and again is not fused
