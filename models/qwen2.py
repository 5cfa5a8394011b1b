"""Qwen2: Llama's layout with q/k/v biases (optional entries in the shared weight map)."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA
from onnx_edge.models.spec import GGUFLayout

# Its GGUF layout is restated: llama's record would claim llama's file name and q/k permutation.
SPEC = replace(LLAMA, model_type="qwen2", gguf=GGUFLayout("qwen2", permuted_qk=False))
