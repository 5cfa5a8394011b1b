"""phi3 longrope (Phi-3.5-mini, Phi-3-mini-128k, Phi-4-mini): transformers picks the short or the long factors per
forward call, by the call's largest position id (max(position_ids) + 1 > original_max_position_embeddings: long,
for every position of that call), and cached keys keep the rotation they were written with. The exported graphs
carry both tables and switch the same way; these tiny models switch at 32, so the prompts go past it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ORIGINAL_MAX = 32


def _rope(half: int) -> dict:
    return {"rope_type": "longrope", "rope_theta": 10000.0,
            "short_factor": [1.0 + 0.1 * i for i in range(half)],
            "long_factor": [2.0 + 1.5 * i for i in range(half)],
            "original_max_position_embeddings": ORIGINAL_MAX}


# Phi-4-mini: partial rotary 0.75 (12 of head_dim 16); Phi-3.5-mini: full rotary (32 of 32, which GQA could
# rotate itself without longrope).
VARIANTS = {
    "phi4mini": dict(partial_rotary_factor=0.75, rope_parameters={**_rope(6), "partial_rotary_factor": 0.75}),
    "phi35": dict(hidden_size=128, partial_rotary_factor=1.0, rope_parameters={**_rope(16), "partial_rotary_factor": 1.0}),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def source(request, tmp_path_factory):
    from tests.fixtures import build_tiny_model

    folder = tmp_path_factory.mktemp(f"longrope-{request.param}")
    return build_tiny_model("phi3", folder, seed=0, original_max_position_embeddings=ORIGINAL_MAX,
                            **VARIANTS[request.param])


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    """Both graphs of the variant, exported and validated."""
    from onnx_edge.export import export

    out = {}
    for graph in ("fused", "reference"):
        folder = tmp_path_factory.mktemp(f"longrope-{graph}") / "out"
        manifest = export(str(source), folder, graph=graph)
        assert manifest.validation["passed"], manifest.validation
        out[graph] = (folder, manifest)
    return out


def _reference(source):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    assert model.model.rotary_emb.rope_type == "longrope"
    return model


def _steps(model, session, prompt: np.ndarray, steps: int) -> tuple[list[float], list[int], list[int]]:
    """Prefill `prompt` (1, S), then `steps` cached decode steps fed with PyTorch's greedy token on both sides:
    each call's max |ONNX - PyTorch|, and both sides' greedy tokens."""
    from onnx_edge.export.validate import _cache_kw, _cache_out

    diffs, ref_tokens, onnx_tokens = [], [], []
    t_cache, o_cache, past, tokens = None, session.empty_cache(1), 0, prompt
    with torch.inference_mode():
        for _ in range(steps + 1):
            n = tokens.shape[1]
            mask = np.ones((1, past + n), np.int64)
            pos = np.arange(past, past + n, dtype=np.int64)[None]
            res = model(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                        position_ids=torch.from_numpy(pos), use_cache=True, **{_cache_kw(model): t_cache})
            t_out, t_cache = res.logits.numpy(), _cache_out(res)
            o_out, o_cache = session.forward(tokens, mask, pos, o_cache)
            diffs.append(float(np.max(np.abs(t_out - o_out))))
            ref_tokens.append(int(np.argmax(t_out[0, -1])))
            onnx_tokens.append(int(np.argmax(o_out[0, -1])))
            past += n
            tokens = np.array([[ref_tokens[-1]]], np.int64)
    return diffs, ref_tokens, onnx_tokens


def _generate(runtime, ids: list[int], n: int) -> list[int]:
    """Greedy token ids from the runtime's own loop (prefix reuse included), eos ignored."""
    from onnx_edge.runtime.generate import generate
    from onnx_edge.runtime.sampling import SamplingParams

    runtime.eos_ids = set()
    return generate(runtime, ids, SamplingParams(), n).token_ids


def test_manifest_records_the_switch(exported):
    for folder, manifest in exported.values():
        assert manifest.architecture["rope_type"] == "longrope"
        assert manifest.architecture["longrope_original_max"] == ORIGINAL_MAX
        assert manifest.architecture["context_length"] == 256  # the long context is kept


