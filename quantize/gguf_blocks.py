"""Lossless GGUF import: build MatMulNBits / GatherBlockQuantized weights straight from a GGUF file's
quantized blocks instead of re-quantizing its dequantized weights (a double quantization).

The ONNX dequantization of every imported weight equals `gguf.quants.dequantize` bit for bit
(+0/-0 aside) under accuracy_level 0 or 1 on the onnxruntime CPU kernels (tests/test_gguf_blocks.py
probes each case with A = identity). How each GGUF type is written:

  Q4_0  w = d·(q - 8)      one 4-bit MatMulNBits, scale d, zero point 8 (the op's default).
  Q8_0  w = d·x, x int8    codes x + 128, zero point 128. The CPU kernel's 8-bit path is ~20x slower
                           than fp32 at accuracy_level 0/1, so there the codes v = x are split into
                           two 4-bit halves v = 16·hi + lo: MatMulNBits(hi + 8, 16d) + MatMulNBits(lo, d,
                           zero point 0). Both products are exact and so is their sum (|v| ≤ 128, d has
                           11 significant bits). accuracy_level 4 uses the native 8-bit kernel.
  Q4_1  w = d·q + m        MatMulNBits(q, d, zero point 0) + BlockSum(x) @ Mᵀ, M = (N, K/32) block
                           minimums and BlockSum(x) = x @ E (E the (K, K/32) block indicator), so the
                           identity probe yields fl(d·q + m) = gguf's value: d·q is exact. A float zero
                           point -m/d is not exact (and hits a slow kernel path).

accuracy_level 4 quantizes the activations to int8 per block: the weights are the same numbers, the
products are not (about 1 ulp on the identity probe; on SmolLM2 the logits move by up to 5, mean KL
0.05 nats vs fp32), so level 0 is the default.

GGUF stores a 2-D weight as N rows of blocks along K, which is MatMulNBits's (N, k_blocks, blob)
layout; rows are output features, so llama.cpp's q/k row permutation is undone by permuting whole rows
(exactly as transformers' GGUF loader does on the dequantized matrix), and q|k|v, gate|up are packed
by concatenating rows. Torch-free: numpy, onnx and gguf only.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_edge.errors import UnsupportedModelError
from onnx_edge.quantize.config import QuantizeError
from onnx_edge.quantize.graph_edit import MS_DOMAIN, ensure_ms_opset

QK = 32  # block size of every importable GGUF type
# bytes per block (ggml's block_q4_0, block_q4_1, block_q8_0).
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
IMPORTABLE = tuple(BLOCK_BYTES)
# GGUF architectures whose tensor names we map (q/k/v and gate/up stored separately).
ARCHITECTURES = ("llama", "mistral", "qwen2")
# transformers' GGUF loader un-permutes q/k rows for these architectures only (LlamaTensorProcessor).
PERMUTED_ARCHITECTURES = ("llama",)
EXACT_ACCURACY_LEVELS = (0, 1)
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


@dataclass
class BlockWeight:
    """One of our weight matrices as GGUF blocks, in MatMulNBits's (N, K) layout.

    Dequantized: w[n, b*bs + j] = (code - zero_point[n, b]) * scales[n, b] (+ mins[n, b]), in float32."""

    name: str  # our initializer name
    qtype: str  # GGUF type ("Q4_1"); a pack of different types lists them in row order ("Q4_0+Q8_0")
    bits: int  # code width of `packed`: 4 or 8
    block_size: int
    packed: np.ndarray  # uint8 (N, k_blocks, block_size * bits // 8); 4-bit: low nibble = even index
    scales: np.ndarray  # float32 (N, k_blocks)
    zero_points: np.ndarray | None  # uint8, MatMulNBits layout: 4-bit two per byte (N, ceil(kb/2)), 8-bit (N, kb);
    #                                 None = the op's default 2^(bits-1)
    mins: np.ndarray | None  # float32 (N, k_blocks) added after scaling (Q4_1's m); None = 0
    sources: tuple[str, ...]  # GGUF tensor names, in row order

    @property
    def n(self) -> int:
        return self.packed.shape[0]

    @property
    def k_blocks(self) -> int:
        return self.packed.shape[1]

    @property
    def k(self) -> int:
        return self.k_blocks * self.block_size

    def codes(self) -> np.ndarray:
        """uint8 (N, k_blocks, block_size): one code per weight."""
        return _unpack(self.packed, self.bits)

    def zero_point_values(self) -> np.ndarray:
        """uint8 (N, k_blocks): one zero point per block."""
        if self.zero_points is None:
            return np.full((self.n, self.k_blocks), 1 << (self.bits - 1), np.uint8)
        if self.bits == 8:
            return self.zero_points
        return _unpack(self.zero_points, 4)[:, :self.k_blocks]

    def dequantize(self) -> np.ndarray:
        """float32 (N, K), computed as gguf does (bitwise equal to gguf.quants.dequantize, row order ours)."""
        v = (self.codes().astype(np.int16) - self.zero_point_values()[..., None]).astype(np.float32)
        w = v * self.scales[..., None]
        if self.mins is not None:
            w = w + self.mins[..., None]
        return w.reshape(self.n, self.k)


class BlockWeights(dict):
    """read_block_weights' answer: our initializer name -> BlockWeight. `skipped` says, for each of our
    matrices that is not there, why (e.g. 'blk.0.attn_v.weight is Q6_K')."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = {}
        self.architecture = ""


