"""Mistral: Llama's layout plus a sliding attention window (read from config.sliding_window)."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA

SPEC = replace(LLAMA, model_type="mistral")
