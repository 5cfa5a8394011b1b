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
