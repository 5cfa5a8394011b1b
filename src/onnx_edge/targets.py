"""What each execution provider a folder can target needs from its graph and its session, as data.

A folder's manifest names its target (`provider`); export shapes the graph for it, quantize picks the
precisions and table formats it can run, and the runtime picks session options and where the KV cache
lives. Sources: onnxruntime's docs/OperatorKernels.md (kernels per provider) and the DirectML and CUDA
operator sources (DESIGN.md "Providers" cites them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderTarget:
    name: str
    # (precision, scheme) pairs quantize may write for this target; fp32 is what export writes.
    precisions: frozenset[tuple[str, str]]
    # GroupQueryAttention applies the rotary itself (do_rotary) and takes packed QKV. DirectML's GQA ignores
    # do_rotary and needs separate q/k/v, so its graph rotates with RotaryEmbedding first.
    rotary_in_attention: bool
    # GatherBlockQuantized (the int4/int8 embedding table shared with the lm_head) has a kernel here.
    quantized_tables: bool
    # The float type under weight-only quantized weights: GPU variants run on an fp16 base (CUDA's
    # GroupQueryAttention has no fp32 kernel).
    activations: str
    # Highest ai.onnx opset the provider registers kernels for (DirectML stops at 21).
    max_opset: int
    # Where the runtime keeps the KV cache and logits between steps: onnxruntime's OrtValue device name.
    device: str
    # A multi-token chunk on top of an existing cache (prefix reuse): DirectML's GQA treats every prompt as
    # starting at position 0 (seqlens_k is read for single-token steps only).
    prefix_reuse: bool
    # Session options the provider requires (DirectML: no memory patterns, sequential execution).
    mem_pattern: bool
    accuracy_level: int  # MatMulNBits compute default (CPU: int8 activations, 4; GPUs: 0)
    # com.microsoft operators with a kernel on this provider, among those our graphs can contain (None: all).
    contrib_ops: frozenset[str] | None = None


TARGETS = {
    "cpu": ProviderTarget(
        name="cpu",
        precisions=frozenset({("int8", "weight_only"), ("int8", "dynamic"), ("int8", "static"),
                              ("int4", "weight_only")}),
        rotary_in_attention=True, quantized_tables=True, activations="fp32", max_opset=21,
        device="cpu", prefix_reuse=True, mem_pattern=True, accuracy_level=4),
    "cuda": ProviderTarget(
        name="cuda",
        precisions=frozenset({("int8", "weight_only"), ("int4", "weight_only"), ("fp16", "cast")}),
        rotary_in_attention=True, quantized_tables=True, activations="fp16", max_opset=21,
        device="cuda", prefix_reuse=True, mem_pattern=True, accuracy_level=0,
        contrib_ops=frozenset({"GroupQueryAttention", "RotaryEmbedding", "SkipSimplifiedLayerNormalization",
                               "SkipLayerNormalization", "MatMulNBits", "GatherBlockQuantized", "QuickGelu",
                               "FastGelu"})),
    "dml": ProviderTarget(
        name="dml",
        precisions=frozenset({("int4", "weight_only"), ("fp16", "cast")}),
        rotary_in_attention=False, quantized_tables=False, activations="fp16", max_opset=21,
        device="dml", prefix_reuse=False, mem_pattern=False, accuracy_level=0,
        contrib_ops=frozenset({"GroupQueryAttention", "RotaryEmbedding", "SkipSimplifiedLayerNormalization",
                               "SkipLayerNormalization", "MatMulNBits", "QuickGelu", "FastGelu"})),
}
TARGET_NAMES = tuple(TARGETS)


def unsupported_ops(graph_ops: set[tuple[str, str]], name: str) -> list[str]:
    """The com.microsoft operators of a graph ((domain, op_type) pairs) that provider `name` has no kernel for;
    onnxruntime would run them on the CPU with a copy each way."""
    allowed = TARGETS[name].contrib_ops
    if allowed is None:
        return []
    return sorted(op for domain, op in graph_ops if domain == "com.microsoft" and op not in allowed)

