"""Build the decoder-only ONNX graph from an ArchSpec, a ModelShape and canonical weights.

One graph serves prefill (past length 0) and cached decode; see DESIGN.md for the I/O contract."""

from __future__ import annotations

import math

import numpy as np
import onnx

from onnx_edge.export.graph import FLOAT, INT64, Graph
from onnx_edge.manifest import IOSpec
from onnx_edge.models.spec import ArchSpec, ModelShape
from onnx_edge.runtime.graph_contract import LEARNED_POSITIONS

# Masked scores take the most negative float rather than -inf, so a fully masked row (a left-pad
# query position) softmaxes to uniform instead of NaN.
MASK_VALUE = float(np.finfo(np.float32).min)


def build_decoder(spec: ArchSpec, shape: ModelShape, weights: dict[str, np.ndarray],
                  rope: tuple[np.ndarray, np.ndarray] | None, opset: int = 17,
                  producer_version: str = "") -> tuple[onnx.ModelProto, IOSpec]:
    """The graph and the I/O it has (the manifest's `io`: the contract's names, concat KV).
    `weights` are canonical (see export/weights.py): matrices (in, out) except embed/lm_head (vocab, hidden).
    `rope` is (cos, sin) of shape (context_length, rotary_dim // 2), attention scaling folded in."""
    io = IOSpec()
    g = Graph(opset=opset)
    ids, mask_in, pos, past = decoder_inputs(g, io, shape)

    # One (B, 1, S, T) bool mask per distinct layer window (gemma2 alternates sliding and full layers).
    windows = dict.fromkeys(shape.window(i) for i in range(shape.num_layers))
    masks = {win: attention_mask(g, ids, mask_in, win) for win in windows}
    rope, local_rope = split_local_rope(shape, rope)  # gemma3: the sliding layers' own tables
    cos_sin = rotary_tables(g, longrope_positions(g, shape, pos), rope) if spec.positions == "rope" else None
    local_cos_sin = rotary_tables(g, pos, local_rope, "model.rotary.local") if local_rope else None

    x = g.op("Gather", [g.weight("model.embed_tokens.weight", weights["embed_tokens.weight"]), ids],
             "/model/embed_tokens")  # (B, S, hidden)
    x = scale_embedding(g, spec, shape, x)
    x = scaled(g, x, shape.embedding_multiplier, "/model/embed_multiplier")  # granite
    if spec.positions == "learned":
        wpe = g.weight(LEARNED_POSITIONS, weights["pos_embed.weight"])
        x = g.op("Add", [x, g.op("Gather", [wpe, pos], "/model/pos_embed")], "/model/pos_embed")

    presents = []
    for i in range(shape.num_layers):
        scope = f"/model/layers.{i}"
        w = {k.removeprefix(f"layers.{i}."): v for k, v in weights.items() if k.startswith(f"layers.{i}.")}
        pre = spec.block != "post_norm"  # post_norm (olmo2): the sublayer's output is normed, not its input
        h = norm(g, spec, shape, x, w, "attn_norm", f"{scope}/attn_norm") if pre else x
        layer_cos_sin = local_cos_sin if shape.uses_local_rope(i) else cos_sin  # gemma3
        attn, present = attention(g, spec, shape, h, w, past[i], masks[shape.window(i)],
                                  layer_cos_sin if shape.uses_rope(i) else None,
                                  f"{scope}/attn")  # smollm3: NoPE layers skip the rotary
        presents.append(present)
        if spec.block == "parallel":  # gpt_neox: mlp(mlp_norm(x)) of the same x, then x + attn + mlp as one sum
            out = mlp(g, spec, shape, norm(g, spec, shape, x, w, "mlp_norm", f"{scope}/mlp_norm"), w, f"{scope}/mlp")
            x = g.op("Add", [g.op("Add", [out, attn], f"{scope}/residual"), x], f"{scope}/residual")
            continue
        attn = attn if pre else norm(g, spec, shape, attn, w, "attn_norm", f"{scope}/attn_norm")
        if spec.block == "sandwich":  # gemma2 / gemma3: the output normed too, before the residual add
            attn = norm(g, spec, shape, attn, w, "attn_post_norm", f"{scope}/attn_post_norm")
        x = g.op("Add", [x, scaled(g, attn, shape.residual_multiplier, f"{scope}/attn_residual")],
                 f"{scope}/attn_residual")
        h = norm(g, spec, shape, x, w, "mlp_norm", f"{scope}/mlp_norm") if pre else x
        out = mlp(g, spec, shape, h, w, f"{scope}/mlp")
        out = out if pre else norm(g, spec, shape, out, w, "mlp_norm", f"{scope}/mlp_norm")
        if spec.block == "sandwich":  # gemma2 / gemma3
            out = norm(g, spec, shape, out, w, "mlp_post_norm", f"{scope}/mlp_post_norm")
        x = g.op("Add", [x, scaled(g, out, shape.residual_multiplier, f"{scope}/mlp_residual")],
                 f"{scope}/mlp_residual")

    x = norm(g, spec, shape, x, {k.removeprefix("final_"): v for k, v in weights.items() if k.startswith("final_")},
             "norm", "/model/final_norm")
    logits = lm_head(g, shape, x, weights)

    g.output(logits, io.logits, FLOAT, ["batch", "sequence", shape.vocab_size])
    present_shape = ["batch", shape.num_kv_heads, "total_sequence", shape.head_dim]
    for i, (k, v) in enumerate(presents):
        g.output(k, io.present_key.format(i=i), FLOAT, present_shape)
        g.output(v, io.present_value.format(i=i), FLOAT, present_shape)
    return g.model(f"{shape.model_type}_decoder", "onnx-edge-kit", producer_version), io


