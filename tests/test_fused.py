"""The fused graph (onnxruntime contrib ops) and the decode loop that runs it: parity with PyTorch and
with the reference graph, fused-op counts, left padding, sliding windows, the shared KV buffer, logits
for the last position only, and prefix reuse across chat turns."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest

from onnx_edge.manifest import Manifest, read_manifest
from onnx_edge.models import get_spec
from tests.family_checks import load_without_eos
from tests.fixtures import TINY_CONFIGS

ARCHS = sorted(TINY_CONFIGS)  # llama, mistral, qwen2, qwen3, phi3 (GQA + RMSNorm + rotary) and gpt2
PROMPT = "The quick brown fox jumps over the lazy dog because"


class FusedModels:
    """Each tiny model exported with graph="fused" once per session (shares the conftest export when the
    default graph is already fused). Read-only."""

    def __init__(self, factory, tiny, exported):
        self._factory, self._tiny, self._exported = factory, tiny, exported
        self._dirs = {}

    def __call__(self, arch: str, graph: str = "fused"):
        key = (arch, graph)
        if key not in self._dirs:
            default = self._exported(arch)
            if read_manifest(default).graph == graph:
                self._dirs[key] = default
            else:
                from onnx_edge.export import export

                out = self._factory.mktemp(f"{graph}-{arch}") / "model"
                export(str(self._tiny(arch)), out, graph=graph)
                self._dirs[key] = out
        return self._dirs[key]


@pytest.fixture(scope="session")
def fused_models(tmp_path_factory, tiny_models, exported_models):
    return FusedModels(tmp_path_factory, tiny_models, exported_models)




def _op_counts(folder) -> collections.Counter:
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    return collections.Counter(n.op_type for n in model.graph.node)


def test_default_export_is_fused(exported_models):
    for arch in ARCHS:
        m = read_manifest(exported_models(arch))
        assert m.graph == "fused"
        assert m.io.kv_mode == "shared_buffer" and m.io.logits_to_keep == "logits_to_keep"


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_export_validates_against_pytorch(arch, fused_models):
    m = read_manifest(fused_models(arch))
    v = m.validation
    assert m.graph == "fused"
    assert v["passed"] and v["greedy_match"] and v["greedy_reference"] == v["greedy_onnx"]
    assert v["max_abs_diff"] < 1e-4, v["step_max_abs_diff"]


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_op_counts(arch, fused_models):
    folder = fused_models(arch)
    shape = read_manifest(folder).architecture
    n = shape["num_layers"]
    ops = _op_counts(folder)
    assert ops["GroupQueryAttention"] == n
    # No attention left in plain ops: no score MatMul, no Softmax, no mask Where, no per-layer Concat.
    assert ops["Softmax"] == 0 and ops["Where"] == 0 and ops["Transpose"] == 0
    assert ops["MatMul"] == 4 * n  # qkv, o, gate|up (or fc), down (or proj)
    if arch == "gpt_neox":  # parallel block: two LayerNormalization of one x a layer, the final; erf GELU
        assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 2 * n + 1
        assert ops["BiasGelu"] == n and ops["Split"] == 0 and ops["RotaryEmbedding"] == 0  # GQA rotates 16 of 64
    elif arch == "gpt2":
        assert ops["SkipLayerNormalization"] == 2 * n and ops["FastGelu"] == n
        assert ops["LayerNormalization"] == 1  # the first norm has no residual to add
        assert ops["Split"] == 0  # GQA takes the packed qkv
    else:
        post_norm = get_spec(arch).block == "post_norm"  # olmo2: output norms, no skip-norm chain
        gelu = "QuickGelu" if get_spec(arch).activation == "silu" else "FastGelu"  # gemma family: GeGLU
        assert ops["SkipSimplifiedLayerNormalization"] == (0 if post_norm else 2 * n) and ops[gelu] == n
        # GQA applies the rotary itself when onnxruntime allows it (rotary_dim / 2 a multiple of 8); the
        # tiny phi3's partial rotary (8 of 16 channels) takes the RotaryEmbedding fallback.
        inside = (shape["rotary_dim"] // 2) % 8 == 0
        assert ops["RotaryEmbedding"] == (0 if inside else 2 * n)
        # gate|up, + q|k|v for the fallback or for qwen3's q/k norms (GQA still rotates the normed q and k)
        split_qkv = not inside or get_spec(arch).qk_norm != "none"
        assert ops["Split"] == (2 * n if split_qkv else n)
        # first norm (or olmo2's final and 2 output norms a layer), + q, k
        # gemma2 / gemma3 (sandwich): + the 2 output norms a layer before the skip norms
        sandwich = get_spec(arch).block == "sandwich"
        qk = get_spec(arch).qk_norm != "none"
        assert ops["ReduceMean"] == 1 + (2 * n if post_norm or sandwich else 0) + (2 * n if qk else 0)
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}.get("com.microsoft") == 1
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_partial_rotary_inside_gqa(tmp_path_factory):
    """A phi3 whose partial rotary fits GQA's own rotary (head_dim 32, factor 0.5: 16 rotated channels):
    exported fused, checked against PyTorch, no RotaryEmbedding nodes, left-padded batch = single runs."""
    pytest.importorskip("torch")
    from onnx_edge.export import export
    from tests.fixtures import build_tiny_model

    src = build_tiny_model("phi3", tmp_path_factory.mktemp("phi3-wide"), hidden_size=128, intermediate_size=256)
    out = tmp_path_factory.mktemp("phi3-wide-onnx") / "model"
    m = export(str(src), out)
    assert m.graph == "fused" and m.architecture["rotary_dim"] == 16 and m.architecture["head_dim"] == 32
    assert m.validation["passed"] and m.validation["max_abs_diff"] < 1e-4
    assert _op_counts(out)["RotaryEmbedding"] == 0
    loaded = load_without_eos(out)
    prompts = ["Hello", "The quick brown fox jumps over the lazy dog", "A"]
    batch = loaded.generate_batch(prompts, chat=False, max_new_tokens=8)
    loaded.session.reuse_prefix = False
    assert [r.token_ids for r in batch] == [loaded.generate(p, chat=False, max_new_tokens=8).token_ids
                                            for p in prompts]


def test_reference_graph_stays_selectable(fused_models):
    folder = fused_models("llama", graph="reference")
    m = read_manifest(folder)
    assert m.graph == "reference" and m.io.kv_mode == "concat" and m.io.logits_to_keep is None
    assert m.validation["passed"]
    ops = _op_counts(folder)
    assert ops["GroupQueryAttention"] == 0 and ops["Softmax"] == m.architecture["num_layers"]


@pytest.mark.parametrize("arch", ["llama", "phi3", "qwen3", "gpt2"])
def test_fused_equals_reference_on_a_left_padded_batch(arch, fused_models):
    """Both graphs fed the same left-padded batch and 4 cached steps agree at every real position."""
    from onnx_edge.runtime.session import DecoderSession

    sessions = []
    for graph in ("fused", "reference"):
        folder = fused_models(arch, graph=graph)
        sessions.append(DecoderSession(folder, read_manifest(folder), "cpu"))
    rng = np.random.default_rng(0)
    lens, width = [30, 17, 2], 30
    ids = np.full((3, width), 3, np.int64)
    mask = np.zeros((3, width), np.int64)
    for row, n in enumerate(lens):
        ids[row, width - n:] = rng.integers(4, 500, n)
        mask[row, width - n:] = 1
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    caches = [s.empty_cache(3) for s in sessions]
    worst = 0.0
    for _ in range(5):
        (lf, cf), (lr, cr) = (s.forward(ids, mask, pos, c) for s, c in zip(sessions, caches))
        caches = [cf, cr]
        real = mask[:, -ids.shape[1]:].astype(bool)
        worst = max(worst, float(np.abs(lf - lr)[real].max()))
        ids = lr[:, -1:].argmax(-1)
        pos = pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((3, 1), np.int64)], 1)
    assert worst < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_greedy_equals_transformers_generate(arch, tiny_models, fused_models):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tiny_models(arch)
    ref_model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(src)
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = ref_model.generate(**ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=3)
    expected = out[0, ids["input_ids"].shape[1]:].tolist()
    got = load_without_eos(fused_models(arch)).generate(PROMPT, chat=False, max_new_tokens=24)
    assert got.token_ids == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_left_padded_batch_equals_single_runs(arch, fused_models):
    model = load_without_eos(fused_models(arch))
    prompts = ["Hello", "The quick brown fox jumps over the lazy dog again and again", "A list of"]
    batch = model.generate_batch(prompts, chat=False, max_new_tokens=12)
    model.session.reuse_prefix = False
    single = [model.generate(p, chat=False, max_new_tokens=12) for p in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]


def test_sliding_window_beyond_the_window(tiny_models, fused_models):
    """Mistral's window is 16: a 40-token prompt, then 24 greedy tokens through the shared buffer, against
    PyTorch's logits at every prompt position and transformers' generate."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_models("mistral"), dtype=torch.float32).eval()
    model = load_without_eos(fused_models("mistral"))
    assert model.shape.sliding_window == 16
    ids = np.arange(4, 44, dtype=np.int64)[None]  # (1, 40)
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
        generated = ref.generate(torch.from_numpy(ids), attention_mask=torch.ones(1, 40, dtype=torch.long),
                                 max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=3)
    s = model.session
    got, _ = s.forward(ids, np.ones_like(ids), np.arange(40)[None], s.empty_cache(1))
    assert np.max(np.abs(got - expected)) < 1e-4
    cache = s.new_cache(1, 40)
    every = s.step(ids, np.ones_like(ids), np.arange(40)[None], cache, last_only=False)
    assert np.max(np.abs(every - expected)) < 1e-4  # the shared-buffer path, all positions
    from onnx_edge.runtime.generate import decode_steps
    from onnx_edge.runtime.sampling import SamplingParams

    tokens = [int(t[0]) for t in decode_steps(model, [ids[0].tolist()], SamplingParams(temperature=0.0), 24)]
    assert tokens == generated[0, 40:].tolist()


