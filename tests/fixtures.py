"""Offline, deterministic test fixtures: a tiny byte-level BPE tokenizer and tiny random decoder LMs.

Nothing here touches the network. The tokenizer is trained in-process on text bundled with Python
(`pydoc_data.topics`); the models are random-weight `transformers` models in six architectures.

Importable as `from tests.fixtures import build_tokenizer, build_tiny_model, TINY_CONFIGS`;
`tests/conftest.py` wraps these in session-scoped pytest fixtures.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

# Heavy imports (torch, transformers) are done inside the functions so that importing this module
# (e.g. from conftest.py in a torch-free runtime test run) stays cheap and never fails.

VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]  # ids 0, 1, 2, 3
BOS_ID, EOS_ID, PAD_ID = 1, 2, 3
CONTEXT_LENGTH = 256

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Training text: the first ~64 KB of pydoc topics, taken in sorted-key order so the corpus (and thus the
# merges) is identical on every run and every machine with the same Python minor version.
_TRAIN_CHARS = 64_000

# Trained tokenizer, serialized (tokenizers JSON). Training takes ~0.05 s but runs once per process.
_TOKENIZER_JSON: str | None = None


def _training_text() -> list[str]:
    from pydoc_data.topics import topics

    chunks: list[str] = []
    total = 0
    for key in sorted(topics):
        text = topics[key][: _TRAIN_CHARS - total]
        chunks.append(text)
        total += len(text)
        if total >= _TRAIN_CHARS:
            break
    return chunks


def tokenizer_json() -> str:
    """The trained tokenizer as a `tokenizers` JSON string (trained once per process, then cached)."""
    global _TOKENIZER_JSON
    if _TOKENIZER_JSON is None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        tok = Tokenizer(models.BPE())
        # Byte-level: every Unicode string maps to byte tokens, so nothing is ever unknown and
        # decode(encode(s)) == s for any s.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
            show_progress=False,
        )
        tok.train_from_iterator(_training_text(), trainer)
        assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
        for i, name in enumerate(SPECIAL_TOKENS):
            assert tok.token_to_id(name) == i, (name, tok.token_to_id(name))
        _TOKENIZER_JSON = tok.to_str()
    return _TOKENIZER_JSON


def build_tokenizer(folder: Path) -> None:
    """Write the tiny tokenizer into `folder` the way `transformers` saves a fast tokenizer.

    transformers 5 writes: tokenizer.json, tokenizer_config.json (tokenizer_class "TokenizersBackend",
    bos/eos/pad, unk null) and chat_template.jinja (the chat template is NOT inside tokenizer_config.json)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json()),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        model_max_length=CONTEXT_LENGTH,
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)


_IDS = dict(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)