# ---------------------------------------------------------------- reading GGUF blocks

def read_block_weights(gguf_path: str | Path, shape) -> BlockWeights:
    """Every GGUF tensor that maps onto one of our matrices, as MatMulNBits-ready blocks.

    `shape` is the model's ModelShape (or the manifest's architecture dict): layer count, heads,
    sizes. Matrices with a part of a type we cannot import exactly (F32/F16/K-quants...) are left
    out and listed in the answer's `skipped`; tensors that exist but do not fit the shape raise."""
    from gguf import GGUFReader

    s = shape if isinstance(shape, dict) else shape.to_dict()
    reader = GGUFReader(str(gguf_path))
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode() if field else ""
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{gguf_path}: GGUF block import supports the {', '.join(ARCHITECTURES)} tensor layouts, not '{arch}'")
    tensors = {t.name: t for t in reader.tensors}
    h, nh, nkv, d = s["hidden_size"], s["num_heads"], s["num_kv_heads"], s["head_dim"]
    inter, vocab = s["intermediate_size"], s["vocab_size"]
    permute = arch in PERMUTED_ARCHITECTURES
    q_perm = _unpermute_rows(nh * d, nh) if permute else None
    k_perm = _unpermute_rows(nkv * d, nkv) if permute else None  # transformers: n_head = num_kv_heads for k

    targets: list[tuple[str, int, list[tuple[str, int, np.ndarray | None]]]] = []
    for i in range(s["num_layers"]):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        targets += [
            (p + "attn.qkv.weight", h, [(b + "attn_q.weight", nh * d, q_perm), (b + "attn_k.weight", nkv * d, k_perm),
                                        (b + "attn_v.weight", nkv * d, None)]),
            (p + "attn.o.weight", nh * d, [(b + "attn_output.weight", h, None)]),
            (p + "mlp.gate_up.weight", h, [(b + "ffn_gate.weight", inter, None), (b + "ffn_up.weight", inter, None)]),
            (p + "mlp.down.weight", inter, [(b + "ffn_down.weight", h, None)]),
        ]
    targets += [(EMBED, h, [("token_embd.weight", vocab, None)]), (LM_HEAD, h, [("output.weight", vocab, None)])]

    out = BlockWeights()
    out.architecture = arch
    for name, k, parts in targets:
        if not any(src in tensors for src, _, _ in parts):
            continue
        missing = [src for src, _, _ in parts if src not in tensors]
        if missing:
            out.skipped[name] = f"{missing[0]} is not in the GGUF file"
            continue
        decoded = []
        for src, rows, perm in parts:
            t = tensors[src]
            ne = [int(x) for x in t.shape]  # ggml order: ne[0] = K (contiguous), ne[1] = N rows
            if len(ne) != 2 or ne[0] != k or ne[1] != rows:
                raise UnsupportedModelError(
                    f"{gguf_path}: {src} has ggml shape {ne}, expected [{k}, {rows}] for this model")
            qtype = t.tensor_type.name
            if qtype not in IMPORTABLE:
                decoded = None
                out.skipped[name] = f"{src} is {qtype} (importable: {', '.join(IMPORTABLE)})"
                break
            raw = np.asarray(t.data).reshape(rows, -1)
            if perm is not None:
                raw = raw[perm]  # whole rows of blocks: exact
            decoded.append(_decode(raw, qtype, k))
        if decoded:
            out[name] = _combine(name, decoded, tuple(src for src, _, _ in parts))
    return out


