"""Phi-3: packed qkv_proj and gate_up_proj, optional partial rotary, longrope (Phi-3.5-mini, Phi-3-128k,
Phi-4-mini): both factor tables in the graph, switched per call as transformers does."""

from onnx_edge.models.spec import ArchSpec

SPEC = ArchSpec(
    model_type="phi3",
    norm="rms",
    positions="rope",
    mlp="gated",
    activation="silu",
    fused=True,
    gguf=None,  # its GGUF files pack attn_qkv and gate|up (ffn_up); block import maps them stored apart
    weights={
        "embed_tokens.weight": "model.embed_tokens.weight",
        "layers.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
        "layers.{i}.qkv.weight": "model.layers.{i}.self_attn.qkv_proj.weight",
        "layers.{i}.o.weight": "model.layers.{i}.self_attn.o_proj.weight",
        "layers.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        "layers.{i}.gate_up.weight": "model.layers.{i}.mlp.gate_up_proj.weight",
        "layers.{i}.down.weight": "model.layers.{i}.mlp.down_proj.weight",
        "final_norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    },
    ignore_suffixes=(".rotary_emb.inv_freq",),
    config_keys={"sliding_window": "sliding_window"},  # Phi-3-mini-4k: 2047 on every layer
    longrope=True,
)