def test_shared_buffer_is_written_in_place_and_matches_concat(fused_models):
    """step() writes into the preallocated buffers (same arrays every step) and what it writes equals the
    concat-style forward's present; last-position logits equal the full logits' last row."""
    folder = fused_models("llama")
    model = load_without_eos(folder)
    s = model.session
    ids = np.arange(5, 25, dtype=np.int64)[None]
    cache = s.new_cache(1, 24)
    keys_before = [id(k) for k in cache.keys]
    full, past = s.forward(ids, np.ones_like(ids), np.arange(20)[None], s.empty_cache(1))
    last = s.step(ids, np.ones_like(ids), np.arange(20)[None], cache)
    assert last.shape == (1, 1, model.shape.vocab_size)
    assert np.max(np.abs(last[:, 0] - full[:, -1])) < 1e-5
    token = full[:, -1:].argmax(-1)
    full2, past = s.forward(token, np.ones((1, 21), np.int64), np.array([[20]]), past)
    last2 = s.step(token, np.ones((1, 21), np.int64), np.array([[20]]), cache)
    assert np.max(np.abs(last2[:, 0] - full2[:, -1])) < 1e-5
    assert [id(k) for k in cache.keys] == keys_before and cache.length == 21
    for (k, v), ck, cv in zip(past, cache.keys, cache.values):
        assert np.max(np.abs(ck[:, :, :21] - k)) < 1e-6 and np.max(np.abs(cv[:, :, :21] - v)) < 1e-6
    with pytest.raises(ValueError, match="capacity"):
        s.step(np.ones((1, 4), np.int64), np.ones((1, 25), np.int64), np.arange(21, 25)[None], cache)


