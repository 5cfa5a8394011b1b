"""Qwen3 (Qwen3-0.6B and up): Qwen2's layout plus a per-head RMSNorm of q and k before rotary, head_dim
from config.head_dim (not hidden / heads), q/k/v/o biases only when config.attention_bias says so. Qwen2's
config rules come along: its sliding window (only layers >= max_window_layers) is refused the same way."""

from dataclasses import replace

from onnx_edge.models.qwen2 import SPEC as QWEN2
from onnx_edge.models.spec import GGUFLayout

SPEC = replace(
    QWEN2,
    model_type="qwen3",
    qk_norm="per_head",
    weights={
        **QWEN2.weights,
        "layers.{i}.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
        "layers.{i}.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    },
    # llama.cpp's Qwen3Model (convert_hf_to_gguf.py) writes q/k rows as transformers has them, like Qwen2Model,
    # and transformers' GGUF loader un-permutes only llama's; attn_q_norm / attn_k_norm stay fp32 there.
    gguf=GGUFLayout("qwen3", permuted_qk=False),
)
