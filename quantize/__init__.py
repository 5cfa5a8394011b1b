"""Quantization of exported folders: int8 (weight-only, dynamic, static), int4 blockwise, fp16.
onnx + onnxruntime.quantization only, no torch (HQQ excepted: onnxruntime runs it on torch)."""

from onnx_edge.quantize.api import quantize
from onnx_edge.quantize.config import QuantConfig, QuantizeError

__all__ = ["QuantConfig", "QuantizeError", "quantize"]