def scale_embedding(g: Graph, spec: ArchSpec, shape: ModelShape, x: str) -> str:
    """gemma family: the gathered rows (B, S, hidden) times sqrt(hidden) as an fp32 constant, as transformers'
    embed_scale buffer; the table itself stays unscaled for a tied lm_head."""
    if spec.embed_scale == "none":
        return x
    return g.op("Mul", [x, g.const(shape.hidden_size ** 0.5, np.float32)], "/model/embed_scale")


def scaled(g: Graph, x: str, factor: float, scope: str) -> str:
    """granite: x times a config multiplier, as transformers multiplies (no node when it is 1)."""
    return x if factor == 1.0 else g.op("Mul", [x, g.const(factor, np.float32)], scope)


def softcap(g: Graph, x: str, cap: float | None, scope: str) -> str:
    """gemma2: cap * tanh(x / cap); x when cap is None. x / cap as a Mul by fp32(1 / cap) (within an ulp of
    transformers' division): the fp16 conversion keeps every Div in fp32 and cannot feed one an fp16 tensor."""
    if cap is None:
        return x
    inner = g.op("Tanh", [g.op("Mul", [x, g.const(1.0 / cap, np.float32)], scope)], scope)
    return g.op("Mul", [inner, g.const(cap, np.float32)], scope)


def decoder_inputs(g: Graph, io: IOSpec, shape: ModelShape):
    """The contract's inputs, shared by every emitter: ids, mask, positions and the per-layer past KV."""
    ids = g.input(io.input_ids, INT64, ["batch", "sequence"])
    mask_in = g.input(io.attention_mask, INT64, ["batch", "total_sequence"])
    pos = g.input(io.position_ids, INT64, ["batch", "sequence"])
    kv_shape = ["batch", shape.num_kv_heads, "past_sequence", shape.head_dim]
    past = [(g.input(io.past_key.format(i=i), FLOAT, kv_shape), g.input(io.past_value.format(i=i), FLOAT, kv_shape))
            for i in range(shape.num_layers)]
    return ids, mask_in, pos, past


