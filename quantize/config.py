"""Quantization options as one validated dataclass; every field is written into the manifest so the
runtime and later readers never guess from file names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from onnx_edge.errors import EdgeError
from onnx_edge.targets import TARGETS

PRECISIONS = ("int8", "int4", "fp16")
SCHEMES = {"int8": ("weight_only", "dynamic", "static"), "int4": ("weight_only",), "fp16": ("cast",)}
ALGORITHMS = ("rtn", "hqq", "gptq")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
BLOCK_SIZES = (16, 32, 64, 128)
ACCURACY_LEVELS = (0, 1, 4)
# Activation x weight integer types of the dynamic / static int8 schemes. u8s8 (onnxruntime's usual choice)
# adds u8*s8 product pairs into 16 bits on AVX2 and non-VNNI AVX-512 (vpmaddubsw) and saturates there, so its
# quality depends on the CPU; s8s8 runs the same kernels. u8u8 (a widening kernel) and u8s7 (7-bit weights)
# cannot saturate; u8u8 also keeps the full weight range. Measured: docs/QUANTIZATION.md, "int8 and the CPU".
CPU_DEPENDENT_FORMATS = ("u8s8", "s8s8")
INT8_FORMATS = {"dynamic": ("u8u8", "u8s7", "u8s8"), "static": ("u8u8", "u8s7", "u8s8", "s8s8")}


class QuantizeError(EdgeError):
    """Invalid quantization options or input folder."""


@dataclass
class QuantConfig:
    precision: str
    scheme: str | None = None  # default: weight_only for int8/int4, cast for fp16
    block_size: int = 32
    symmetric: bool = False
    # MatMulNBits compute: 0 unset (fp32), 1 fp32, 4 int8 activations. Default: the target's (4 on CPU, where
    # onnxruntime's fp32 paths are slow: 8-bit weights run ~20x slower than fp32 at level 0; GPUs 0).
    accuracy_level: int | None = None
    algorithm: str = "rtn"
    calibration: str = "minmax"  # static int8 only
    int8_format: str | None = None  # dynamic / static int8 only; default: the first of INT8_FORMATS
    keep: tuple[str, ...] = ()  # glob patterns of weights left at fp32
    embeddings: str | None = None  # "quantize" (embedding + lm_head) or "keep"; default: quantize where the
    # target has GatherBlockQuantized (not DirectML)
    max_kl: float | None = None  # automatic mixed precision budget
    keep_precision: str | None = None  # what kept weights become: "int8" (default under int4) or "fp32"
    provider: str = "cpu"
    auto_keep: list[str] = field(default_factory=list)  # filled by the sensitivity search

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise QuantizeError(f"unknown precision '{self.precision}' (choose {', '.join(PRECISIONS)})")
        self.scheme = self.scheme or SCHEMES[self.precision][0]
        if self.scheme not in SCHEMES[self.precision]:
            raise QuantizeError(f"scheme '{self.scheme}' does not apply to {self.precision} "
                                f"(choose {', '.join(SCHEMES[self.precision])})")
        if self.block_size not in BLOCK_SIZES:
            raise QuantizeError(f"block size {self.block_size} is not supported (choose {', '.join(map(str, BLOCK_SIZES))})")
        if self.provider not in TARGETS:
            raise QuantizeError(f"unknown provider '{self.provider}' (choose {', '.join(TARGETS)})")
        if self.accuracy_level is None:
            self.accuracy_level = TARGETS[self.provider].accuracy_level if self.scheme == "weight_only" else 0
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise QuantizeError(f"accuracy level {self.accuracy_level} is not supported (choose 0, 1 or 4)")
        if self.algorithm not in ALGORITHMS:
            raise QuantizeError(f"unknown algorithm '{self.algorithm}' (choose {', '.join(ALGORITHMS)})")
        if self.algorithm != "rtn" and self.scheme != "weight_only":
            raise QuantizeError(f"algorithm '{self.algorithm}' applies to weight-only schemes only")
        if self.algorithm == "gptq" and self.precision != "int4":
            raise QuantizeError("gptq is available for int4 only (onnxruntime's GPTQ packs 4-bit weights)")
        if self.calibration not in CALIBRATION_METHODS:
            raise QuantizeError(f"unknown calibration method '{self.calibration}' (choose {', '.join(CALIBRATION_METHODS)})")
        if self.scheme in INT8_FORMATS:
            self.int8_format = self.int8_format or INT8_FORMATS[self.scheme][0]
            if self.int8_format not in INT8_FORMATS[self.scheme]:
                raise QuantizeError(f"--int8-format {self.int8_format} does not apply to int8 {self.scheme} "
                                    f"(choose {', '.join(INT8_FORMATS[self.scheme])})")
        elif self.int8_format is not None:
            raise QuantizeError("--int8-format applies to the int8 dynamic and static schemes only")
        tables = TARGETS[self.provider].quantized_tables
        self.embeddings = self.embeddings or ("quantize" if tables else "keep")
        if self.embeddings not in ("quantize", "keep"):
            raise QuantizeError("embeddings must be 'quantize' or 'keep'")
        if self.embeddings == "quantize" and not tables and self.precision != "fp16":
            raise QuantizeError(f"provider '{self.provider}' has no GatherBlockQuantized kernel: its embedding table "
                                f"stays fp16 (--embeddings keep)")
        if self.max_kl is not None and not (self.max_kl > 0):
            raise QuantizeError(f"--max-kl must be a positive number, got {self.max_kl}")
        if self.max_kl is not None and self.precision == "fp16":
            raise QuantizeError("--max-kl applies to int8/int4 only")
        if (self.precision, self.scheme) not in TARGETS[self.provider].precisions:
            able = sorted(f"{p} {s}" for p, s in TARGETS[self.provider].precisions)
            raise QuantizeError(f"{self.precision} {self.scheme} is not supported on provider '{self.provider}' "
                                f"(it runs: {', '.join(able)})")
        self.keep = tuple(self.keep)
        if self.keep_precision is None:
            self.keep_precision = "int8" if self.precision == "int4" else "fp32"
        if self.keep_precision not in ("int8", "fp32") or (self.keep_precision == "int8" and self.precision != "int4"):
            raise QuantizeError("kept weights can be int8 (under int4) or fp32")

    @property
    def fp16_base(self) -> bool:
        """Weight-only GPU variants: quantized weights under fp16 activations (and fp16 tables)."""
        return self.precision == "fp16" or TARGETS[self.provider].activations == "fp16"

    @property
    def bits(self) -> int:
        return {"int4": 4, "int8": 8, "fp16": 16}[self.precision]

    def to_dict(self) -> dict:
        return asdict(self)
