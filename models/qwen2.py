"""Qwen2: Llama's layout with q/k/v biases (optional entries in the shared weight map); its sliding window
(only on layers >= max_window_layers) is refused."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA
from onnx_edge.models.spec import ConfigRule, GGUFLayout

# Its GGUF layout is restated: llama's record would claim llama's file name and q/k permutation.
SPEC = replace(LLAMA, model_type="qwen2", gguf=GGUFLayout("qwen2", permuted_qk=False), config_rules=(
    *LLAMA.config_rules,
    ConfigRule("use_sliding_window", (False,), "transformers slides only layers >= max_window_layers, which "
                                               "the export does not implement"),
    ConfigRule("layer_types", ("full_attention",), "the export has no per-layer attention window"),
))