def attention_mask(g: Graph, ids: str, mask_in: str, window: int | None) -> str:
    """Causal mask combined with the padding mask: (B, 1, S, T) bool, True = may attend."""
    s = "/model/attn_mask"
    seq = g.op("Shape", [ids], s, start=1, end=2)  # (1,) = S
    total = g.op("Shape", [mask_in], s, start=1, end=2)  # (1,) = T
    past = g.op("Sub", [total, seq], s)  # (1,) = T - S
    zero = g.const(0)
    q_pos = g.op("Range", [g.op("Squeeze", [past], s), g.op("Squeeze", [total], s), g.const(1)], s)  # (S,)
    k_pos = g.op("Range", [zero, g.op("Squeeze", [total], s, name="SqueezeT"), g.const(1)], s, name="RangeK")  # (T,)
    q_col = g.op("Unsqueeze", [q_pos, g.const([1])], s)  # (S, 1)
    k_row = g.op("Unsqueeze", [k_pos, g.const([0])], s)  # (1, T)
    allowed = g.op("LessOrEqual", [k_row, q_col], s)  # (S, T): key not in the future
    if window:
        # Sliding window (HF semantics): key strictly within `window` positions of the query.
        lower = g.op("Sub", [q_col, g.const(window)], s)
        allowed = g.op("And", [allowed, g.op("Greater", [k_row, lower], s)], s)
    allowed = g.op("Unsqueeze", [allowed, g.const([0, 1])], s)  # (1, 1, S, T)
    pad = g.op("Cast", [mask_in], s, to=onnx.TensorProto.BOOL)  # (B, T)
    pad = g.op("Unsqueeze", [pad, g.const([1, 2])], s)  # (B, 1, 1, T)
    return g.op("And", [allowed, pad], s)


def longrope_positions(g: Graph, shape: ModelShape, pos: str) -> str:
    """phi3 longrope: each position's row in the [short rows 0..O; long rows 0..P] tables (torch_model.rope_tables),
    O = original_max_position_embeddings: + O for the whole call when its largest position id is >= O, as
    transformers picks a call's factors (max(position_ids) + 1 > O). Cached keys keep the rotation they got.
    Any other rope: the positions as they are."""
    switch = shape.longrope_original_max
    if switch is None:
        return pos
    s = "/model/longrope"
    top = g.op("ReduceMax", [pos], s, keepdims=0)  # (): the call's largest position, over the whole batch
    long = g.op("GreaterOrEqual", [top, g.const(switch)], s)
    return g.op("Add", [pos, g.op("Where", [long, g.const(switch), g.const(0)], s)], s)  # (B, S)


def split_local_rope(shape: ModelShape, rope):
    """gemma3 (shape.local_rope): the stacked tables' (full-attention, sliding-layer) halves; else (rope, None)."""
    if not shape.local_rope or rope is None:
        return rope, None
    n = len(rope[0]) // 2  # not context_length: the DirectML export shortens that after the tables are made
    return (rope[0][:n], rope[1][:n]), (rope[0][n:], rope[1][n:])


def rotary_tables(g: Graph, pos: str, rope: tuple[np.ndarray, np.ndarray], prefix: str = "model.rotary"
                  ) -> tuple[str, str]:
    """cos/sin for the given positions, doubled to rotary_dim: (B, 1, S, rotary_dim)."""
    s = "/model/rotary"
    out = []
    for name, table in zip(("cos", "sin"), rope):
        half = g.op("Gather", [g.weight(f"{prefix}.{name}_cache", table.astype(np.float32)), pos], s)  # (B, S, r/2)
        full = g.op("Concat", [half, half], s, axis=-1)  # (B, S, r)
        out.append(g.op("Unsqueeze", [full, g.const([1])], s))  # (B, 1, S, r)
    return out[0], out[1]


def _name(scope: str, suffix: str) -> str:
    """Initializer name from a node scope: '/model/layers.0/attn/q' -> 'model.layers.0.attn.q.weight'."""
    return scope.strip("/").replace("/", ".") + "." + suffix


def norm(g: Graph, spec: ArchSpec, shape: ModelShape, x: str, w: dict, key: str, scope: str) -> str:
    weight = g.weight(_name(scope, "weight"), w[f"{key}.weight"])
    if spec.norm == "layer":
        bias = g.weight(_name(scope, "bias"), w[f"{key}.bias"])
        return g.op("LayerNormalization", [x, weight, bias], scope, axis=-1, epsilon=shape.norm_eps)
    # RMSNorm written as Pow/ReduceMean/Add/Sqrt/Div/Mul: onnxruntime fuses this pattern into
    # SimplifiedLayerNormalization at load, and every opset we target has all of these ops.
    sq = g.op("Pow", [x, g.const(2.0, np.float32)], scope)
    var = g.reduce_mean(sq, [-1], scope)
    rms = g.op("Sqrt", [g.op("Add", [var, g.const(shape.norm_eps, np.float32)], scope)], scope)
    return g.op("Mul", [g.op("Div", [x, rms], scope), weight], scope)


