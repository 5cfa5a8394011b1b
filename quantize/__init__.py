"""Quantization of exported folders (onnx + onnxruntime.quantization, no torch). Not implemented yet: see issue 3."""
