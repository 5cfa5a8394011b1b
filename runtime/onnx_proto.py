"""A protobuf wire-format reader for model.onnx: every TensorProto (external-data references included) and
the main graph's interface, without loading any data and without the `onnx` package."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_DEPTH = 100  # messages nested deeper than this are refused (protobuf's own default limit)


class Malformed(Exception):
    """Bytes that are not a well-formed serialized ModelProto."""


@dataclass
class TensorRef:
    name: str
    external: dict[str, str] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    data_location: int = 0
    data_type: int = 0
    dims: list[int] = field(default_factory=list)


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Malformed("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload) per field."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wire, value
        elif wire == 1:
            if pos + 8 > end:
                raise Malformed("truncated fixed64")
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise Malformed("truncated fixed32")
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise Malformed("length-delimited field runs past its message")
            yield num, wire, (pos, pos + length)
            pos += length
        else:  # groups (3, 4) are not used by onnx.proto; 6, 7 do not exist
            raise Malformed(f"wire type {wire}")
    if pos != end:
        raise Malformed("field runs past its message")


def _text(buf, span) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("a string is not valid UTF-8") from None


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# Which fields of which message hold nested messages. TensorProto is parsed separately.
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_KINDS = {"model": _MODEL, "training": _TRAINING, "function": _FUNCTION, "graph": _GRAPH, "node": _NODE,
          "attribute": _ATTRIBUTE, "sparse": _SPARSE}


def _tensor(buf, start: int, end: int) -> TensorRef:
    t = TensorRef(name="")
    for num, wire, value in _fields(buf, start, end):
        if num == 8 and wire == 2:
            t.name = _text(buf, value)
        elif num == 2 and wire == 0:
            t.data_type = value
        elif num == 14 and wire == 0:
            t.data_location = value
        elif num == 1 and wire == 0:
            t.dims.append(_signed(value))
        elif num == 1 and wire == 2:  # packed dims
            pos, stop = value
            while pos < stop:
                v, pos = _varint(buf, pos, stop)
                t.dims.append(_signed(v))
        elif num == 13 and wire == 2:
            key = val = ""
            for n, w, v in _fields(buf, *value):
                if n == 1 and w == 2:
                    key = _text(buf, v)
                elif n == 2 and w == 2:
                    val = _text(buf, v)
            t.keys.append(key)
            t.external[key] = val
    return t


def tensors(buf) -> list[TensorRef]:
    """Every TensorProto in a serialized ModelProto (iterative walk: no recursion to exhaust)."""
    found = []
    stack = [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Malformed(f"graphs nested deeper than {MAX_DEPTH} levels")
        nested = _KINDS[kind]
        for num, wire, value in _fields(buf, start, end):
            sub = nested.get(num)
            if sub is None or wire != 2:
                continue
            if sub == "tensor":
                found.append(_tensor(buf, *value))
            else:
                stack.append((sub, value[0], value[1], depth + 1))
    return found


@dataclass
class GraphInterface:
    """The main graph's inputs and outputs: name -> (element type, dims: int, str (symbolic) or None)."""

    inputs: dict[str, tuple[int, list]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, list]] = field(default_factory=dict)
    initializers: dict[str, list[int]] = field(default_factory=dict)  # name -> dims
    nodes: list[tuple[str, list[str]]] = field(default_factory=list)  # (op_type, inputs) of the main graph


def _value_info(buf, start: int, end: int) -> tuple[str, int, list]:
    name, elem, dims = "", 0, []
    for num, wire, value in _fields(buf, start, end):
        if num == 1 and wire == 2:
            name = _text(buf, value)
        elif num == 2 and wire == 2:  # TypeProto
            for n, w, v in _fields(buf, *value):
                if n != 1 or w != 2:  # tensor_type only
                    continue
                for n2, w2, v2 in _fields(buf, *v):
                    if n2 == 1 and w2 == 0:
                        elem = v2
                    elif n2 == 2 and w2 == 2:  # TensorShapeProto
                        for n3, w3, v3 in _fields(buf, *v2):
                            if n3 != 1 or w3 != 2:
                                continue
                            dim = None
                            for n4, w4, v4 in _fields(buf, *v3):
                                if n4 == 1 and w4 == 0:
                                    dim = _signed(v4)
                                elif n4 == 2 and w4 == 2:
                                    dim = _text(buf, v4)
                            dims.append(dim)
    return name, elem, dims


def interface(buf) -> GraphInterface:
    """Inputs, outputs and initializer names of the main graph (every `graph` field: protobuf merges them)."""
    iface = GraphInterface()
    for num, wire, value in _fields(buf, 0, len(buf)):
        if num != 7 or wire != 2:
            continue
        for n, w, v in _fields(buf, *value):
            if w != 2:
                continue
            if n in (11, 12):
                name, elem, dims = _value_info(buf, *v)
                (iface.inputs if n == 11 else iface.outputs)[name] = (elem, dims)
            elif n == 5:
                t = _tensor(buf, *v)
                iface.initializers[t.name] = t.dims
            elif n == 1:
                op, inputs = "", []
                for n2, w2, v2 in _fields(buf, *v):
                    if n2 == 1 and w2 == 2:
                        inputs.append(_text(buf, v2))
                    elif n2 == 4 and w2 == 2:
                        op = _text(buf, v2)
                iface.nodes.append((op, inputs))
    return iface
