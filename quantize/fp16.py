"""fp16 for GPU providers (onnxruntime.transformers' converter). Logits stay fp32; the KV cache is fp16;
norms keep their reductions in fp32 (x² overflows fp16 above 256)."""

from __future__ import annotations

import onnx

# RMSNorm's Pow/ReduceMean/Sqrt/Div chain; an fp16 x**2 overflows for activations above 256.
KEEP_FP32_OPS = ["Pow", "ReduceMean", "Sqrt", "Div", "LayerNormalization"]


def to_fp16(model: onnx.ModelProto, logits_name: str) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=[logits_name], op_block_list=KEEP_FP32_OPS,
                                     disable_shape_infer=True)
