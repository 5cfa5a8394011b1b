"""Gemma (gemma-2b, gemma-7b, CodeGemma): Llama's layout with RMSNorm scaling by (1 + w), the embedding rows
scaled by sqrt(hidden_size), a GeGLU MLP (tanh GELU), head_dim from config.head_dim, tied embeddings."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA
from onnx_edge.models.spec import ConfigRule

SPEC = replace(
    LLAMA,
    model_type="gemma",
    activation="gelu_tanh",  # GemmaConfig turns the legacy "gelu" of the released configs into gelu_pytorch_tanh
    norm_scale="one_plus_weight",
    embed_scale="sqrt_hidden",
    gguf=None,  # not verified: llama.cpp's Gemma GGUFs store the norms as 1 + w
    config_rules=(
        *LLAMA.config_rules,
        ConfigRule("use_bidirectional_attention", (None, False), "the graph is causal"),
    ),
)
