"""Weight-only blockwise quantization (MatMulNBits, 4 or 8 bits) with onnxruntime's quantizer for
the linear layers, and our own rewrite of the (vocab, hidden) table that the embedding Gather and the
lm_head Gemm(transB) share: onnxruntime's quantizer does not handle a Gemm head or a table shared by
two ops, so we quantize it once and point GatherBlockQuantized and MatMulNBits at the same packed data."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_edge.quantize.config import BlockFormat, QuantizeError
from onnx_edge.quantize.ort_logging import quiet
from onnx_edge.quantize.graph_edit import (
    MS_DOMAIN, add_initializer, consumers, ensure_ms_opset, initializer_map, matmul_weights, remove_initializer,
)

EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


def quantize_linear_layers(model: onnx.ModelProto, fmt: BlockFormat, keep: set[str],
                           calibration_reader=None) -> onnx.ModelProto:
    """MatMul with constant B -> MatMulNBits for every linear weight not in `keep`."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    exclude = [node.name for name, node in matmul_weights(model).items() if name in keep]
    accuracy = fmt.accuracy_level or None
    if fmt.algorithm == "rtn":
        algo = mnq.DefaultWeightOnlyQuantConfig(block_size=fmt.block_size, is_symmetric=fmt.symmetric,
                                                accuracy_level=accuracy, bits=fmt.bits,
                                                op_types_to_quantize=("MatMul",))
    elif fmt.algorithm == "hqq":
        try:
            import torch  # noqa: F401  onnxruntime's HQQ runs on torch tensors
        except ImportError:
            raise QuantizeError("--algorithm hqq needs torch (pip install 'onnx-edge-kit[export]')") from None
        algo = mnq.HQQWeightOnlyQuantConfig(block_size=fmt.block_size, bits=fmt.bits, op_types_to_quantize=("MatMul",))
    else:  # gptq
        if calibration_reader is None:
            raise QuantizeError("gptq needs calibration text")
        algo = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration_reader, block_size=fmt.block_size,
                                             op_types_to_quantize=("MatMul",))
    quantizer = mnq.MatMulNBitsQuantizer(model, bits=fmt.bits, block_size=fmt.block_size,
                                         is_symmetric=fmt.symmetric, accuracy_level=accuracy,
                                         nodes_to_exclude=exclude, algo_config=algo)
    with quiet():
        quantizer.process()
    out = quantizer.model.model
    if fmt.algorithm == "gptq" and accuracy is not None:
        for node in out.graph.node:  # onnxruntime's GPTQ path leaves accuracy_level unset
            if node.op_type == "MatMulNBits" and not any(a.name == "accuracy_level" for a in node.attribute):
                node.attribute.append(helper.make_attribute("accuracy_level", accuracy))
    return out


def block_quantize(table: np.ndarray, bits: int, block_size: int, symmetric: bool):
    """Quantize rows of a (N, K) table along K with onnxruntime's kernels.
    Returns packed (N, k_blocks, blob) uint8, scales (N, k_blocks), zero points (N, packed k_blocks)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    n, k = table.shape
    if k % block_size:
        raise QuantizeError(f"hidden size {k} is not a multiple of block size {block_size}")
    kb, per_byte = k // block_size, 8 // bits
    packed = np.zeros((n, kb, block_size // per_byte), dtype=np.uint8)
    scales = np.zeros((n, kb), dtype=np.float32)
    zero_points = np.zeros((n, (kb + per_byte - 1) // per_byte), dtype=np.uint8)
    kernel = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    kernel(packed, np.ascontiguousarray(table.T, dtype=np.float32), scales, zero_points, block_size, n, k, symmetric)
    return packed, scales, zero_points


def unpack_zero_points(zero_points: np.ndarray, bits: int, k_blocks: int) -> np.ndarray:
    """MatMulNBits packs 4-bit zero points two per byte; GatherBlockQuantized takes one per block here."""
    if bits == 8:
        return zero_points[:, :k_blocks]
    both = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(zero_points.shape[0], -1)
    return both[:, :k_blocks].astype(np.uint8)


def table_block_size(hidden: int, wanted: int) -> int:
    """The Gather view needs whole blocks per row: the largest supported block <= wanted that divides the
    hidden size (SmolLM2's 576 takes 64 when 128 is asked). The manifest records what was used."""
    for block in (128, 64, 32, 16):
        if block <= wanted and hidden % block == 0:
            return block
    raise QuantizeError(f"hidden size {hidden} is not a multiple of 16; keep the tables with --embeddings keep")


def quantize_tables(model: onnx.ModelProto, fmt: BlockFormat, keep: set[str]) -> list[str]:
    """Quantize the embedding table and the lm_head (tied or not), always round-to-nearest. Returns the names
    quantized."""
    inits = initializer_map(model)
    done = []
    for name in (EMBED, LM_HEAD):
        if name not in inits or name in keep:
            continue
        table = numpy_helper.to_array(inits[name])  # (vocab, hidden) = (N, K)
        users = consumers(model, name)
        if any(u.op_type not in ("Gather", "Gemm") for u in users):
            continue
        n, k = table.shape
        block = table_block_size(k, fmt.block_size)
        packed, scales, zp = block_quantize(table, fmt.bits, block, fmt.symmetric)
        kb = k // block
        data = add_initializer(model, packed, f"{name}.q{fmt.bits}")  # shared by Gather and Gemm users
        new_nodes = {}
        for user in users:
            if user.op_type == "Gather":
                inputs = [data, user.input[1], add_initializer(model, scales.reshape(n, kb, 1), f"{name}.gather_scales")]
                if not fmt.symmetric:
                    inputs.append(add_initializer(model, unpack_zero_points(zp, fmt.bits, kb).reshape(n, kb, 1),
                                                  f"{name}.gather_zero_points"))
                gathered = user.output[0] + "/blocks"  # (B, S, k_blocks, block)
                new_nodes[user.name] = [
                    helper.make_node("GatherBlockQuantized", inputs, [gathered], name=user.name + "/q",
                                     domain=MS_DOMAIN, gather_axis=0, quantize_axis=2, block_size=block,
                                     bits=fmt.bits),
                    helper.make_node("Reshape", [gathered, add_initializer(model, np.array([0, 0, k], np.int64),
                                                                           f"{name}.gather_shape")],
                                     [user.output[0]], name=user.name + "/q_reshape"),
                ]
            else:  # Gemm(A, table, transB=1): MatMulNBits takes B as (N, K) blocks already
                if not any(a.name == "transB" and a.i == 1 for a in user.attribute):
                    raise QuantizeError(f"{user.name}: expected Gemm with transB=1 on {name}")
                inputs = [user.input[0], data, add_initializer(model, scales, f"{name}.scales")]
                if not fmt.symmetric:
                    inputs.append(add_initializer(model, zp, f"{name}.zero_points"))
                attrs = dict(K=k, N=n, bits=fmt.bits, block_size=block)
                if fmt.accuracy_level:
                    attrs["accuracy_level"] = fmt.accuracy_level
                new_nodes[user.name] = [helper.make_node("MatMulNBits", inputs, list(user.output), name=user.name + "/q",
                                                        domain=MS_DOMAIN, **attrs)]
                if len(user.input) > 2 and user.input[2]:
                    raise QuantizeError(f"{user.name}: a Gemm bias on the lm_head is not supported")
        nodes = []
        for node in model.graph.node:
            nodes.extend(new_nodes.get(node.name, [node]))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        remove_initializer(model, name)
        done.append(name)
    if done:
        ensure_ms_opset(model)
    return done
