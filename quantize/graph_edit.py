"""Small helpers for rewriting an ONNX graph in place: find initializers, consumers, replace nodes."""

from __future__ import annotations

import fnmatch

import numpy as np
import onnx
from onnx import numpy_helper

MS_DOMAIN = "com.microsoft"


def initializer_map(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def remove_initializer(model: onnx.ModelProto, name: str) -> None:
    keep = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def add_initializer(model: onnx.ModelProto, array: np.ndarray, name: str) -> str:
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def ensure_ms_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))


def matmul_weights(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """B initializer name -> the MatMul node that uses it (the linear layers)."""
    inits = initializer_map(model)
    return {n.input[1]: n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}


def matches(name: str, patterns) -> bool:
    """Glob match against the initializer name, also with '.weight' dropped (`--keep '*.down'`)."""
    short = name.removesuffix(".weight")
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(short, p) for p in patterns)
