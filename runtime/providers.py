"""onnxruntime import and execution-provider selection, with errors that name the extra to install."""

from __future__ import annotations

from onnx_edge.errors import ProviderError

# Our provider names -> onnxruntime's, and the extra that brings the onnxruntime build with it.
ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "dml": "DmlExecutionProvider"}
EXTRAS = {"cpu": "onnx-edge-kit[cpu]", "cuda": "onnx-edge-kit[cuda]", "dml": "onnx-edge-kit[directml]"}
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "dml")


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise ProviderError(
            "onnxruntime is not installed: pip install 'onnx-edge-kit[cpu]' (or [cuda], or [directml] on Windows)"
        ) from None
    return onnxruntime


def available_providers() -> list[str]:
    ort = import_ort()
    have = set(ort.get_available_providers())
    return [name for name, ort_name in ORT_NAMES.items() if ort_name in have]


def resolve_provider(name: str, target: str | None = None) -> str:
    """Map auto/cpu/cuda/dml to one usable provider name, or raise ProviderError. `target` is the provider
    the folder was built for: `auto` takes it, and never silently falls back to the CPU from a GPU target
    (naming a provider, e.g. cpu, is how a caller asks for that)."""
    if name not in PROVIDER_CHOICES:
        raise ProviderError(f"unknown provider '{name}' (choose from {', '.join(PROVIDER_CHOICES)})")
    have = available_providers()
    if name == "auto" and target in ORT_NAMES:
        if target in have:
            return target
        raise ProviderError(
            f"this folder targets {target}, which this onnxruntime build lacks (install {EXTRAS[target]}; "
            f"or pass --provider cpu to run it on the CPU)")
    if name == "auto":
        for candidate in ("cuda", "dml", "cpu"):
            if candidate in have:
                return candidate
        raise ProviderError("no usable onnxruntime execution provider found")
    if name not in have:
        hint = "DirectML runs on Windows only; " if name == "dml" else ""
        raise ProviderError(
            f"provider '{name}' is not available in this onnxruntime build ({hint}install {EXTRAS[name]}; "
            f"onnxruntime, onnxruntime-gpu and onnxruntime-directml cannot be installed together)"
        )
    return name
