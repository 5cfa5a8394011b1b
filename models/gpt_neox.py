"""GPT-NeoX (Pythia, GPT-NeoX-20B): LayerNorm with biases, partial rotary (rotary_pct), the fused
query_key_value projection laid out per head ([q_h, k_h, v_h], reordered on export), parallel residual
(x + attn(ln1(x)) + mlp(ln2(x))), the erf GELU MLP with biases, untied embed_out."""

from onnx_edge.models.spec import ArchSpec, ConfigRule

SPEC = ArchSpec(
    model_type="gpt_neox",
    norm="layer",
    positions="rope",
    mlp="plain",
    activation="gelu",
    block="parallel",
    qkv_layout="per_head",
    fused=True,
    # llama.cpp writes GPT-NeoX GGUFs (gptneox) with attn_qkv packed; block import maps q/k/v stored apart.
    gguf=None,
    weights={
        "embed_tokens.weight": "gpt_neox.embed_in.weight",
        "layers.{i}.attn_norm.weight": "gpt_neox.layers.{i}.input_layernorm.weight",
        "layers.{i}.attn_norm.bias": "gpt_neox.layers.{i}.input_layernorm.bias",
        "layers.{i}.qkv.weight": "gpt_neox.layers.{i}.attention.query_key_value.weight",
        "layers.{i}.qkv.bias": "gpt_neox.layers.{i}.attention.query_key_value.bias",
        "layers.{i}.o.weight": "gpt_neox.layers.{i}.attention.dense.weight",
        "layers.{i}.o.bias": "gpt_neox.layers.{i}.attention.dense.bias",
        "layers.{i}.mlp_norm.weight": "gpt_neox.layers.{i}.post_attention_layernorm.weight",
        "layers.{i}.mlp_norm.bias": "gpt_neox.layers.{i}.post_attention_layernorm.bias",
        "layers.{i}.up.weight": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight",
        "layers.{i}.up.bias": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias",
        "layers.{i}.down.weight": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight",
        "layers.{i}.down.bias": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias",
        "final_norm.weight": "gpt_neox.final_layer_norm.weight",
        "final_norm.bias": "gpt_neox.final_layer_norm.bias",
        "lm_head.weight": "lm_head.weight",
    },
    # Causal-mask and rotary buffers that older checkpoints (Pythia) store.
    ignore_suffixes=(".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"),
    checkpoint_aliases={"embed_out.weight": "lm_head.weight"},  # transformers renames it on load
    config_keys={"norm_eps": "layer_norm_eps", "partial_rotary_factor": "rotary_pct",
                 "rope_theta": "rotary_emb_base"},
    rope_defaults={"partial_rotary_factor": 0.25},  # GPTNeoXConfig's rotary_pct default
    # The graph's block is the parallel one (every released GPT-NeoX / Pythia); its sequential form
    # (x + attn, then + mlp(ln2(x + attn))) is not built.
    config_rules=(ConfigRule("use_parallel_residual", (True,), "the graph builds the parallel residual block"),),
)
