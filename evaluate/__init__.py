"""Evaluation: quality metrics, bench, compare (onnx-edge, onnxruntime-genai and llama.cpp engines) and the
report. Imports the runtime and the root package; the runtime never imports this."""
