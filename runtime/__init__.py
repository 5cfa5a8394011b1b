"""Torch-free runtime: numpy + onnxruntime + tokenizers. Load an exported folder and generate."""

from onnx_edge.runtime.generate import Chunk, Response
from onnx_edge.runtime.model import EdgeModel, load
from onnx_edge.runtime.pipeline import pipeline
from onnx_edge.runtime.sampling import SamplingParams

__all__ = ["Chunk", "EdgeModel", "Response", "SamplingParams", "load", "pipeline"]