def test_the_tables_are_transformers_own(source):
    """Short rows 0..O from a call within O, long rows 0..P from a call past it, attention scaling included."""
    from onnx_edge.export.torch_model import rope_tables

    model = _reference(source)
    rotary = model.model.rotary_emb
    r = 2 * rotary.inv_freq.numel()
    cos, sin = rope_tables(model, 256, r)
    assert cos.shape == (ORIGINAL_MAX + 256, r // 2)
    with torch.no_grad():
        for n, rows in ((ORIGINAL_MAX, slice(0, ORIGINAL_MAX)), (40, slice(ORIGINAL_MAX, ORIGINAL_MAX + 40))):
            ref_cos, ref_sin = rotary(torch.zeros(1), torch.arange(n)[None])
            assert np.array_equal(cos[rows], ref_cos[0, :, :r // 2].numpy())
            assert np.array_equal(sin[rows], ref_sin[0, :, :r // 2].numpy())
    assert rotary.attention_scaling > 1.0  # factor 256 / 32: sqrt(1 + ln 8 / ln 32)
    assert np.max(np.abs(cos[:ORIGINAL_MAX] - cos[ORIGINAL_MAX:2 * ORIGINAL_MAX])) > 0.1  # the factors differ


@pytest.mark.parametrize("graph", ["fused", "reference"])
@pytest.mark.parametrize("prompt_len, steps", [(28, 12), (40, 6), (32, 3)])
def test_cached_decode_matches_transformers_step_by_step(graph, prompt_len, steps, source, exported):
    """28: short prefill, the decode crosses O (long factors for the new token only, cached keys kept as
    written); 40: the prefill itself is past O (long for all); 32: a prefill of exactly O stays short."""
    from onnx_edge.runtime.session import DecoderSession

    folder, manifest = exported[graph]
    session = DecoderSession(folder, manifest, "cpu")
    prompt = (np.arange(prompt_len, dtype=np.int64)[None] * 7 + 5) % 512
    diffs, ref_tokens, onnx_tokens = _steps(_reference(source), session, prompt, steps)
    assert max(diffs) < 1e-4, diffs
    assert ref_tokens == onnx_tokens


def test_transformers_switch_is_per_call(source):
    """What the export reproduces: past O, a cached decode (keys before O rotated with the short factors)
    differs from one forward over the whole sequence (every key rotated with the long factors)."""
    from onnx_edge.export.validate import _cache_kw, _cache_out

    model = _reference(source)
    kw = _cache_kw(model)
    ids = (torch.arange(36)[None] * 7 + 5) % 512
    with torch.inference_mode():
        full = model(ids).logits[0, -1]
        cache = _cache_out(model(ids[:, :30], use_cache=True))
        for p in range(30, 36):
            res = model(ids[:, p:p + 1], position_ids=torch.tensor([[p]]), use_cache=True, **{kw: cache})
            cache = _cache_out(res)
        stepped = res.logits[0, -1]
    assert float((full - stepped).abs().max()) > 1e-3


@pytest.mark.parametrize("graph", ["fused", "reference"])
def test_runtime_greedy_equals_transformers_generate_past_the_switch(graph, source, exported):
    from onnx_edge.runtime import load

    model = _reference(source)
    runtime = load(exported[graph][0], provider="cpu")
    runtime.eos_ids = set()
    for n in (20, 40):  # crosses O while decoding; past O from the prefill
        prompt = ((np.arange(n) * 11 + 3) % 500 + 4).tolist()
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, n, dtype=torch.long),
                                 max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=3)
        ref = out[0, n:].tolist()
        assert _generate(runtime, prompt, 24) == ref, n


@pytest.mark.parametrize("graph", ["fused", "reference"])
def test_left_padded_batch_equals_transformers_generate(graph, source, exported):
    """transformers picks the factors by the largest position id over the whole batch: a 20-token row next to
    a 40-token one is rotated with the long factors from its first token. The graphs do the same."""
    from onnx_edge.runtime import load
    from onnx_edge.runtime.generate import generate_batch
    from onnx_edge.runtime.sampling import SamplingParams

    model = _reference(source)
    runtime = load(exported[graph][0], provider="cpu")
    runtime.eos_ids = set()
    prompts = [((np.arange(n) * 11 + 3) % 500 + 4).tolist() for n in (20, 40)]
    ids = torch.full((2, 40), 3, dtype=torch.long)
    mask = torch.zeros(2, 40, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, 40 - len(p):], mask[row, 40 - len(p):] = torch.tensor(p), 1
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=3)
    got = generate_batch(runtime, prompts, SamplingParams(), 12)
    assert [r.token_ids for r in got] == out[:, 40:].tolist()


def test_prefix_reuse_stays_exact_across_the_switch(source, exported):
    """A chat's next turn reuses the previous cache only where every reused row has the rotation a fresh run
    gives it: more than O rows hold long-factor keys (the generate loop re-prefills at the switch), at most O
    short-factor ones, and a prompt longer than O is prefilled with the long factors."""
    from onnx_edge.runtime import load

    folder = exported["fused"][0]
    runtime, fresh = load(folder, provider="cpu"), load(folder, provider="cpu")
    first = ((np.arange(20) * 11 + 3) % 500 + 4).tolist()
    extra = ((np.arange(20) * 13 + 1) % 500 + 4).tolist()
    cases = [  # (previous request, its new tokens, next prompt's tail, reused?)
        (first, 4, extra, False),  # 23 short rows, a 44-token prompt: long for all
        (first, 4, extra[:4], True),  # 23 short rows, a 28-token prompt: short for all
        (first, 16, extra[:8], True),  # 35 long rows (re-prefilled at 32), a 44-token prompt
        (first + extra, 4, [], False),  # 43 long rows, the first 20 tokens again + 4: short
    ]
    for before, n, tail, reuse in cases:
        out = _generate(runtime, before, n)
        prompt = (before + out + tail) if tail else first + out
        got = _generate(runtime, prompt, 8)
        assert (runtime.session.last_reused > 0) == reuse, (len(before), n, len(tail))
        assert got == _generate(fresh, prompt, 8), (len(before), n, len(tail))
        fresh.session.clear_prefix_cache()


def test_int4_quantize_and_generate(exported, tmp_path):
    from onnx_edge.quantize import QuantConfig, quantize
    from onnx_edge.runtime import load

    out = tmp_path / "int4"
    quantize(exported["fused"][0], out, QuantConfig(precision="int4", context=48, eval_windows=2))
    runtime = load(out, provider="cpu")
    runtime.eos_ids = set()
    prompt = ((np.arange(40) * 11 + 3) % 500 + 4).tolist()  # past O
    assert len(_generate(runtime, prompt, 8)) == 8


def test_llama_longrope_stays_refused():
    from onnx_edge.errors import UnsupportedModelError
    from onnx_edge.models import check_config, get_spec

    config = {"model_type": "llama", "hidden_act": "silu", "rope_parameters": _rope(8)}
    with pytest.raises(UnsupportedModelError, match="llama rope_type 'longrope' is not supported"):
        check_config(get_spec("llama"), config)
    check_config(get_spec("phi3"), {"model_type": "phi3", "hidden_act": "silu", "rope_parameters": _rope(8)})


def test_a_folder_written_before_longrope_still_loads(exported_models, tmp_path):
    """architecture.longrope_original_max came later: a manifest without it is a plain rope folder."""
    import json
    import shutil

    from onnx_edge.errors import ManifestError
    from onnx_edge.runtime import load

    folder = tmp_path / "old"
    shutil.copytree(exported_models("llama"), folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["architecture"].pop("longrope_original_max", None)
    path.write_text(json.dumps(data), encoding="utf-8")
    model = load(folder, provider="cpu")
    assert model.shape.longrope_original_max is None
    assert model.generate("Hello", chat=False, max_new_tokens=3).generated_tokens <= 3
    data["architecture"]["longrope_original_max"] = -4
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match="longrope_original_max must be a positive integer"):
        load(folder, provider="cpu")
