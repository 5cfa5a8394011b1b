"""OLMo 2 (OLMo-2-1B / 7B / 13B): post-norm blocks (x + norm(attn(x)), x + norm(mlp(x)); no norm on a sublayer's
input) and a full-width RMSNorm of q and k (over heads * head_dim, before the split into heads), Llama's MLP.
The canonical attn_norm / mlp_norm are the two output norms (spec.block = "post_norm")."""

from dataclasses import replace

from onnx_edge.models.llama import LLAMA_WEIGHTS, SPEC as LLAMA

SPEC = replace(
    LLAMA,
    model_type="olmo2",
    block="post_norm",
    qk_norm="full_width",
    weights={
        **LLAMA_WEIGHTS,
        "layers.{i}.attn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        "layers.{i}.mlp_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
        "layers.{i}.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
        "layers.{i}.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    },
    # llama.cpp writes OLMo 2 GGUFs (Olmo2Model) but block import is not verified against it.
    gguf=None,
)
