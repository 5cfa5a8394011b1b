"""The graph rewrite of a GGUF block import: MatMul / Gather / Gemm over an fp32 weight become MatMulNBits /
GatherBlockQuantized over the weight's BlockWeight (see gguf_blocks.py for how each GGUF type is written)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_edge.quantize.config import QuantizeError
from onnx_edge.quantize.gguf_block_weights import EMBED, BlockWeight, pack_codes, pack_zero_points
from onnx_edge.quantize.graph_edit import MS_DOMAIN, ensure_ms_opset

EXACT_ACCURACY_LEVELS = (0, 1)

# On disk, scales and block minimums are the GGUF's own float16 values; a Cast (folded by onnxruntime
# at load) makes the float32 the ops take. All-zero zero points are a ConstantOfShape, not data.

@dataclass
class _QPart:
    """One MatMulNBits/GatherBlockQuantized operand set; a weight is the sum of its parts (+ mins)."""

    data: str  # initializer (N, kb, blob) uint8, shared by MatMulNBits and GatherBlockQuantized
    scales: str  # float32 (N, kb) tensor
    zero_points: str | None  # MatMulNBits layout tensor; None = the op's default 2^(bits-1)
    zero_values: np.ndarray | None  # (N, kb) uint8 when explicit (GatherBlockQuantized wants (N, kb, 1))
    bits: int


@dataclass
class _Emitted:
    bw: BlockWeight
    parts: list[_QPart]
    mins_t: str | None  # float32 (kb, N) tensor
    representation: str
    prelude: list[onnx.NodeProto]  # Cast/Mul/ConstantOfShape over initializers, placed before the first user


class _Builder:
    """Initializers and constant nodes added to the graph, deduplicated by name."""

    def __init__(self, inits: dict[str, onnx.TensorProto]):
        self.inits = inits
        self.added: list[onnx.TensorProto] = []

    def init(self, array: np.ndarray, name: str) -> str:
        if name not in self.inits:
            tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
            self.inits[name] = tensor
            self.added.append(tensor)
        return name

    def float32(self, array: np.ndarray, name: str, nodes: list) -> str:
        """A float32 tensor, stored as float16 + Cast when that is exact (GGUF's d and m always are)."""
        half = array.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), array):
            return self.init(array.astype(np.float32), name)
        nodes.append(_node("Cast", [self.init(half, name + "_f16")], name, f"/gguf/{name}/Cast", to=onnx.TensorProto.FLOAT))
        return name

    def zeros(self, shape: tuple[int, ...], name: str, nodes: list) -> str:
        value = numpy_helper.from_array(np.zeros(1, np.uint8), "value")
        shape_name = self.init(np.array(shape, np.int64), "gguf.shape." + "x".join(map(str, shape)))
        nodes.append(_node("ConstantOfShape", [shape_name], name, f"/gguf/{name}/ConstantOfShape", value=value))
        return name

    def zero_points(self, values: np.ndarray, bits: int, layout_shape: tuple[int, ...], name: str, nodes: list) -> str:
        """Zero points packed for `layout_shape` ((N, kb) -> MatMulNBits, (N, kb, 1) -> GatherBlockQuantized)."""
        packed = pack_zero_points(values.reshape(layout_shape), bits)
        if not packed.any():
            return self.zeros(packed.shape, name, nodes)
        return self.init(packed, name)


