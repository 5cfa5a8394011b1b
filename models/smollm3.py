"""SmolLM3 (SmolLM3-3B): Llama's layout with NoPE layers: config.no_rope_layers[i] is 1 where layer i rotates
q and k and 0 where it uses no positions at all (transformers derives it from no_rope_layer_interval: every
interval-th layer is NoPE). Its sliding window (only on NoPE layers, with use_sliding_window) is refused."""

from dataclasses import replace

from onnx_edge.models.llama import SPEC as LLAMA
from onnx_edge.models.spec import ConfigRule

SPEC = replace(
    LLAMA,
    model_type="smollm3",
    config_keys={"rope_layers": "no_rope_layers", "rope_layer_interval": "no_rope_layer_interval"},
    config_rules=(
        *LLAMA.config_rules,
        ConfigRule("use_sliding_window", (False,), "transformers slides only the NoPE layers, which the export "
                                                   "does not implement"),
        ConfigRule("layer_types", ("full_attention",), "the export has no per-layer attention window"),
    ),
    # llama.cpp writes SmolLM3 GGUFs (SmolLM3Model) but block import is not verified against it.
    gguf=None,
)
