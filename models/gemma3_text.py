"""Gemma 3 text (gemma-3-270m, gemma-3-1b, and the text tower of the larger ones): Gemma 2's layer (four
norms, scaled embedding, GeGLU, query_pre_attn_scalar, optional soft-caps, windows per config.layer_types:
five sliding layers to one global) plus a per-head (1 + w) RMSNorm of q and k before the rotary, and two rope
bases: rope_parameters["sliding_attention"] (rope_local_base_freq) on the sliding layers, the global one on
the others."""

from dataclasses import replace

from onnx_edge.models.gemma2 import SPEC as GEMMA2

SPEC = replace(
    GEMMA2,
    model_type="gemma3_text",
    qk_norm="per_head",
    weights={
        **GEMMA2.weights,
        "layers.{i}.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
        "layers.{i}.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    },
)
