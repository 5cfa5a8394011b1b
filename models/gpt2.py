"""GPT-2: LayerNorm, learned positions, packed c_attn, GELU (tanh) MLP, Conv1D (in, out) weights."""

from onnx_edge.models.spec import ArchSpec, ConfigRule

SPEC = ArchSpec(
    model_type="gpt2",
    norm="layer",
    positions="learned",
    mlp="plain",
    activation="gelu_tanh",
    conv1d=True,
    fused=True,
    gguf=None,  # its GGUF files pack attn_qkv; block import maps q/k/v stored apart
    weights={
        "embed_tokens.weight": "transformer.wte.weight",
        "pos_embed.weight": "transformer.wpe.weight",
        "layers.{i}.attn_norm.weight": "transformer.h.{i}.ln_1.weight",
        "layers.{i}.attn_norm.bias": "transformer.h.{i}.ln_1.bias",
        "layers.{i}.qkv.weight": "transformer.h.{i}.attn.c_attn.weight",
        "layers.{i}.qkv.bias": "transformer.h.{i}.attn.c_attn.bias",
        "layers.{i}.o.weight": "transformer.h.{i}.attn.c_proj.weight",
        "layers.{i}.o.bias": "transformer.h.{i}.attn.c_proj.bias",
        "layers.{i}.mlp_norm.weight": "transformer.h.{i}.ln_2.weight",
        "layers.{i}.mlp_norm.bias": "transformer.h.{i}.ln_2.bias",
        "layers.{i}.up.weight": "transformer.h.{i}.mlp.c_fc.weight",
        "layers.{i}.up.bias": "transformer.h.{i}.mlp.c_fc.bias",
        "layers.{i}.down.weight": "transformer.h.{i}.mlp.c_proj.weight",
        "layers.{i}.down.bias": "transformer.h.{i}.mlp.c_proj.bias",
        "final_norm.weight": "transformer.ln_f.weight",
        "final_norm.bias": "transformer.ln_f.bias",
        "lm_head.weight": "lm_head.weight",
    },
    ignore_suffixes=(".attn.bias", ".attn.masked_bias"),  # causal-mask buffers in older transformers
    config_keys={
        "num_layers": "n_layer",
        "num_heads": "n_head",
        "num_kv_heads": "n_head",
        "hidden_size": "n_embd",
        "intermediate_size": "n_inner",
        "context_length": "n_positions",
        "norm_eps": "layer_norm_epsilon",
        "activation": "activation_function",
    },
    # The graph's attention divides by sqrt(head_dim) on every layer and has no cross-attention block.
    config_rules=(
        ConfigRule("scale_attn_weights", (True,)),
        ConfigRule("scale_attn_by_inverse_layer_idx", (False,)),
        ConfigRule("add_cross_attention", (False,)),
    ),
)
