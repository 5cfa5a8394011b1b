"""onnxruntime import and execution-provider selection, with errors that name the extra to install."""

from __future__ import annotations

from onnx_edge.errors import ProviderError
from onnx_edge.targets import AUTO_ORDER, PROVIDER_CHOICES, TARGETS


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        extras = " or ".join(f"'{t.extra}'" + (f" ({t.install_note})" if t.install_note else "")
                             for t in TARGETS.values())
        raise ProviderError(f"onnxruntime is not installed: pip install {extras}") from None
    return onnxruntime


def available_providers() -> list[str]:
    ort = import_ort()
    have = set(ort.get_available_providers())
    return [name for name, t in TARGETS.items() if t.ort_name in have]


def resolve_provider(name: str, target: str | None = None) -> str:
    """Map one of PROVIDER_CHOICES to one usable provider name, or raise ProviderError. `target` is the provider
    the folder was built for: `auto` takes it, and never silently falls back to the CPU from a GPU target
    (naming a provider, e.g. cpu, is how a caller asks for that)."""
    if name not in PROVIDER_CHOICES:
        raise ProviderError(f"unknown provider '{name}' (choose from {', '.join(PROVIDER_CHOICES)})")
    have = available_providers()
    if name == "auto" and target in TARGETS:
        if target in have:
            return target
        raise ProviderError(
            f"this folder targets {target}, which this onnxruntime build lacks (install {TARGETS[target].extra}; "
            f"or pass --provider cpu to run it on the CPU)")
    if name == "auto":
        for candidate in AUTO_ORDER:
            if candidate in have:
                return candidate
        raise ProviderError("no usable onnxruntime execution provider found")
    if name not in have:
        t = TARGETS[name]
        hint = f"{t.install_note}; " if t.install_note else ""
        raise ProviderError(
            f"provider '{name}' is not available in this onnxruntime build ({hint}install {t.extra}; "
            f"onnxruntime, onnxruntime-gpu and onnxruntime-directml cannot be installed together)"
        )
    return name
