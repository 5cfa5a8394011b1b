"""Llama (SmolLM2, Llama 2/3, TinyLlama, ...): RMSNorm, rotary, gated SiLU MLP, grouped KV heads."""

from onnx_edge.models.spec import ArchSpec, ConfigRule, GGUFLayout

# Canonical name -> HF name. Also the base that mistral and qwen2 reuse.
LLAMA_WEIGHTS = {
    "embed_tokens.weight": "model.embed_tokens.weight",
    "layers.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "layers.{i}.k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "layers.{i}.v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "layers.{i}.o.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.o.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "layers.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.gate.bias": "model.layers.{i}.mlp.gate_proj.bias",
    "layers.{i}.up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.up.bias": "model.layers.{i}.mlp.up_proj.bias",
    "layers.{i}.down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "layers.{i}.down.bias": "model.layers.{i}.mlp.down_proj.bias",
    "final_norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}

SPEC = ArchSpec(
    model_type="llama",
    norm="rms",
    positions="rope",
    mlp="gated",
    activation="silu",
    weights=LLAMA_WEIGHTS,
    fused=True,
    gguf=GGUFLayout("llama", permuted_qk=True),
    ignore_suffixes=(".rotary_emb.inv_freq",),
    # transformers' Llama rotates every channel (a partial factor breaks its own scaled rope types).
    config_rules=(ConfigRule("partial_rotary_factor", (1.0,), "the rotary covers the whole head"),),
)