def linear(g: Graph, x: str, w: dict, key: str, scope: str) -> str:
    y = g.op("MatMul", [x, g.weight(_name(scope, "weight"), w[f"{key}.weight"])], scope)
    if f"{key}.bias" in w:
        y = g.op("Add", [y, g.weight(_name(scope, "bias"), w[f"{key}.bias"])], scope)
    return y


def heads(g: Graph, x: str, n: int, d: int, scope: str) -> str:
    """(B, S, n*d) -> (B, n, S, d)"""
    x = g.op("Reshape", [x, g.const([0, 0, n, d])], scope)
    return g.op("Transpose", [x], scope, perm=[0, 2, 1, 3])


def rotate(g: Graph, x: str, cos_sin: tuple[str, str], rotary_dim: int, head_dim: int, scope: str) -> str:
    """HF rotate-half rotary on the first rotary_dim channels of (B, n, S, d)."""
    cos, sin = cos_sin
    half = rotary_dim // 2
    axis = g.const([3])
    part = x if rotary_dim == head_dim else g.op("Slice", [x, g.const([0]), g.const([rotary_dim]), axis], scope)
    x1 = g.op("Slice", [part, g.const([0]), g.const([half]), axis], scope)
    x2 = g.op("Slice", [part, g.const([half]), g.const([rotary_dim]), axis], scope)
    rotated = g.op("Concat", [g.op("Neg", [x2], scope), x1], scope, axis=-1)
    out = g.op("Add", [g.op("Mul", [part, cos], scope), g.op("Mul", [rotated, sin], scope)], scope)
    if rotary_dim == head_dim:
        return out
    rest = g.op("Slice", [x, g.const([rotary_dim]), g.const([head_dim]), axis], scope)
    return g.op("Concat", [out, rest], scope, axis=-1)


def attention(g: Graph, spec: ArchSpec, shape: ModelShape, h: str, w: dict, past: tuple[str, str],
              mask: str, cos_sin, scope: str) -> tuple[str, tuple[str, str]]:
    nh, nkv, d = shape.num_heads, shape.num_kv_heads, shape.head_dim
    qkv = linear(g, h, w, "qkv", f"{scope}/qkv")  # (B, S, (nh + 2 nkv) d)
    q, k, v = g.op("Split", [qkv, g.const([nh * d, nkv * d, nkv * d])], f"{scope}/qkv", n_out=3, axis=-1)
    if spec.qk_norm == "full_width":  # olmo2: (B, S, n*d), over every head's channels at once
        q = norm(g, spec, shape, q, w, "q_norm", f"{scope}/q_norm")
        k = norm(g, spec, shape, k, w, "k_norm", f"{scope}/k_norm")
    q, k, v = heads(g, q, nh, d, f"{scope}/q"), heads(g, k, nkv, d, f"{scope}/k"), heads(g, v, nkv, d, f"{scope}/v")
    if spec.qk_norm == "per_head":  # (B, n, S, d): the norm's last axis is each head's channels, as in HF
        q = norm(g, spec, shape, q, w, "q_norm", f"{scope}/q_norm")
        k = norm(g, spec, shape, k, w, "k_norm", f"{scope}/k_norm")
    if cos_sin is not None:
        q = rotate(g, q, cos_sin, shape.rotary_dim, d, f"{scope}/q_rotary")
        k = rotate(g, k, cos_sin, shape.rotary_dim, d, f"{scope}/k_rotary")
    k = g.op("Concat", [past[0], k], f"{scope}/present_key", axis=2)  # (B, nkv, T, d)
    v = g.op("Concat", [past[1], v], f"{scope}/present_value", axis=2)  # (B, nkv, T, d)
    present = (k, v)
    if nkv != nh:
        k, v = (repeat_kv(g, t, nh, nkv, d, f"{scope}/repeat_{n}") for t, n in ((k, "k"), (v, "v")))
    kt = g.op("Transpose", [k], scope, perm=[0, 1, 3, 2])  # (B, nh, d, T)
    scores = g.op("MatMul", [q, kt], f"{scope}/scores")  # (B, nh, S, T)
    scale = 1.0 / math.sqrt(d) if shape.attention_scale is None else shape.attention_scale  # granite's own
    scores = g.op("Mul", [scores, g.const(scale, np.float32)], f"{scope}/scores")
    scores = softcap(g, scores, shape.attn_softcap, f"{scope}/softcap")  # gemma2
    scores = g.op("Where", [mask, scores, g.const(MASK_VALUE, np.float32)], f"{scope}/scores")
    probs = g.op("Softmax", [scores], f"{scope}/scores", axis=-1)
    ctx = g.op("MatMul", [probs, v], f"{scope}/context")  # (B, nh, S, d)
    ctx = g.op("Transpose", [ctx], f"{scope}/context", perm=[0, 2, 1, 3])  # (B, S, nh, d)
    ctx = g.op("Reshape", [ctx, g.const([0, 0, nh * d])], f"{scope}/context")  # (B, S, nh d)
    return linear(g, ctx, w, "o", f"{scope}/o"), present


