"""Granite (IBM Granite 3.x dense): Llama's layout plus four config scalars, each applied where transformers
applies it: embeddings x embedding_multiplier, each sublayer output x residual_multiplier before its residual
add, attention_multiplier as the attention scale (not 1/sqrt(head_dim)), logits / logits_scaling. None is folded
into a weight: a tied head reads the embedding table, and a graph Mul / Div is bit-for-bit transformers' op."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA

SPEC = replace(
    LLAMA,
    model_type="granite",
    config_keys={"embedding_multiplier": "embedding_multiplier", "residual_multiplier": "residual_multiplier",
                 "attention_scale": "attention_multiplier", "logits_scaling": "logits_scaling"},
    # llama.cpp writes granite GGUFs (GraniteModel) but block import is not verified against it.
    gguf=None,
)
