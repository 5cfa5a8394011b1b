"""The offline test fixtures themselves: complete folders, deterministic builds, non-degenerate logits."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.fixtures import (  # noqa: E402
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TINY_CONFIGS,
    build_tiny_model,
    read_json,
    tokenizer_json,
)

ARCHS = sorted(TINY_CONFIGS)
PROMPT = "The quick brown fox"
UNICODE = "naïve café 家族 🚀"


def _load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _greedy(folder, n=10):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = _load(folder)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,  # don't stop at eos: always compare 10 steps
            do_sample=False,
            return_dict_in_generate=True,
            output_logits=True,  # raw logits (scores would have eos masked by min_new_tokens)
        )
    return out.sequences[0, ids.shape[1] :].tolist(), out.logits[0][0]


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_contents(arch, tiny_models):
    folder = tiny_models(arch)
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.bin"))
    config = read_json(folder / "config.json")
    assert config["model_type"] == arch
    assert config["vocab_size"] == 512
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 3)
    gen = read_json(folder / "generation_config.json")
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 3)
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE


@pytest.mark.parametrize("arch", ARCHS)
def test_reload_identical_weights(arch, tiny_models, tmp_path):
    from safetensors.torch import load_file

    folder = tiny_models(arch)
    reloaded = _load(folder).state_dict()
    rebuilt = _load(build_tiny_model(arch, tmp_path / "again", seed=0)).state_dict()
    # Names transformers renames on load (gpt_neox's embed_out -> lm_head), as the spec states them.
    from onnx_edge.models import get_spec

    aliases = get_spec(arch).checkpoint_aliases
    saved = {aliases.get(k, k): v for k, v in load_file(folder / "model.safetensors").items()}
    assert set(saved) <= set(reloaded)
    for name, tensor in saved.items():
        assert torch.equal(tensor, reloaded[name]), name
    for name, tensor in reloaded.items():
        assert torch.equal(tensor, rebuilt[name]), name
    # A different seed really gives different weights.
    other = {aliases.get(k, k): v for k, v in
             load_file(build_tiny_model(arch, tmp_path / "seed1", seed=1) / "model.safetensors").items()}
    assert any(not torch.equal(saved[k], other[k]) for k in saved)


@pytest.mark.parametrize("arch", ARCHS)
def test_tying(arch, tiny_models):
    model = _load(tiny_models(arch))
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == (arch in ("qwen2", "qwen3", "gpt2", "granite", "smollm3") or arch.startswith("gemma"))


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_deterministic_and_not_degenerate(arch, tiny_models, tmp_path):
    first, logits = _greedy(tiny_models(arch))
    second, _ = _greedy(build_tiny_model(arch, tmp_path / "again", seed=0))
    assert len(first) == 10
    assert first == second
    assert int(logits.argmax()) == first[0]
    top2 = torch.topk(logits.float(), 2).values
    assert float(top2[0] - top2[1]) > 1e-3, top2
    # Logits have a real spread, not near-uniform.
    assert float(logits.std()) > 0.3


def test_mistral_sliding_window_matters(tiny_models):
    """With a 40-token input and window 16, the last position's logits depend on the window."""
    folder = tiny_models("mistral")
    windowed = _load(folder)
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    config.sliding_window = None
    full = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()
    ids = torch.arange(10, 50).unsqueeze(0)
    with torch.no_grad():
        a = windowed(ids).logits[0]
        b = full(ids).logits[0]
    torch.testing.assert_close(a[:16], b[:16])  # inside the window: identical
    assert (a[-1] - b[-1]).abs().max() > 1e-2


def test_phi3_partial_rotary(tiny_models):
    model = _load(tiny_models("phi3"))
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.5
    assert model.model.rotary_emb.inv_freq.numel() == 4  # rotary dim 8 of head_dim 16


def test_tokenizer_roundtrip_and_specials(tokenizer_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert raw.get_vocab_size() == 512
    assert [raw.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    ids = raw.encode(UNICODE).ids
    assert raw.decode(ids) == UNICODE
    assert tokenizer_json() == tokenizer_json()  # cached

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 3)
    assert tok.decode(tok(UNICODE).input_ids) == UNICODE
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # Special tokens are atomic when encoded.
    assert tok("<|im_start|>user", add_special_tokens=False).input_ids[0] == 1


def test_tokenizer_training_is_deterministic(monkeypatch):
    import tests.fixtures as fx

    first = fx.tokenizer_json()
    monkeypatch.setattr(fx, "_TOKENIZER_JSON", None)
    assert fx.tokenizer_json() == first
