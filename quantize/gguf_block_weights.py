"""GGUF blocks read as our weights: each Q4_0 / Q4_1 / Q8_0 matrix a BlockWeight in MatMulNBits's (N, K)
layout, q/k rows un-permuted and q|k|v, gate|up packed (see gguf_blocks.py for the scheme)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnx_edge.errors import UnsupportedModelError
from onnx_edge.models import gguf_layout

QK = 32  # block size of every importable GGUF type
# bytes per block (ggml's block_q4_0, block_q4_1, block_q8_0).
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
IMPORTABLE = tuple(BLOCK_BYTES)
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
    try:
        layout = gguf_layout(arch)  # which architectures, and how, is each family's spec's (models/)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{gguf_path}: {exc}") from None
    tensors = {t.name: t for t in reader.tensors}
    h, nh, nkv, d = s["hidden_size"], s["num_heads"], s["num_kv_heads"], s["head_dim"]
    inter, vocab = s["intermediate_size"], s["vocab_size"]
    q_perm = _unpermute_rows(nh * d, nh) if layout.permuted_qk else None
    k_perm = _unpermute_rows(nkv * d, nkv) if layout.permuted_qk else None  # transformers: n_head = num_kv_heads for k

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
    zero_points = None if np.all(zero == default) else pack_zero_points(zero, bits)
    qtypes = list(dict.fromkeys(p.qtype for p in parts))
    return BlockWeight(name=name, qtype="+".join(qtypes), bits=bits, block_size=QK, packed=pack_codes(codes, bits),
                       scales=np.ascontiguousarray(scales), zero_points=zero_points, mins=mins, sources=sources)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., m) codes -> MatMulNBits bytes: 4-bit pairs with the even index in the low nibble."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4), dtype=np.uint8)


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def pack_zero_points(zero: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return np.ascontiguousarray(zero, dtype=np.uint8)
    if zero.shape[-1] % 2:
        zero = np.concatenate([zero, np.zeros((*zero.shape[:-1], 1), np.uint8)], axis=-1)
    return pack_codes(zero, 4)
