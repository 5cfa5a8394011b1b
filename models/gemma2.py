"""Gemma 2 (gemma-2-2b/9b/27b): Gemma's (1 + w) norms, scaled embedding and GeGLU, plus a norm before and after
both sublayers, tanh soft-capping of the attention scores and of the logits, the scores scaled by
query_pre_attn_scalar ** -0.5, and a sliding window on the layers config.layer_types marks (every other one)."""

from dataclasses import replace

from onnx_edge.models.gemma import SPEC as GEMMA
from onnx_edge.models.llama import LLAMA_WEIGHTS
from onnx_edge.models.spec import ConfigRule

SPEC = replace(
    GEMMA,
    model_type="gemma2",
    block="sandwich",
    weights={
        **LLAMA_WEIGHTS,
        # post_attention_layernorm is the attention's output norm here, not the MLP's input norm (llama's).
        "layers.{i}.attn_post_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        "layers.{i}.mlp_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
        "layers.{i}.mlp_post_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
    },
    config_keys={
        "activation": "hidden_activation",
        "sliding_window": "sliding_window",  # the sliding layers' window; layer_types says which layers slide
        "layer_types": "layer_types",
        "attn_softcap": "attn_logit_softcapping",
        "final_softcap": "final_logit_softcapping",
        "query_pre_attn_scalar": "query_pre_attn_scalar",
    },
    config_rules=(
        *GEMMA.config_rules,
        ConfigRule("layer_types", ("full_attention", "sliding_attention")),
    ),
)
