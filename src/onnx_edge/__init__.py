"""onnx-edge-kit: export decoder LMs to ONNX, quantize them, run them without torch.

Only light names live here; heavy modules load on first use so `import onnx_edge` stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "pipeline"]


def load(path, provider="auto", **kwargs):
    """Load an exported model folder (see onnx_edge.runtime.load)."""
    from onnx_edge.runtime import load as _load

    return _load(path, provider=provider, **kwargs)


def pipeline(task, model, **kwargs):
    """A Hugging Face-style pipeline over an exported folder (see onnx_edge.runtime.pipeline)."""
    from onnx_edge.runtime.pipeline import pipeline as _pipeline

    return _pipeline(task, model=model, **kwargs)