# Shared shape of the five rope/RMSNorm/gated-MLP architectures: grouped-query attention (4 query heads
# over 2 kv heads), head_dim 16 (qwen3 sets its own).
_GQA_COMMON: dict[str, Any] = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=CONTEXT_LENGTH,
    **_IDS,
)

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # Untied lm_head, non-default rope base (transformers 5 folds `rope_theta` into
    # config.rope_parameters = {"rope_theta": 500000.0, "rope_type": "default"}).
    "llama": dict(_GQA_COMMON, model_type="llama", tie_word_embeddings=False, rope_theta=500000.0),
    # Sliding-window attention with a window far shorter than a 40-token test prompt.
    "mistral": dict(_GQA_COMMON, model_type="mistral", tie_word_embeddings=False, sliding_window=16),
    # q/k/v biases (Qwen2 always has them) and tied embeddings (lm_head shares embed_tokens).
    "qwen2": dict(_GQA_COMMON, model_type="qwen2", tie_word_embeddings=True),
    # Per-head q/k RMSNorm before rotary, head_dim 32 != hidden / heads (16), no q/k/v biases
    # (attention_bias false, as every released Qwen3), tied embeddings (Qwen3-0.6B), Qwen3's rope base.
    "qwen3": dict(_GQA_COMMON, model_type="qwen3", head_dim=32, tie_word_embeddings=True, rope_theta=1000000.0),
    # Packed qkv_proj / gate_up_proj, partial rotary (rotary dim 8 of head_dim 16), untied.
    # original_max_position_embeddings defaults to 4096; pin it to the real context so nothing
    # treats the model as long-context.
    "phi3": dict(
        _GQA_COMMON,
        model_type="phi3",
        tie_word_embeddings=False,
        partial_rotary_factor=0.5,
        original_max_position_embeddings=CONTEXT_LENGTH,
    ),
    # --- gemma family ---
    # (1 + w) RMSNorm, sqrt(hidden)-scaled embedding rows, GeGLU (gelu_pytorch_tanh), head_dim 32 != 64 / 4,
    # tied embeddings (every released Gemma), a single kv head (gemma-2b's multi-query attention).
    "gemma": dict(_GQA_COMMON, model_type="gemma", head_dim=32, num_key_value_heads=1, tie_word_embeddings=True,
                  hidden_act="gelu_pytorch_tanh"),
    # gemma2: pre- and post-norms, attention and final soft-capping at caps the random logits reach, a scale
    # from query_pre_attn_scalar != head_dim, and a window of 8 (far shorter than a 40-token prompt) on the
    # layers layer_types marks sliding (0 and 2 of 3: transformers' default alternation).
    "gemma2": dict(_GQA_COMMON, model_type="gemma2", head_dim=32, num_hidden_layers=3, tie_word_embeddings=True,
                   hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=8,
                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
    # gemma3_text, the 270M / 1B shape scaled down: multi-query (1 kv head), head_dim 32, per-head (1 + w) q/k
    # norms, two sliding layers (window 8) then a global one, each kind with its rope base (1e4 / 1e6).
    "gemma3_text": dict(_GQA_COMMON, model_type="gemma3_text", head_dim=32, num_key_value_heads=1,
                        num_hidden_layers=3, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh",
                        query_pre_attn_scalar=24, sliding_window=8, rope_theta=1000000.0,
                        rope_local_base_freq=10000.0,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
    # Learned positions, LayerNorm with biases, Conv1D (in, out) weights, gelu_new, tied wte.
    # Dropouts zeroed so train/eval mode can never change outputs.
    "gpt2": dict(
        model_type="gpt2",
        vocab_size=VOCAB_SIZE,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=128,
        n_positions=CONTEXT_LENGTH,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        **_IDS,
    ),
    # --- granite / smollm3 / olmo2 ---
    # Granite 3.x: its four multipliers (attention_multiplier 1 / head_dim, as granite-3.0-2b's 1/64 with head_dim
    # 64; logits_scaling 4, not its 8, which leaves this tiny model's logits too flat), tied embeddings,
    # granite-3.1's rope base.
    "granite": dict(_GQA_COMMON, model_type="granite", tie_word_embeddings=True, rope_theta=5000000.0,
                    embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0625,
                    logits_scaling=4.0),
    # NoPE every 2nd layer (layer 1 of 2; SmolLM3-3B: every 4th), tied embeddings, SmolLM3's rope base.
    "smollm3": dict(_GQA_COMMON, model_type="smollm3", tie_word_embeddings=True, rope_theta=5000000.0,
                    no_rope_layer_interval=2),
    # Post-norm blocks and full-width q/k norms, untied head (OLMo-2), its rope base and norm eps.
    "olmo2": dict(_GQA_COMMON, model_type="olmo2", tie_word_embeddings=False, rope_theta=500000.0,
                  rms_norm_eps=1e-6),
    # --- gpt_neox ---
    # Pythia's shape scaled down: head_dim 64 with rotary_pct 0.25 (16 rotary channels, as Pythia-70m, so GQA
    # rotates inside), parallel residual, per-head packed query_key_value with biases, erf GELU, untied head.
    "gpt_neox": dict(model_type="gpt_neox", vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256,
                     num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CONTEXT_LENGTH,
                     rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True, hidden_act="gelu",
                     tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0, **_IDS),
}


def make_config(model_type: str, **overrides):
    """The `transformers` config object for TINY_CONFIGS[model_type], with `overrides` (a variant's fields)."""
    from transformers import AutoConfig

    if model_type not in TINY_CONFIGS:
        raise KeyError(f"no tiny config for {model_type!r}; have {sorted(TINY_CONFIGS)}")
    kwargs = {**copy.deepcopy(TINY_CONFIGS[model_type]), **overrides}
    kwargs.pop("model_type")
    return AutoConfig.for_model(model_type, **kwargs)


# Why re-initialize: transformers initializes with std=initializer_range=0.02 and norms at exactly 1,
# biases at 0. In a 64-wide, 2-layer model that makes the logits nearly uniform (spread ~1e-2), so the
# top-1/top-2 gap is often below float32 / ONNX-vs-torch numerical noise and greedy decoding is decided
# by ties - an exported-model parity test would then fail (or pass) by accident. std 0.2 gives logits
# with a spread of order 1 and clear argmax margins. Norm scales and biases are randomized too (rather
# than left at 1 / 0), so a graph that drops a norm weight, a bias, or swaps them would change outputs.
_MATRIX_STD = 0.2
_NORM_JITTER = 0.1
_BIAS_STD = 0.1


def _is_norm_module(module) -> bool:
    import torch

    return isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower()


def reinit_weights(model, seed: int) -> None:
    """Overwrite every parameter deterministically from `seed` (independent of transformers' own init)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    with torch.no_grad():
        # named_parameters() dedupes tied parameters, so a tied lm_head is re-initialized once, via
        # the embedding, and stays tied.
        for name, param in model.named_parameters():
            owner = modules[name.rpartition(".")[0]]
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if name.endswith("bias"):
                param.copy_(_BIAS_STD * noise)
            elif param.ndim >= 2:
                param.copy_(_MATRIX_STD * noise)
            else:
                assert _is_norm_module(owner), f"unexpected 1-D weight {name} in {type(owner).__name__}"
                # gemma family: a (1 + w) norm starts at w = 0; jitter around its own identity scale.
                identity = 0.0 if not param.any() else 1.0
                param.copy_(identity + _NORM_JITTER * noise)


def build_tiny_model(model_type: str, folder: Path, seed: int = 0, **overrides) -> Path:
    """Build, save and return a tiny random `model_type` model folder (config, safetensors weights,
    generation_config.json, tokenizer). Same `seed` -> bit-identical weights. `overrides` change config
    fields for a variant (a wider phi3, a qwen3 with biases)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = make_config(model_type, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reinit_weights(model, seed)
    model.eval()
    # transformers 5 always writes safetensors (the `safe_serialization` argument is gone); tied
    # weights (qwen2/gpt2 lm_head) are stored once, under the embedding's name.
    model.save_pretrained(folder)
    bins = sorted(p.name for p in folder.glob("*.bin"))
    assert not bins, f"unexpected pickle weights written: {bins}"
    assert (folder / "model.safetensors").is_file()
    # Overwrite whatever save_pretrained derived from the config: the three ids, nothing else.
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID).save_pretrained(folder)
    build_tokenizer(folder)
    return folder


def layer0_state_dict_keys(model_type: str) -> list[str]:
    """Debug helper: state-dict names of the non-layer weights and of layer 0 (not saved anywhere)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(make_config(model_type), dtype=torch.float32)
    return [k for k in model.state_dict() if ".0." in k or (".layers." not in k and ".h." not in k)]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
