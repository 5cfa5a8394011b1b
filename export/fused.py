"""The fused decoder graph: the same I/O contract as export/decoder.py, written with onnxruntime's
contrib operators (domain com.microsoft) so that each layer is a handful of kernels:

    llama family:  MatMul(qkv)[+bias] ─ GroupQueryAttention(packed qkv, rotary inside) ─ MatMul(o)
                   ─ SkipSimplifiedLayerNormalization ─ MatMul(gate|up) ─ Split ─ QuickGelu(gate)·up
                   ─ MatMul(down) ─ SkipSimplifiedLayerNormalization (the next layer's input norm) ...
    qwen3:         MatMul(qkv) ─ Split ─ per-head RMSNorm(q), RMSNorm(k) ─ GroupQueryAttention(q, k, v,
                   rotary inside) ─ ... as the llama family
    gpt2:          MatMul(qkv)+bias ─ GroupQueryAttention(packed qkv, kv_num_heads = num_heads)
                   ─ MatMul(o) ─ SkipLayerNormalization(+o bias) ─ MatMul(fc) ─ FastGelu(+fc bias)
                   ─ MatMul(proj) ─ SkipLayerNormalization(+proj bias) ...

How the contract's left-padded batches meet GQA (onnxruntime 1.32, CPU; DESIGN.md "Inside the graph"):
GQA keeps each row's cache left-aligned (seqlens_k = sum(mask) - 1, as onnxruntime-genai drives it) and
wants a prompt's real tokens first. The graph moves each row's real tokens of the chunk to the front
before the layers and back before the lm_head; every other op is per token. Then a token's cache row is
its position, so GQA's own rotary is exact, pads are never written to the cache (no attention mask at
all), and past = present = one preallocated buffer works (kv_mode "shared_buffer": nothing copied per
step). logits_to_keep (optional input, default 0 = all positions) slices the hidden states before the
lm_head.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnx_edge.export.decoder import (_name, decoder_inputs, longrope_positions, norm, scale_embedding, scaled,
                                      softcap, split_local_rope)
from onnx_edge.export.graph import FLOAT, Graph
from onnx_edge.manifest import IOSpec
from onnx_edge.models.spec import ArchSpec, ModelShape
from onnx_edge.runtime.graph_contract import LEARNED_POSITIONS

MS = "com.microsoft"


def gqa_rotary(shape: ModelShape) -> bool:
    """Whether GroupQueryAttention can apply the rotary itself (onnxruntime: cos_cache width, rotary_dim / 2,
    a multiple of 8 and at most head_dim / 2). Not for longrope (phi3): GQA indexes its caches by cache row, and
    the long/short switch is a per-call row offset (decoder.longrope_positions) that RotaryEmbedding takes."""
    half = shape.rotary_dim // 2
    return half > 0 and half % 8 == 0 and half <= shape.head_dim // 2 and shape.longrope_original_max is None


def build_fused_decoder(spec: ArchSpec, shape: ModelShape, weights: dict[str, np.ndarray],
                        rope: tuple[np.ndarray, np.ndarray] | None, opset: int = 17, producer_version: str = "",
                        rotary_in_attention: bool = True) -> tuple[onnx.ModelProto, IOSpec]:
    """The graph and the I/O it has (the manifest's `io`). `rotary_in_attention=False` (the DirectML target:
    its GQA ignores do_rotary and wants separate q/k/v) rotates q and k with RotaryEmbedding nodes before
    GroupQueryAttention."""
    if not spec.fused:
        raise ValueError(f"no fused graph for {spec.model_type}")
    io = IOSpec(kv_mode="shared_buffer", logits_to_keep="logits_to_keep")
    gqa_rope = spec.positions == "rope" and rotary_in_attention and gqa_rotary(shape)
    g = Graph(opset=opset)
    ids, mask_in, pos, past = decoder_inputs(g, io, shape)
    keep = g.optional_input(io.logits_to_keep, np.array(0, dtype=np.int64))

    seqlens, total, align, unalign = attention_inputs(g, pos, mask_in)
    ids = left_align(g, ids, align, "/model/align_ids")
    if not gqa_rope:
        pos = longrope_positions(g, shape, left_align(g, pos, align, "/model/align_positions"))
    else:
        pos = None  # GQA's rotary takes each token's position from its cache row (= position_ids)
    rope_caches = local_caches = None
    rope, local_rope = split_local_rope(shape, rope)  # gemma3: the sliding layers' own tables
    if spec.positions == "rope":
        cos, sin = rope
        rope_caches = (g.weight("model.rotary.cos_cache", np.ascontiguousarray(cos, np.float32)),
                       g.weight("model.rotary.sin_cache", np.ascontiguousarray(sin, np.float32)))
    if local_rope:
        local_caches = (g.weight("model.rotary.local.cos_cache", np.ascontiguousarray(local_rope[0], np.float32)),
                        g.weight("model.rotary.local.sin_cache", np.ascontiguousarray(local_rope[1], np.float32)))

    x = g.op("Gather", [g.weight("model.embed_tokens.weight", weights["embed_tokens.weight"]), ids],
             "/model/embed_tokens")
    x = scale_embedding(g, spec, shape, x)
    x = scaled(g, x, shape.embedding_multiplier, "/model/embed_multiplier")  # granite
    if spec.positions == "learned":
        wpe = g.weight(LEARNED_POSITIONS, weights["pos_embed.weight"])
        x = g.op("Add", [x, g.op("Gather", [wpe, pos], "/model/pos_embed")], "/model/pos_embed")

    def layer_weights(i):
        return {k.removeprefix(f"layers.{i}."): v for k, v in weights.items() if k.startswith(f"layers.{i}.")}

    def layer_rope(i):  # smollm3: a NoPE layer gets no rotary at all (GQA do_rotary=0, no RotaryEmbedding)
        caches = local_caches if shape.uses_local_rope(i) else rope_caches  # gemma3: sliding layers' base
        return (caches, gqa_rope) if shape.uses_rope(i) else (None, False)

    if spec.block == "parallel":  # gpt_neox: both sublayers read the same x, so there is no skip-norm chain
        h, presents = parallel_layers(g, spec, shape, x, weights, layer_weights, past, pos, seqlens, total,
                                      layer_rope, rotary_in_attention)
    elif spec.block == "post_norm":  # olmo2: the sublayer outputs are normed, so there is no skip-norm chain
        h, presents = post_norm_layers(g, spec, shape, x, weights, layer_weights, past, pos, seqlens, total,
                                       layer_rope, rotary_in_attention)
    else:
        # The first norm has no residual to add; the reference's decomposed form is fused by onnxruntime
        # (SimplifiedLayerNormalization / LayerNormalization) at load.
        w = layer_weights(0)
        h = norm(g, spec, shape, x, w, "attn_norm", "/model/layers.0/attn_norm")
        residual = x
        presents = []
        n = shape.num_layers
        for i in range(n):
            scope = f"/model/layers.{i}"
            caches, layer_gqa_rope = layer_rope(i)
            attn, o_bias, present = attention(g, spec, shape, h, w, past[i], pos, seqlens, total, caches,
                                              f"{scope}/attn", layer_gqa_rope, rotary_in_attention, layer=i)
            presents.append(present)
            attn, o_bias = residual_branch(g, shape, attn, o_bias, f"{scope}/attn_residual")  # granite
            attn, o_bias = sandwich_norm(g, spec, shape, attn, o_bias, w, "attn_post_norm", f"{scope}/attn_post_norm")
            h, residual = skip_norm(g, spec, shape, attn, residual, w, "mlp_norm", o_bias, f"{scope}/mlp_norm")
            out, down_bias = mlp(g, spec, shape, h, w, f"{scope}/mlp")
            out, down_bias = residual_branch(g, shape, out, down_bias, f"{scope}/mlp_residual")  # granite
            out, down_bias = sandwich_norm(g, spec, shape, out, down_bias, w, "mlp_post_norm", f"{scope}/mlp_post_norm")
            if i + 1 < n:
                w = layer_weights(i + 1)
                h, residual = skip_norm(g, spec, shape, out, residual, w, "attn_norm", down_bias,
                                        f"/model/layers.{i + 1}/attn_norm")
            else:
                final = {k.removeprefix("final_"): v for k, v in weights.items() if k.startswith("final_")}
                h, _ = skip_norm(g, spec, shape, out, residual, final, "norm", down_bias, "/model/final_norm",
                                 need_sum=False)

    logits = lm_head(g, shape, h, weights, keep, unalign)
    g.output(logits, io.logits, FLOAT, ["batch", "logits_sequence", shape.vocab_size])
    present_shape = ["batch", shape.num_kv_heads, "total_sequence", shape.head_dim]
    for i, (k, v) in enumerate(presents):
        g.output(k, io.present_key.format(i=i), FLOAT, present_shape)
        g.output(v, io.present_value.format(i=i), FLOAT, present_shape)
    return g.model(f"{shape.model_type}_decoder_fused", "onnx-edge-kit", producer_version), io


def attention_inputs(g: Graph, pos: str, mask_in: str) -> tuple[str, str, str, str]:
    """GroupQueryAttention's view of the batch, from the contract's left-padded one.

    GQA keeps each row's cache left-aligned: row b's tokens in cache rows [0, n_b), n_b = sum(mask_b),
    with seqlens_k = n_b - 1 and total_sequence_length = mask length (an upper bound), and a prompt chunk
    right-padded (its real tokens first). So the graph moves each row's real tokens of this chunk to the
    front (`align`, flat indices into the (B*S) tokens) and puts the results back afterwards (`unalign`).
    Nothing else in a layer depends on where a token sits in the chunk. In decode (S = 1) both are the
    identity. Pads need no mask at all: they are never written to the cache, so nobody attends to them."""
    s = "/model/attn_inputs"
    total = g.op("Shape", [mask_in], s, start=1, end=2)  # (1,) = T
    # B and S from position_ids (same shape as input_ids): when GQA applies the rotary itself, this is the
    # only reader of position_ids, and tools that walk the graph (onnxruntime's GPTQ) need every input read.
    batch = g.op("Shape", [pos], s, start=0, end=1, name="ShapeB")  # (1,) = B
    seq = g.op("Shape", [pos], s, start=1, end=2, name="ShapeS")  # (1,) = S
    n = g.op("ReduceSum", [mask_in, g.const([1])], s, keepdims=0)  # (B,) real tokens so far
    seqlens = g.op("Cast", [g.op("Sub", [n, g.const(1)], s)], s, to=onnx.TensorProto.INT32)  # (B,)
    total_scalar = g.op("Cast", [g.op("Squeeze", [total, g.const([0])], s)], s, name="CastT",
                        to=onnx.TensorProto.INT32)  # ()
    # Real tokens in this chunk: the chunk is the mask's last S columns.
    start = g.op("Neg", [seq], s)
    chunk = g.op("Slice", [mask_in, start, g.const([np.iinfo(np.int64).max]), g.const([1])], s)  # (B, S)
    real = g.op("ReduceSum", [chunk, g.const([1])], s, name="ReduceSumChunk", keepdims=1)  # (B, 1)
    pads = g.op("Sub", [seq, real], s, name="SubPads")  # (B, 1) leading pads of each row in this chunk
    steps = g.op("Range", [g.const(0), g.op("Squeeze", [seq, g.const([0])], s, name="SqueezeS"), g.const(1)], s)
    steps = g.op("Unsqueeze", [steps, g.const([0])], s)  # (1, S)
    s_scalar = g.op("Squeeze", [seq, g.const([0])], s, name="SqueezeS2")
    row_base = g.op("Mul", [g.op("Range", [g.const(0), g.op("Squeeze", [batch, g.const([0])], s, name="SqueezeB"),
                                            g.const(1)], s, name="RangeB"), s_scalar], s)
    row_base = g.op("Unsqueeze", [row_base, g.const([1])], s, name="UnsqueezeB")  # (B, 1) = b * S
    align = g.op("Mod", [g.op("Add", [steps, pads], s), seq], s)  # (B, S): aligned[s] = chunk[(s + pads) % S]
    unalign = g.op("Mod", [g.op("Add", [steps, real], s, name="AddReal"), seq], s, name="ModBack")  # inverse
    flat = lambda x, name: g.op("Reshape", [g.op("Add", [x, row_base], s, name=f"Add{name}"), g.const([-1])], s,
                                name=f"Reshape{name}")
    return seqlens, total_scalar, flat(align, "Align"), flat(unalign, "Unalign")


def left_align(g: Graph, x: str, index: str, scope: str) -> str:
    """(B, S) or (B, S, H) tensor with rows reordered by flat (B*S,) indices."""
    lead = g.op("Shape", [x], scope, start=0, end=2)
    tail = g.op("Shape", [x], scope, start=2, name="ShapeTail")
    flat = g.op("Reshape", [x, g.op("Concat", [g.const([-1]), tail], scope, axis=0)], scope)
    out = g.op("Gather", [flat, index], scope, axis=0)
    return g.op("Reshape", [out, g.op("Concat", [lead, tail], scope, name="ConcatOut", axis=0)], scope,
                name="ReshapeOut")


def post_norm_layers(g: Graph, spec: ArchSpec, shape: ModelShape, x: str, weights: dict, layer_weights, past,
                     pos: str, seqlens: str, total: str, layer_rope, rotary_in_attention: bool) -> tuple[str, list]:
    """olmo2's layers: x + norm(attn(x)), then x + norm(mlp(x)), and the final norm. The norms are the reference's
    decomposed RMSNorm (onnxruntime fuses it into SimplifiedLayerNormalization); returns (h, presents)."""
    presents = []
    for i in range(shape.num_layers):
        scope = f"/model/layers.{i}"
        w = layer_weights(i)
        caches, layer_gqa_rope = layer_rope(i)
        attn, o_bias, present = attention(g, spec, shape, x, w, past[i], pos, seqlens, total, caches,
                                          f"{scope}/attn", layer_gqa_rope, rotary_in_attention, layer=i)
        presents.append(present)
        attn = g.op("Add", [attn, o_bias], f"{scope}/o") if o_bias else attn
        x = g.op("Add", [x, norm(g, spec, shape, attn, w, "attn_norm", f"{scope}/attn_norm")], f"{scope}/attn_residual")
        out, down_bias = mlp(g, spec, shape, x, w, f"{scope}/mlp")
        out = g.op("Add", [out, down_bias], f"{scope}/mlp") if down_bias else out
        x = g.op("Add", [x, norm(g, spec, shape, out, w, "mlp_norm", f"{scope}/mlp_norm")], f"{scope}/mlp_residual")
    final = {k.removeprefix("final_"): v for k, v in weights.items() if k.startswith("final_")}
    return norm(g, spec, shape, x, final, "norm", "/model/final_norm"), presents


def parallel_layers(g: Graph, spec: ArchSpec, shape: ModelShape, x: str, weights: dict, layer_weights, past,
                    pos: str, seqlens: str, total: str, layer_rope, rotary_in_attention: bool) -> tuple[str, list]:
    """gpt_neox's parallel layers: x + attn(attn_norm(x)) + mlp(mlp_norm(x)), then the final norm. Two
    LayerNormalization of one x per layer (no skip norm: the residual add would come before the second);
    the o and down biases are added to their outputs. Returns (h, presents)."""
    presents = []
    for i in range(shape.num_layers):
        scope = f"/model/layers.{i}"
        w = layer_weights(i)
        caches, layer_gqa_rope = layer_rope(i)
        h = norm(g, spec, shape, x, w, "attn_norm", f"{scope}/attn_norm")
        attn, o_bias, present = attention(g, spec, shape, h, w, past[i], pos, seqlens, total, caches,
                                          f"{scope}/attn", layer_gqa_rope, rotary_in_attention, layer=i)
        presents.append(present)
        attn = g.op("Add", [attn, o_bias], f"{scope}/o") if o_bias else attn
        out, down_bias = mlp(g, spec, shape, norm(g, spec, shape, x, w, "mlp_norm", f"{scope}/mlp_norm"), w,
                             f"{scope}/mlp")
        out = g.op("Add", [out, down_bias], f"{scope}/mlp") if down_bias else out
        x = g.op("Add", [g.op("Add", [out, attn], f"{scope}/residual"), x], f"{scope}/residual")  # transformers' order
    final = {k.removeprefix("final_"): v for k, v in weights.items() if k.startswith("final_")}
    return norm(g, spec, shape, x, final, "norm", "/model/final_norm"), presents


def residual_branch(g: Graph, shape: ModelShape, x: str, bias: str, scope: str) -> tuple[str, str]:
    """granite: the sublayer output (its bias added first) times residual_multiplier, as transformers scales it
    before the residual add; the bias then no longer goes into the skip norm. Unchanged when the multiplier is 1."""
    if shape.residual_multiplier == 1.0:
        return x, bias
    x = g.op("Add", [x, bias], scope) if bias else x
    return scaled(g, x, shape.residual_multiplier, scope), ""


def sandwich_norm(g: Graph, spec: ArchSpec, shape: ModelShape, x: str, bias: str, w: dict, key: str,
                  scope: str) -> tuple[str, str]:
    """gemma2 / gemma3 (block "sandwich"): the sublayer output (its bias added first) normed before the skip
    norm adds it to the residual; the decomposed RMSNorm, which onnxruntime fuses. Unchanged otherwise."""
    if spec.block != "sandwich":
        return x, bias
    x = g.op("Add", [x, bias], scope) if bias else x
    return norm(g, spec, shape, x, w, key, scope), ""


def attention(g: Graph, spec: ArchSpec, shape: ModelShape, h: str, w: dict, past: tuple[str, str], pos: str,
              seqlens: str, total: str, rope_caches, scope: str, gqa_rope: bool,
              packed_qkv: bool, layer: int = 0):
    """Returns the attention output before the o-projection bias (the bias goes into the following
    Skip*LayerNormalization), that bias (or ""), and (present_key, present_value). `layer` picks the
    window (gemma2: per layer)."""
    nh, nkv, d = shape.num_heads, shape.num_kv_heads, shape.head_dim
    qkv = g.op("MatMul", [h, g.weight(_name(f"{scope}/qkv", "weight"), w["qkv.weight"])], f"{scope}/qkv")
    if "qkv.bias" in w:
        qkv = g.op("Add", [qkv, g.weight(_name(f"{scope}/qkv", "bias"), w["qkv.bias"])], f"{scope}/qkv")
    # GQA takes the packed (B, S, (nh + 2 nkv) d) projection as is and applies rotary itself: with each
    # row's cache left-aligned, a token's cache row is its position (cumsum(mask) - 1, the contract's
    # position_ids), which is what GQA's rotary uses.
    inputs = [qkv, "", "", past[0], past[1], seqlens, total]
    attrs = dict(num_heads=nh, kv_num_heads=nkv)
    if shape.attention_scale is not None:  # granite: its attention_multiplier replaces 1/sqrt(head_dim)
        attrs["scale"] = float(shape.attention_scale)
    if shape.attn_softcap is not None:  # gemma2: GQA caps the scaled scores, cap * tanh(x / cap), before softmax
        attrs["softcap"] = float(shape.attn_softcap)
    if gqa_rope:
        inputs += list(rope_caches)
        attrs.update(do_rotary=1, rotary_interleaved=0)
    # q/k norms (qwen3) sit between the projection and the rotary, so q, k and v go to GQA apart; GQA still
    # rotates them itself where it can (do_rotary reads separate q/k as it reads packed qkv).
    if spec.qk_norm != "none" or (not gqa_rope and (rope_caches is not None or not packed_qkv)):
        q, k, v = g.op("Split", [qkv, g.const([nh * d, nkv * d, nkv * d])], f"{scope}/qkv", n_out=3, axis=-1)
        if spec.qk_norm == "per_head":
            q = head_norm(g, spec, shape, q, w, "q_norm", nh, f"{scope}/q_norm")
            k = head_norm(g, spec, shape, k, w, "k_norm", nkv, f"{scope}/k_norm")
        elif spec.qk_norm == "full_width":  # olmo2: (B, S, n*d) normed over every head's channels at once
            q = norm(g, spec, shape, q, w, "q_norm", f"{scope}/q_norm")
            k = norm(g, spec, shape, k, w, "k_norm", f"{scope}/k_norm")
        if rope_caches is not None and not gqa_rope:
            # onnxruntime's GQA rotary needs rotary_dim / 2 to be a multiple of 8, and DirectML's ignores it;
            # otherwise (a small partial rotary such as the tiny phi3's 8 of 16, or a DirectML target)
            # RotaryEmbedding nodes rotate q and k with our positions.
            cos, sin = rope_caches
            q = g.op("RotaryEmbedding", [q, pos, cos, sin], f"{scope}/q_rotary", domain=MS,
                     num_heads=nh, rotary_embedding_dim=shape.rotary_dim, interleaved=0)
            k = g.op("RotaryEmbedding", [k, pos, cos, sin], f"{scope}/k_rotary", domain=MS,
                     num_heads=nkv, rotary_embedding_dim=shape.rotary_dim, interleaved=0)
        inputs[:3] = [q, k, v]
    if shape.window(layer):
        # HF: a query sees the `window` keys ending at itself (key > query - window). onnxruntime 1.32's CPU
        # GQA has the same meaning for local_window_size (measured: window - 1 or + 1 breaks parity).
        attrs["local_window_size"] = int(shape.window(layer))
    out, pk, pv = g.op("GroupQueryAttention", inputs,
                       f"{scope}/gqa", n_out=3, domain=MS, **attrs)
    o = g.op("MatMul", [out, g.weight(_name(f"{scope}/o", "weight"), w["o.weight"])], f"{scope}/o")
    o_bias = g.weight(_name(f"{scope}/o", "bias"), w["o.bias"]) if "o.bias" in w else ""
    return o, o_bias, (pk, pv)


def head_norm(g: Graph, spec: ArchSpec, shape: ModelShape, x: str, w: dict, key: str, n: int, scope: str) -> str:
    """Per-head RMSNorm of a (B, S, n*d) projection over each head's d channels (the reference graph's
    decomposed form: onnxruntime fuses it into SimplifiedLayerNormalization, and fp16 keeps its x² in fp32)."""
    d = shape.head_dim
    x = g.op("Reshape", [x, g.const([0, 0, n, d])], scope)  # (B, S, n, d)
    x = norm(g, spec, shape, x, w, key, scope)
    return g.op("Reshape", [x, g.const([0, 0, n * d])], scope)  # (B, S, n*d)


def skip_norm(g: Graph, spec: ArchSpec, shape: ModelShape, x: str, residual: str, w: dict, key: str, bias: str,
              scope: str, need_sum: bool = True) -> tuple[str, str | None]:
    """norm(x + bias + residual) and the new residual stream x + bias + residual, in one kernel."""
    weight = g.weight(_name(scope, "weight"), w[f"{key}.weight"])
    if spec.norm == "layer":
        beta = g.weight(_name(scope, "bias"), w[f"{key}.bias"])
        out, _, _, total = g.op("SkipLayerNormalization", [x, residual, weight, beta, bias], scope, n_out=4,
                                domain=MS, unused=(1, 2) + (() if need_sum else (3,)), epsilon=shape.norm_eps)
    else:
        out, _, _, total = g.op("SkipSimplifiedLayerNormalization", [x, residual, weight, bias], scope, n_out=4,
                                domain=MS, unused=(1, 2) + (() if need_sum else (3,)), epsilon=shape.norm_eps)
    return out, total


def mlp(g: Graph, spec: ArchSpec, shape: ModelShape, h: str, w: dict, scope: str) -> tuple[str, str]:
    """Returns the down projection before its bias, and that bias (or "") for the next skip norm."""
    if spec.mlp == "gated":
        gu = g.op("MatMul", [h, g.weight(_name(f"{scope}/gate_up", "weight"), w["gate_up.weight"])],
                  f"{scope}/gate_up")
        if "gate_up.bias" in w:
            gu = g.op("Add", [gu, g.weight(_name(f"{scope}/gate_up", "bias"), w["gate_up.bias"])], f"{scope}/gate_up")
        n = shape.intermediate_size
        gate, up = g.op("Split", [gu, g.const([n, n])], f"{scope}/gate_up", n_out=2, axis=-1)
        if spec.activation == "silu":
            act = g.op("QuickGelu", [gate], f"{scope}/act", domain=MS, alpha=1.0)  # x * sigmoid(x) = SiLU
        else:  # gelu_tanh (gemma's GeGLU): FastGelu is the tanh approximation
            act = g.op("FastGelu", [gate], f"{scope}/act", domain=MS)
        inner = g.op("Mul", [act, up], scope)
    else:
        up = g.op("MatMul", [h, g.weight(_name(f"{scope}/up", "weight"), w["up.weight"])], f"{scope}/up")
        if spec.activation not in ("gelu_tanh", "gelu"):
            raise ValueError(f"fused plain MLP supports gelu_tanh and gelu, not {spec.activation}")
        up_bias = [g.weight(_name(f"{scope}/up", "bias"), w["up.bias"])] if "up.bias" in w else []
        if spec.activation == "gelu":  # gpt_neox: the erf GELU, BiasGelu (bias + Gelu in one kernel) or Gelu
            inner = g.op("BiasGelu" if up_bias else "Gelu", [up] + up_bias, f"{scope}/act", domain=MS)
        else:
            inner = g.op("FastGelu", [up] + up_bias, f"{scope}/act", domain=MS)  # tanh approximation + bias
    down = g.op("MatMul", [inner, g.weight(_name(f"{scope}/down", "weight"), w["down.weight"])], f"{scope}/down")
    down_bias = g.weight(_name(f"{scope}/down", "bias"), w["down.bias"]) if "down.bias" in w else ""
    return down, down_bias


def lm_head(g: Graph, shape: ModelShape, x: str, weights: dict[str, np.ndarray], keep: str, unalign: str) -> str:
    """Gemm(transB) on the last `keep` positions only (all when keep = 0): the prefill of a long prompt
    needs the logits of its last token, and the lm_head is the largest matrix of a small model.
    The hidden states first go back to the caller's (left-padded) order."""
    s = "/lm_head"
    x = left_align(g, x, unalign, "/model/unalign")
    table = g.weight("lm_head.weight", weights["lm_head.weight"]) if "lm_head.weight" in weights \
        else "model.embed_tokens.weight"
    start = g.op("Neg", [g.op("Reshape", [keep, g.const([1])], s)], s)  # (1,) = -keep; -0 = 0 keeps all
    x = g.op("Slice", [x, start, g.const([np.iinfo(np.int64).max]), g.const([1])], s)  # (B, S', hidden)
    flat = g.op("Reshape", [x, g.const([-1, shape.hidden_size])], s)
    logits = g.op("Gemm", [flat, table], s, transB=1)
    # granite: logits / logits_scaling as a Mul by the fp32 reciprocal (within an ulp of transformers' division;
    # a Div would stay fp32 in the fp16 graphs, whose converter keeps Div for the norms, and break typing).
    logits = scaled(g, logits, float(np.float32(1.0) / np.float32(shape.logits_scaling)), s)
    logits = softcap(g, logits, shape.final_softcap, "/lm_head/softcap")  # gemma2
    lead = g.op("Shape", [x], s, start=0, end=2)
    out_shape = g.op("Concat", [lead, g.const([shape.vocab_size])], s, axis=0)
    return g.op("Reshape", [logits, out_shape], s)
