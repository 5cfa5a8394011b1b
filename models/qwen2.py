"""Qwen2: Llama's layout with q/k/v biases (optional entries in the shared weight map)."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA

SPEC = replace(LLAMA, model_type="qwen2")
