"""The execution providers a folder can target (our names, onnxruntime's, the extra that installs each) and what
each needs from its graph and its session, as data.

A folder's manifest names its target (`provider`); export shapes the graph for it, quantize picks the
precisions and table formats it can run, and the runtime picks session options and where the KV cache
lives. Sources: onnxruntime's docs/OperatorKernels.md (kernels per provider) and the DirectML and CUDA
operator sources (DESIGN.md "Providers" cites them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderTarget:
    name: str  # ours, as manifests and --provider say it
    ort_name: str  # onnxruntime's execution provider
    extra: str  # the pip extra that installs the onnxruntime build with this provider
    # `export --precision gguf` can target it: that graph keeps a GGUF's own blocks as MatMulNBits under fp32
    # activations, with GatherBlockQuantized tables.
    gguf_export: bool
    # (precision, scheme) pairs quantize may write for this target; export writes fp32.
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
    install_note: str = ""  # why an install may lack the provider, said before the install hint


TARGETS = {
    "cpu": ProviderTarget(
        name="cpu", ort_name="CPUExecutionProvider", extra="onnx-edge-kit[cpu]",
        gguf_export=True,
        precisions=frozenset({("int8", "weight_only"), ("int8", "dynamic"), ("int8", "static"),
                              ("int4", "weight_only")}),
        rotary_in_attention=True, quantized_tables=True, activations="fp32", max_opset=21,
        device="cpu", prefix_reuse=True, mem_pattern=True, accuracy_level=4),
    "cuda": ProviderTarget(
        name="cuda", ort_name="CUDAExecutionProvider", extra="onnx-edge-kit[cuda]",
        gguf_export=False,
        precisions=frozenset({("int8", "weight_only"), ("int4", "weight_only"), ("fp16", "cast")}),
        rotary_in_attention=True, quantized_tables=True, activations="fp16", max_opset=21,
        device="cuda", prefix_reuse=True, mem_pattern=True, accuracy_level=0,
        contrib_ops=frozenset({"GroupQueryAttention", "RotaryEmbedding", "SkipSimplifiedLayerNormalization",
                               "SkipLayerNormalization", "MatMulNBits", "GatherBlockQuantized", "QuickGelu",
                               "FastGelu"})),
    "dml": ProviderTarget(
        name="dml", ort_name="DmlExecutionProvider", extra="onnx-edge-kit[directml]",
        gguf_export=False, install_note="DirectML runs on Windows only",
        precisions=frozenset({("int4", "weight_only"), ("fp16", "cast")}),
        rotary_in_attention=False, quantized_tables=False, activations="fp16", max_opset=21,
        device="dml", prefix_reuse=False, mem_pattern=False, accuracy_level=0,
        contrib_ops=frozenset({"GroupQueryAttention", "RotaryEmbedding", "SkipSimplifiedLayerNormalization",
                               "SkipLayerNormalization", "MatMulNBits", "QuickGelu", "FastGelu"})),
}
TARGET_NAMES = tuple(TARGETS)
# What a run may ask for: a target, or auto (the folder's own target).
PROVIDER_CHOICES = ("auto", *TARGET_NAMES)
# auto without a folder target takes the first available: accelerators (in TARGETS order) before the CPU.
AUTO_ORDER = tuple(sorted(TARGET_NAMES, key=lambda name: name == "cpu"))


def unsupported_ops(graph_ops: set[tuple[str, str]], name: str) -> list[str]:
    """The com.microsoft operators of a graph ((domain, op_type) pairs) that provider `name` has no kernel for;
    onnxruntime would run them on the CPU with a copy each way."""
    allowed = TARGETS[name].contrib_ops
    if allowed is None:
        return []
    return sorted(op for domain, op in graph_ops if domain == "com.microsoft" and op not in allowed)

