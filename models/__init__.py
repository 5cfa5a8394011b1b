"""Per-architecture specs, one module per HF `model_type`, found by name (no registry to edit)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from onnx_edge.errors import UnsupportedModelError
from onnx_edge.models.spec import (ArchSpec, ConfigRule, GGUFLayout, ModelShape, check_config, config_rules,
                                   shape_from_config)

__all__ = ["ArchSpec", "ConfigRule", "GGUFLayout", "ModelShape", "check_config", "config_rules", "get_spec",
           "gguf_layout", "shape_from_config", "supported_model_types"]

# model_types that share another's module exactly.
REMAP: dict[str, str] = {}

_NOT_ARCH = {"spec"}


def supported_model_types() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in _NOT_ARCH]
    return sorted(names + list(REMAP))


def get_spec(model_type: str) -> ArchSpec:
    if not isinstance(model_type, str):
        raise UnsupportedModelError(f"model_type must be a string, got {model_type!r}")
    name = REMAP.get(model_type, model_type)
    if not name or not name.isidentifier() or name in _NOT_ARCH or name not in supported_model_types():
        raise UnsupportedModelError(
            f"unsupported model_type '{model_type}' (supported: {', '.join(supported_model_types())})"
        )
    return importlib.import_module(f"onnx_edge.models.{name}").SPEC


def gguf_layout(architecture: str) -> GGUFLayout:
    """The layout of a GGUF file whose general.architecture is `architecture`, from the spec that states it."""
    layouts = {spec.gguf.architecture: spec.gguf for spec in map(get_spec, supported_model_types()) if spec.gguf}
    if architecture not in layouts:
        raise UnsupportedModelError(
            f"GGUF block import supports the {', '.join(layouts)} tensor layouts, not '{architecture}'")
    return layouts[architecture]