def apply_block_weights(model: onnx.ModelProto, blocks: dict[str, BlockWeight], accuracy_level: int = 0, *,
                        verify: bool = True) -> tuple[onnx.ModelProto, dict[str, dict]]:
    """Replace every MatMul whose B initializer, Gather whose table, and Gemm(transB=1) whose B is in
    `blocks` by onnxruntime's contrib ops over the GGUF blocks, and drop the fp32 initializers no node
    uses any more. Edits `model` in place (it can be large) and returns it with the plan:
    {initializer: {status: imported|kept|unused, qtype, bits, ...}} for the manifest.

    With `verify`, an initializer whose data is loaded must equal the blocks' dequantization exactly
    (the fp32 export of the same GGUF does), so a GGUF that is not the model's source is refused."""
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise QuantizeError(f"accuracy_level {accuracy_level} is not one of 0, 1, 2, 3, 4")
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    build = _Builder(inits)
    plan: dict[str, dict] = {}
    emitted: dict[str, _Emitted] = {}
    replaced: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    skipped = getattr(blocks, "skipped", {})

    for node in graph.node:
        role = _weight_role(node, inits)
        if role is None:
            new_nodes.append(node)
            continue
        name = node.input[1] if role in ("matmul", "gemm") else node.input[0]
        if role == "gather" and name not in blocks and name not in skipped and name != EMBED:
            new_nodes.append(node)  # a lookup table that is no weight matrix (rotary caches)
            continue
        bw = blocks.get(name)
        reason = _unfit(node, role, bw, inits[name])
        if reason:
            plan.setdefault(name, {"status": "kept", "dtype": _dtype(inits[name]), "reason": skipped.get(name, reason)})
            new_nodes.append(node)
            continue
        if name not in emitted:
            verified = _verify(bw, inits[name], role) if verify else False
            e = emitted[name] = _emit(bw, accuracy_level, build)
            new_nodes.extend(e.prelude)
            plan[name] = {"status": "imported", "qtype": bw.qtype, "bits": bw.bits, "block_size": bw.block_size,
                          "representation": e.representation, "sources": list(bw.sources),
                          "accuracy_level": accuracy_level, "exact": accuracy_level in EXACT_ACCURACY_LEVELS,
                          "verified": verified, "ops": []}
        e = emitted[name]
        if role == "gather":
            nodes, op = _gather_nodes(node, e, build), "GatherBlockQuantized"
        else:
            nodes, op = _matmul_nodes(node, e, accuracy_level, build), "MatMulNBits"
        plan[name]["ops"].append(f"{node.name or node.op_type}: {op} x{len(e.parts)}"
                                 + (" + block-min MatMul" if e.mins_t else ""))
        new_nodes.extend(nodes)
        replaced.add(name)

    for name, reason in skipped.items():
        if name in inits and name not in plan:
            plan[name] = {"status": "kept", "dtype": _dtype(inits[name]), "reason": reason}
    for name in blocks:
        if name not in plan:
            plan[name] = {"status": "unused", "reason": "no MatMul/Gather/Gemm(transB) in the graph reads it"}

    del graph.node[:]
    graph.node.extend(new_nodes)
    still_used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for name in replaced & still_used:
        plan[name]["fp32_kept"] = "other nodes still read the float32 initializer"
    keep = [t for t in graph.initializer if t.name not in replaced or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep + build.added)
    if emitted:
        ensure_ms_opset(model)
    return model, plan


def _weight_role(node: onnx.NodeProto, inits) -> str | None:
    if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
        return "matmul"
    if node.op_type == "Gather" and node.input[0] in inits:
        return "gather"
    if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits:
        return "gemm"
    return None


def _unfit(node, role, bw: BlockWeight | None, init: onnx.TensorProto) -> str | None:
    """Why this node's weight cannot take the blocks (None = it can)."""
    if bw is None:
        return "no importable GGUF blocks for it"
    dims = tuple(init.dims)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    want = (bw.k, bw.n) if role == "matmul" else (bw.n, bw.k)
    if dims != want:
        return f"shape {dims} differs from the GGUF blocks' {want}"
    if init.data_type != onnx.TensorProto.FLOAT:
        return "not a float32 initializer"
    if role == "gather" and attrs.get("axis", 0) != 0:
        return "Gather on an axis other than 0"
    if role == "gemm":
        has_c = len(node.input) > 2 and bool(node.input[2])
        if (attrs.get("transB", 0) != 1 or attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0
                or (has_c and attrs.get("beta", 1.0) != 1.0)):
            return "Gemm other than A·Bᵀ (+ C)"
    return None


def _dtype(init: onnx.TensorProto) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name


def _verify(bw: BlockWeight, init: onnx.TensorProto, role: str) -> bool:
    """True when checked; False when the data is external and was not loaded."""
    if init.data_location == onnx.TensorProto.EXTERNAL:
        return False
    current = numpy_helper.to_array(init)
    if role == "matmul":
        current = current.T
    expected = bw.dequantize()
    if not np.array_equal(current, expected):
        diff = float(np.max(np.abs(current - expected)))
        raise QuantizeError(
            f"{bw.name}: the GGUF blocks ({', '.join(bw.sources)}) do not dequantize to the model's weights "
            f"(max |diff| {diff:.3g}); export the model from this GGUF file, or pass verify=False")
    return True