def _unpermute_rows(rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation: weights[perm] equals transformers'
    `_reverse_permute_weights` (reshape (n_head, dim, 2, ...) then swap axes 1 and 2)."""
    dim = rows // n_head // 2
    return np.arange(rows).reshape(n_head, dim, 2).swapaxes(1, 2).reshape(-1)


@dataclass
class _Part:
    qtype: str
    codes: np.ndarray  # uint8 (n, kb, 32)
    scales: np.ndarray  # float32 (n, kb)
    zero: np.ndarray  # uint8 (n, kb)
    mins: np.ndarray | None
    bits: int


def _decode(raw: np.ndarray, qtype: str, k: int) -> _Part:
    """GGUF rows (n, row_bytes) -> codes, scales, zero points, mins (ggml's block structs)."""
    n, kb = raw.shape[0], k // QK
    blocks = np.ascontiguousarray(raw).reshape(n, kb, BLOCK_BYTES[qtype])
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if qtype == "Q8_0":  # d, int8 x[32]
        codes = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return _Part(qtype, codes, d, np.full((n, kb), 128, np.uint8), None, 8)
    if qtype == "Q4_0":  # d, qs[16]: element j < 16 in the low nibble of qs[j], element j + 16 in its high nibble
        return _Part(qtype, _ggml_nibbles(blocks[..., 2:]), d, np.full((n, kb), 8, np.uint8), None, 4)
    # Q4_1: d, m, qs[16]
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    return _Part(qtype, _ggml_nibbles(blocks[..., 4:]), d, np.zeros((n, kb), np.uint8), m, 4)


def _ggml_nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _combine(name: str, parts: list[_Part], sources: tuple[str, ...]) -> BlockWeight:
    """Concatenate parts along N. Mixed 4/8-bit parts become 8-bit codes (the same integers)."""
    bits = max(p.bits for p in parts)
    cat = (lambda xs: xs[0]) if len(parts) == 1 else (lambda xs: np.concatenate(xs, axis=0))
    codes = cat([p.codes for p in parts])
    zero = cat([p.zero for p in parts])
    scales = cat([p.scales for p in parts])
    mins = None
    if any(p.mins is not None for p in parts):
        mins = cat([p.mins if p.mins is not None else np.zeros_like(p.scales) for p in parts])
    default = 1 << (bits - 1)
    zero_points = None if np.all(zero == default) else _pack_zero_points(zero, bits)
    qtypes = list(dict.fromkeys(p.qtype for p in parts))
    return BlockWeight(name=name, qtype="+".join(qtypes), bits=bits, block_size=QK, packed=_pack(codes, bits),
                       scales=np.ascontiguousarray(scales), zero_points=zero_points, mins=mins, sources=sources)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., m) codes -> MatMulNBits bytes: 4-bit pairs with the even index in the low nibble."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4), dtype=np.uint8)


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def _pack_zero_points(zero: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return np.ascontiguousarray(zero, dtype=np.uint8)
    if zero.shape[-1] % 2:
        zero = np.concatenate([zero, np.zeros((*zero.shape[:-1], 1), np.uint8)], axis=-1)
    return _pack(zero, 4)


# ---------------------------------------------------------------- the graph rewrite
#
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
        packed = _pack_zero_points(values.reshape(layout_shape), bits)
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
            parts.append(part("hi.", _pack((hi + 8).astype(np.uint8), 4), hi_scales, None, 4))
            parts.append(part("lo.", _pack(lo.astype(np.uint8), 4), scales, np.zeros((n, kb), np.uint8), 4))
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


# ---------------------------------------------------------------- a whole folder

def import_gguf_folder(src: str | os.PathLike, gguf_path: str | os.PathLike, output: str | os.PathLike,
                       accuracy_level: int = 0, *, verify: bool = True, force: bool = False):
    """The fp32 folder exported from `gguf_path` -> a folder whose weights are the GGUF's own blocks,
    written atomically. Returns its Manifest: precision 'gguf-<main type>', the plan under quantization."""
    import onnx_edge
    from onnx_edge.manifest import MANIFEST_NAME, read_manifest, sha256_file, verify_files, write_manifest
    from onnx_edge.staging import check_output, staged_folder

    src, out, gguf_path = Path(src).expanduser(), Path(output).expanduser().absolute(), Path(gguf_path)
    manifest = read_manifest(src)
    if manifest.precision != "fp32":
        raise QuantizeError(f"{src}: is {manifest.precision}; import GGUF blocks into the fp32 export")
    if out == src.absolute():
        raise QuantizeError("output must differ from the input folder")
    check_output(out, force)
    verify_files(src, manifest)
    blocks = read_block_weights(gguf_path, manifest.architecture)
    model = onnx.load(str(src / manifest.model_file))
    model, plan = apply_block_weights(model, blocks, accuracy_level, verify=verify)
    del blocks
    data_file = "model.onnx.data"
    with staged_folder(out) as tmp:
        onnx.save_model(model, str(tmp / manifest.model_file), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_file, size_threshold=1024)
        del model
        for f in src.iterdir():
            if f.is_file() and f.name not in (MANIFEST_NAME, manifest.model_file, data_file):
                shutil.copy2(f, tmp / f.name)
        imported = {k: v for k, v in plan.items() if v["status"] == "imported"}
        main = Counter(v["qtype"] for v in imported.values()).most_common(1)
        m = copy.deepcopy(manifest)
        m.precision = f"gguf-{main[0][0].lower()}" if main else "fp32"
        m.validation = None  # PyTorch parity belongs to the fp32 export
        m.provenance = dict(manifest.provenance, quantized_from=str(src), export_validation=manifest.validation,
                            quantizer=f"onnx-edge-kit {onnx_edge.__version__} (gguf blocks)")
        m.quantization = {
            "method": "gguf_blocks", "gguf": gguf_path.name, "gguf_sha256": sha256_file(gguf_path),
            "accuracy_level": accuracy_level, "exact": accuracy_level in EXACT_ACCURACY_LEVELS,
            "imported": len(imported), "weights": plan,
            "size_mb": {"before": round(sum(e.size for e in manifest.files.values()) / 1e6, 2)},
        }
        write_manifest(tmp, m)
        m.quantization["size_mb"]["after"] = round(sum(e.size for e in m.files.values()) / 1e6, 2)
        write_manifest(tmp, m)
    return m
