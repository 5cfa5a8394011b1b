"""Torch-free runtime: numpy + onnxruntime + tokenizers. Load an exported folder and generate."""