def _emit(bw: BlockWeight, accuracy_level: int, build: _Builder) -> _Emitted:
    """The initializers (and constant nodes) for one weight, shared by all its MatMul/Gather/Gemm users."""
    base = bw.name.removesuffix(".weight")
    n, kb = bw.n, bw.k_blocks
    zero = bw.zero_point_values()
    prelude: list[onnx.NodeProto] = []

    def part(prefix: str, packed: np.ndarray, scales: str, zp_values: np.ndarray | None, bits: int) -> _QPart:
        explicit = zp_values is not None and not np.all(zp_values == 1 << (bits - 1))
        zp = build.zero_points(zp_values, bits, (n, kb), f"{base}.{prefix}zero_points", prelude) if explicit else None
        return _QPart(build.init(packed, f"{base}.{prefix}qweight"), scales, zp, zp_values if explicit else None, bits)

    scales = build.float32(bw.scales, f"{base}.scales", prelude)
    parts: list[_QPart] = []
    if bw.bits == 4:
        parts.append(part("", bw.packed, scales, zero, 4))
        representation = "4-bit codes, " + ("zero point 8" if bw.zero_points is None else
                                            "zero point 0" if not zero.any() else "per-block zero points")
    else:
        v = bw.codes().astype(np.int16) - zero[..., None]
        if accuracy_level == 4 or v.min() < -128 or v.max() > 127:
            parts.append(part("", bw.packed, scales, zero, 8))
            representation = "8-bit codes"
        else:
            hi, lo = v >> 4, v & 15  # v = 16 hi + lo, hi in [-8, 7], lo in [0, 15]
            sixteen = build.init(np.array(16.0, np.float32), "gguf.sixteen")
            hi_scales = f"{base}.hi.scales"  # 16 d: exact
            prelude.append(_node("Mul", [scales, sixteen], hi_scales, f"/gguf/{hi_scales}/Mul"))
            parts.append(part("hi.", pack_codes((hi + 8).astype(np.uint8), 4), hi_scales, None, 4))
            parts.append(part("lo.", pack_codes(lo.astype(np.uint8), 4), scales, np.zeros((n, kb), np.uint8), 4))
            representation = "8-bit codes as two exact 4-bit halves (v = 16*hi + lo)"
    mins_t = None
    if bw.mins is not None:
        mins_t = build.float32(np.ascontiguousarray(bw.mins.T), f"{base}.block_mins_t", prelude)
        representation += " + per-block min (x @ E) @ Mᵀ"
    return _Emitted(bw, parts, mins_t, representation, prelude)


def _node(op: str, inputs: list[str], output: str, name: str, domain: str | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=name, domain=domain, **attrs)


def _sum(terms: list[str], output: str, scope: str) -> list[onnx.NodeProto]:
    """Add the terms left to right into `output` (the parts first, the min correction last)."""
    nodes, acc = [], terms[0]
    for j, t in enumerate(terms[1:], 1):
        out = output if j == len(terms) - 1 else f"{scope}/sum_{j}"
        nodes.append(_node("Add", [acc, t], out, f"{scope}/Add_{j}"))
        acc = out
    return nodes