@pytest.mark.parametrize("graph", ["fused", "reference"])
def test_prefix_reuse_equals_a_fresh_run(graph, fused_models):
    """Turn 2 of a chat starts with turn 1's tokens: only the new tokens are prefilled, and every
    response (greedy and seeded sampling) equals the one a fresh model gives."""
    folder = fused_models("llama", graph=graph)
    warm, cold = load_without_eos(folder), load_without_eos(folder)
    cold.session.reuse_prefix = False
    turn1 = [{"role": "user", "content": "Tell me about the sea."}]
    a1, b1 = (m.generate(messages=turn1, max_new_tokens=10) for m in (warm, cold))
    assert a1.token_ids == b1.token_ids
    turn2 = turn1 + [{"role": "assistant", "content": a1.text}, {"role": "user", "content": "And the sky?"}]
    for kw in (dict(max_new_tokens=12), dict(max_new_tokens=40, temperature=0.9, top_p=0.9, seed=3)):
        a2, b2 = (m.generate(messages=turn2, **kw) for m in (warm, cold))
        assert warm.session.last_reused >= len(warm.encode(messages=turn1))  # the whole first prompt, at least
        assert a2.token_ids == b2.token_ids and a2.text == b2.text
        turn2 = turn2 + [{"role": "assistant", "content": a2.text}, {"role": "user", "content": "Why?"}]
    # The same prompt again reuses all but its last token; a different prompt reuses nothing.
    same = warm.generate("Once upon a time", chat=False, max_new_tokens=8)
    again = warm.generate("Once upon a time", chat=False, max_new_tokens=8)
    assert warm.session.last_reused == len(warm.encode("Once upon a time", chat=False)) - 1
    fresh = cold.generate("Once upon a time", chat=False, max_new_tokens=8)
    assert same.token_ids == again.token_ids == fresh.token_ids
    other = warm.generate("Zebras", chat=False, max_new_tokens=8)
    assert warm.session.last_reused == 0
    assert other.token_ids == cold.generate("Zebras", chat=False, max_new_tokens=8).token_ids