def repeat_kv(g: Graph, x: str, nh: int, nkv: int, d: int, scope: str) -> str:
    """(B, nkv, T, d) -> (B, nh, T, d), each kv head shared by nh / nkv query heads."""
    x = g.op("Unsqueeze", [x, g.const([2])], scope)  # (B, nkv, 1, T, d)
    x = g.op("Expand", [x, g.const([1, 1, nh // nkv, 1, 1])], scope)  # (B, nkv, rep, T, d)
    return g.op("Reshape", [x, g.const([0, nh, -1, d])], scope)


def activation(g: Graph, spec: ArchSpec, x: str, scope: str) -> str:
    if spec.activation == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x], scope)], scope)
    if spec.activation == "gelu":  # gpt_neox: 0.5 x (1 + erf(x / sqrt(2))); onnxruntime fuses it into Gelu
        erf = g.op("Erf", [g.op("Mul", [x, g.const(1.0 / math.sqrt(2.0), np.float32)], scope)], scope)
        return g.op("Mul", [g.op("Mul", [x, g.const(0.5, np.float32)], scope),
                            g.op("Add", [erf, g.const(1.0, np.float32)], scope)], scope)
    # gelu_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); onnxruntime fuses it into FastGelu.
    cube = g.op("Mul", [g.op("Pow", [x, g.const(3.0, np.float32)], scope), g.const(0.044715, np.float32)], scope)
    inner = g.op("Mul", [g.op("Add", [x, cube], scope), g.const(math.sqrt(2.0 / math.pi), np.float32)], scope)
    one_plus = g.op("Add", [g.op("Tanh", [inner], scope), g.const(1.0, np.float32)], scope)
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5, np.float32)], scope), one_plus], scope)


def mlp(g: Graph, spec: ArchSpec, shape: ModelShape, h: str, w: dict, scope: str) -> str:
    if spec.mlp == "gated":
        gu = linear(g, h, w, "gate_up", f"{scope}/gate_up")  # (B, S, 2 I)
        n = shape.intermediate_size
        gate, up = g.op("Split", [gu, g.const([n, n])], f"{scope}/gate_up", n_out=2, axis=-1)
        inner = g.op("Mul", [activation(g, spec, gate, f"{scope}/act"), up], scope)
    else:
        inner = activation(g, spec, linear(g, h, w, "up", f"{scope}/up"), f"{scope}/act")
    return linear(g, inner, w, "down", f"{scope}/down")


def lm_head(g: Graph, shape: ModelShape, x: str, weights: dict[str, np.ndarray]) -> str:
    """Gemm with transB on the (vocab, hidden) matrix: a tied head shares the embedding's storage."""
    s = "/lm_head"
    if "lm_head.weight" in weights:
        table = g.weight("lm_head.weight", weights["lm_head.weight"])
    else:
        table = "model.embed_tokens.weight"
    flat = g.op("Reshape", [x, g.const([-1, shape.hidden_size])], s)  # (B*S, hidden)
    logits = g.op("Gemm", [flat, table], s, transB=1)  # (B*S, vocab)
    # granite: logits / logits_scaling as a Mul by the fp32 reciprocal (within an ulp of transformers' division;
    # a Div would stay fp32 in the fp16 graphs, whose converter keeps Div for the norms, and break typing).
    logits = scaled(g, logits, float(np.float32(1.0) / np.float32(shape.logits_scaling)), s)
    logits = softcap(g, logits, shape.final_softcap, "/lm_head/softcap")  # gemma2
    lead = g.op("Shape", [x], s, start=0, end=2)  # (2,) = B, S
    out_shape = g.op("Concat", [lead, g.const([shape.vocab_size])], s, axis=0)
    return g.op("Reshape", [logits, out_shape], s)  # (B, S, vocab)