def _matmul_nodes(node: onnx.NodeProto, e: _Emitted, accuracy_level: int, build: _Builder) -> list[onnx.NodeProto]:
    """MatMul(x, W) or Gemm(x, Wᵀ): Σ MatMulNBits(x, part) [+ (x @ E) @ Mᵀ] [+ C]."""
    bw, x, out = e.bw, node.input[0], node.output[0]
    scope = node.name.rsplit("/", 1)[0] if "/" in node.name else (node.name or "/" + bw.name)
    nodes, terms = [], []
    has_c = node.op_type == "Gemm" and len(node.input) > 2 and bool(node.input[2])
    single = len(e.parts) == 1 and e.mins_t is None and not has_c
    for j, p in enumerate(e.parts):
        inputs = [x, p.data, p.scales] + ([p.zero_points] if p.zero_points else [])
        y = out if single else f"{scope}/MatMulNBits_{j}_out"
        nodes.append(_node("MatMulNBits", inputs, y, f"{scope}/MatMulNBits" + (f"_{j}" if j else ""), MS_DOMAIN,
                           K=bw.k, N=bw.n, bits=p.bits, block_size=bw.block_size, accuracy_level=accuracy_level))
        terms.append(y)
    if e.mins_t:
        indicator = np.zeros((bw.k, bw.k_blocks), np.float32)  # E[k, k // block_size] = 1: x @ E sums each block
        indicator[np.arange(bw.k), np.arange(bw.k) // bw.block_size] = 1.0
        e_name = build.init(indicator, f"gguf.block_indicator.K{bw.k}.bs{bw.block_size}")
        sums, corr = f"{scope}/block_sum_out", f"{scope}/block_min_out"
        nodes.append(_node("MatMul", [x, e_name], sums, f"{scope}/block_sum"))
        nodes.append(_node("MatMul", [sums, e.mins_t], corr, f"{scope}/block_min"))
        terms.append(corr)
    if has_c:
        terms.append(node.input[2])
    if len(terms) > 1:
        nodes += _sum(terms, out, scope)
    return nodes


def _gather_nodes(node: onnx.NodeProto, e: _Emitted, build: _Builder) -> list[onnx.NodeProto]:
    """Gather(table, ids): Σ GatherBlockQuantized(part) [+ Gather(M) per block], reshaped to (..., K)."""
    bw, ids, out = e.bw, node.input[1], node.output[0]
    scope = node.name or f"/{bw.name}/Gather"
    n, kb = bw.n, bw.k_blocks
    block_shape = build.init(np.array([n, kb, 1], np.int64), f"gguf.shape.{n}x{kb}x1")
    nodes: list[onnx.NodeProto] = []
    terms = []
    for j, p in enumerate(e.parts):
        scales3 = f"{scope}/scales_{j}"  # GatherBlockQuantized on (N, kb, blob) data takes (N, kb, 1) scales
        nodes.append(_node("Reshape", [p.scales, block_shape], scales3, f"{scope}/Reshape_scales_{j}"))
        inputs = [p.data, ids, scales3]
        if p.zero_values is not None:
            inputs.append(build.zero_points(p.zero_values, p.bits, (n, kb, 1), f"{scope}/zero_points_{j}", nodes))
        y = f"{scope}/GatherBlockQuantized_{j}_out"  # (..., kb, block_size)
        nodes.append(_node("GatherBlockQuantized", inputs, y, f"{scope}/GatherBlockQuantized_{j}", MS_DOMAIN,
                           gather_axis=0, quantize_axis=2, block_size=bw.block_size, bits=p.bits))
        terms.append(y)
    if e.mins_t:
        mins, gathered, expanded = f"{scope}/block_mins", f"{scope}/mins_out", f"{scope}/mins_unsqueezed"
        nodes.append(_node("Transpose", [e.mins_t], mins, f"{scope}/Transpose_mins", perm=[1, 0]))  # (N, kb)
        nodes.append(_node("Gather", [mins, ids], gathered, f"{scope}/Gather_mins", axis=0))  # (..., kb)
        last = build.init(np.array([-1], np.int64), "gguf.axes.last")
        nodes.append(_node("Unsqueeze", [gathered, last], expanded, f"{scope}/Unsqueeze_mins"))  # (..., kb, 1)
        terms.append(expanded)
    blocks_out = terms[0]
    if len(terms) > 1:
        blocks_out = f"{scope}/blocks_out"
        nodes += _sum(terms, blocks_out, scope)
    lead, target = f"{scope}/ids_shape", f"{scope}/out_shape"
    nodes.append(_node("Shape", [ids], lead, f"{scope}/Shape_ids"))
    nodes.append(_node("Concat", [lead, build.init(np.array([bw.k], np.int64), f"gguf.shape.{bw.k}")], target,
                       f"{scope}/Concat_shape", axis=0))
    nodes.append(_node("Reshape", [blocks_out, target], out, f"{scope}/Reshape_out"))  # (..., K)
    return nodes
