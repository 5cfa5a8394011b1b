"""int8 with quantized activations: dynamic (scales computed per call) and static QDQ (scales from
calibration text), both from onnxruntime.quantization, on the linear layers only (MatMul with a
constant weight): attention's activation-by-activation MatMuls stay fp32."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from onnx_edge.quantize.config import QuantConfig
from onnx_edge.quantize.graph_edit import matmul_weights
from onnx_edge.quantize.ort_logging import quiet

HIDDEN_GEMM = "GemmHiddenFromQuantizer"


def quantize_int8(model: onnx.ModelProto, cfg: QuantConfig, keep: set[str], reader=None) -> onnx.ModelProto:
    weights = matmul_weights(model)
    include = [node.name for name, node in weights.items() if name not in keep]
    exclude = [node.name for name, node in weights.items() if name in keep]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        # onnxruntime's quantizer rewrites every Gemm into MatMul with a transposed weight copy; a kept
        # lm_head Gemm shares its table with the embedding, so hide it from the quantizer.
        for node in model.graph.node:
            if node.op_type == "Gemm":
                node.op_type = HIDDEN_GEMM
        onnx.save_model(model, src, save_as_external_data=True, location="in.onnx.data")
        common = dict(op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_quantize=include,
                      nodes_to_exclude=exclude, use_external_data_format=True,
                      # Contrib ops (fused attention) stop onnx's type inference; our activations are all fp32.
                      extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
        with quiet():
            _run(cfg, src, dst, reader, common)
        out = onnx.load(dst)
    for node in out.graph.node:
        if node.op_type == HIDDEN_GEMM:
            node.op_type = "Gemm"
    return out


def _run(cfg: QuantConfig, src: Path, dst: Path, reader, common: dict) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    activation, weight = {"u8s8": (QuantType.QUInt8, QuantType.QInt8), "u8s7": (QuantType.QUInt8, QuantType.QInt8),
                          "u8u8": (QuantType.QUInt8, QuantType.QUInt8), "s8s8": (QuantType.QInt8, QuantType.QInt8)}[cfg.int8_format]
    common["reduce_range"] = cfg.int8_format == "u8s7"  # 7-bit weights: u8*s7 pair sums fit in 16 bits
    if cfg.scheme == "dynamic":  # DynamicQuantizeLinear makes u8 activations
        quantize_dynamic(src, dst, weight_type=weight, **common)
        return
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[cfg.calibration]
    quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, activation_type=activation,
                    weight_type=weight, calibrate_method=method, **common)