def test_prefix_reuse_grows_the_buffer_and_survives_early_stops(fused_models):
    """A longer follow-up than the cache was sized for copies the prefix into a larger buffer; a stream
    abandoned after 3 chunks leaves a cache that the next request can still use correctly."""
    warm, cold = load_without_eos(fused_models("qwen2")), load_without_eos(fused_models("qwen2"))
    cold.session.reuse_prefix = False
    first = warm.generate("The history of", chat=False, max_new_tokens=2)
    prompt = "The history of" + first.text + " the world"
    long_a = warm.generate(prompt, chat=False, max_new_tokens=30)
    assert warm.session.last_reused > 0
    assert long_a.token_ids == cold.generate(prompt, chat=False, max_new_tokens=30).token_ids
    stream = warm.stream("A list of", chat=False, max_new_tokens=30)
    for _, _chunk in zip(range(3), stream):
        pass
    stream.close()
    r = warm.generate("A list of things", chat=False, max_new_tokens=10)
    assert r.token_ids == cold.generate("A list of things", chat=False, max_new_tokens=10).token_ids


def test_old_manifests_read_as_reference_concat(fused_models):
    """A manifest written before these fields existed reads as the reference graph with a concat cache."""
    data = json.loads((fused_models("llama") / "manifest.json").read_text())
    del data["graph"], data["io"]["kv_mode"], data["io"]["logits_to_keep"]
    m = Manifest.from_dict(data)
    assert m.graph == "reference" and m.io.kv_mode == "concat" and m.io.logits_to_keep is None


def test_cli_export_graph_option(tiny_models, tmp_path):
    from onnx_edge.cli import cli

    out = tmp_path / "ref"
    rc = cli.main(["export", str(tiny_models("gpt2")), "-o", str(out), "--graph", "reference", "--no-validate",
                   "--json"], standalone_mode=False)
    assert rc in (None, 0)
    assert json.loads((out / "manifest.json").read_text())["graph"] == "reference"


def test_huge_pages_only_on_the_generation_path(fused_models, monkeypatch):
    """The weights move to 2 MB pages at the first decode cache, never for forward()-only sessions, and
    not at all with ONNX_EDGE_HUGE_PAGES=0; either way the tokens are the same."""
    from onnx_edge.runtime.session import DecoderSession

    folder = fused_models("llama")
    s = DecoderSession(folder, read_manifest(folder), "cpu")
    s.forward(np.array([[5, 6]]), np.ones((1, 2), np.int64), np.array([[0, 1]]), s.empty_cache(1))
    assert s._huge_ranges is not None and s.huge_page_bytes == 0  # nothing done for forward()
    with_hp = load_without_eos(folder)
    a = with_hp.generate("Hello", chat=False, max_new_tokens=6)
    assert with_hp.session._huge_ranges is None and with_hp.session.huge_page_bytes >= 0
    monkeypatch.setenv("ONNX_EDGE_HUGE_PAGES", "0")
    without = load_without_eos(folder)
    assert not without.session.huge_pages
    assert without.generate("Hello", chat=False, max_new_tokens=6).token_ids == a.token_ids


def test_physical_core_default():
    from onnx_edge.runtime.session import physical_cores

    assert 1 <= physical_cores() <= (__import__("os").cpu_count() or 1)
