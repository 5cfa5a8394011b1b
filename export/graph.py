"""A thin helper over onnx.helper for writing graphs by hand: hierarchical node names
(`/model/layers.0/attn/q/MatMul`), deduplicated constants, weights as named initializers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Graph:
    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    _consts: dict[tuple, str] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)
    # Non-default operator domains used so far (e.g. com.microsoft), with their opset version.
    domains: dict[str, int] = field(default_factory=dict)

    def op(self, op_type: str, inputs: list[str], scope: str, n_out: int = 1, name: str | None = None,
           domain: str = "", unused: tuple[int, ...] = (), **attrs) -> str | list[str]:
        """Add a node under `scope`; returns its output name (or names when n_out > 1).
        Outputs listed in `unused` (optional outputs nobody reads) get no name, so nothing computes them;
        their slot in the returned list is None. An input given as "" is an omitted optional input."""
        base = f"{scope}/{name or op_type}"
        node_name, k = base, 1
        while node_name in self._names:
            k += 1
            node_name = f"{base}_{k}"
        self._names.add(node_name)
        outs = ["" if j in unused else f"{node_name}/output_{j}" for j in range(n_out)]
        while inputs and inputs[-1] == "":
            inputs = inputs[:-1]  # trailing omitted optional inputs are simply left off
        if domain:
            self.domains.setdefault(domain, 1)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, domain=domain or None, **attrs))
        if n_out == 1:
            return outs[0]
        return [o or None for o in outs]

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant initializer, shared by every node that needs the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"/const/{array.dtype.name}_{len(self._consts)}"
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def optional_input(self, name: str, default: np.ndarray) -> str:
        """A graph input backed by an initializer of the same name: callers that do not feed it get
        `default` (onnxruntime lists it under overridable initializers, not under required inputs)."""
        array = np.asarray(default)
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(array.shape)))
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> None:
        """Expose `value` under the public name `name` (an Identity keeps internal names free)."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"/output/{name}"))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    # Ops whose signature changed across opsets, written once here.
    def reduce_mean(self, x: str, axes: list[int], scope: str) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(axes)], scope, keepdims=1)
        return self.op("ReduceMean", [x], scope, axes=axes, keepdims=1)

    def model(self, name: str, producer: str, version: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)]
            + [helper.make_opsetid(d, v) for d, v in sorted(self.domains.items())],
            producer_name=producer,
            producer_version=version,
        )
        # IR 8 is the newest that every onnxruntime this kit supports (DirectML's 1.24 included) reads.
        model.ir_version = min(model.ir_version, 10 if self.opset >= 21 else 8)
        return model


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
