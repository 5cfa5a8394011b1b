"""Mistral: Llama's layout plus a sliding attention window on every layer (config.sliding_window)."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA
from onnx_edge.models.spec import GGUFLayout

# Its GGUF layout is restated: llama's record would claim llama's file name and q/k permutation.
SPEC = replace(LLAMA, model_type="mistral", gguf=GGUFLayout("mistral", permuted_qk=False),
               config_keys={"sliding_window": "sliding_window"})
