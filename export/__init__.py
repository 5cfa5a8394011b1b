"""Torch side: load HF folders, hub ids or GGUF files and export validated ONNX decoder folders."""

from onnx_edge.export.exporter import export

__all__ = ["export"]
