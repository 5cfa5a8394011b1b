"""Every quantize option in one frozen, validated dataclass. Defaults are resolved and every value is checked
once, at construction (the CLI builds one from its flags); the source folder's own defaults (its provider) are
applied by `for_source`, which returns a new config. Every field is written into the manifest so the runtime
and later readers never guess from file names."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass

from onnx_edge.errors import EdgeError
from onnx_edge.targets import TARGETS

PRECISIONS = ("int8", "int4", "fp16")
SCHEMES = {"int8": ("weight_only", "dynamic", "static"), "int4": ("weight_only",), "fp16": ("cast",)}
ALGORITHMS = ("rtn", "hqq", "gptq")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
BLOCK_SIZES = (16, 32, 64, 128)
ACCURACY_LEVELS = (0, 1, 4)
EMBEDDINGS = ("quantize", "keep")
# Activation x weight integer types of the dynamic / static int8 schemes. u8s8 (onnxruntime's usual choice)
# adds u8*s8 product pairs into 16 bits on AVX2 and non-VNNI AVX-512 (vpmaddubsw) and saturates there, so its
# quality depends on the CPU; s8s8 runs the same kernels. u8u8 (a widening kernel) and u8s7 (7-bit weights)
# cannot saturate; u8u8 also keeps the full weight range. Measured: docs/QUANTIZATION.md, "int8 and the CPU".
CPU_DEPENDENT_FORMATS = ("u8s8", "s8s8")
INT8_FORMATS = {"dynamic": ("u8u8", "u8s7", "u8s8"), "static": ("u8u8", "u8s7", "u8s8", "s8s8")}
MIN_CONTEXT = 4  # evaluate.quality.token_windows' smallest window


class QuantizeError(EdgeError):
    """Invalid quantization options or input folder."""


@dataclass(frozen=True)
class BlockFormat:
    """How one weight-only pass writes its weights (MatMulNBits, GatherBlockQuantized)."""

    bits: int
    block_size: int
    symmetric: bool
    accuracy_level: int  # 0: the op's default (fp32 compute)
    algorithm: str = "rtn"


@dataclass(frozen=True)
class QuantConfig:
    precision: str = "int4"
    scheme: str | None = None  # default: weight_only for int8/int4, cast for fp16
    block_size: int = 32
    symmetric: bool = False
    # MatMulNBits compute: 0 unset (fp32), 1 fp32, 4 int8 activations. Default: the target's (4 on CPU, where
    # onnxruntime's fp32 paths are slow: 8-bit weights run ~20x slower than fp32 at level 0; GPUs 0).
    accuracy_level: int | None = None
    algorithm: str = "rtn"
    calibration: str = "minmax"  # static int8 only
    int8_format: str | None = None  # dynamic / static int8 only; default: the first of INT8_FORMATS
    keep: tuple[str, ...] = ()  # glob patterns of weights kept at keep_precision
    keep_precision: str | None = None  # what kept weights become: "int8" (default under int4) or "fp32"
    embeddings: str | None = None  # "quantize" (embedding + lm_head) or "keep"; default: quantize where the
    # target has GatherBlockQuantized (not DirectML)
    max_kl: float | None = None  # automatic mixed precision budget
    provider: str | None = None  # the target; None: the source folder's, resolved by for_source
    text_file: str | None = None  # calibration (first half) and evaluation (second half) text
    context: int = 256  # evaluation and calibration window length (tokens)
    eval_windows: int = 8
    calib_windows: int = 4
    report: bool = True  # measure the quality report

    def __post_init__(self) -> None:
        # The only place a field is set after __init__: defaults resolved while the config is being built.
        def resolve(name: str, value) -> None:
            object.__setattr__(self, name, value)

        resolve("keep", tuple(self.keep))
        if self.text_file is not None:
            resolve("text_file", os.fspath(self.text_file))
        if self.precision not in PRECISIONS:
            raise QuantizeError(f"--precision must be one of {_choices(PRECISIONS)}, got {self.precision!r}")
        resolve("scheme", self.scheme or SCHEMES[self.precision][0])
        if self.scheme not in SCHEMES[self.precision]:
            raise QuantizeError(f"--scheme {self.scheme} does not apply to {self.precision} "
                                f"(choose {', '.join(SCHEMES[self.precision])})")
        if self.block_size not in BLOCK_SIZES:
            raise QuantizeError(f"--block-size must be one of {_choices(BLOCK_SIZES)}, got {self.block_size}")
        if self.scheme != "weight_only" and self.accuracy_level is None:
            resolve("accuracy_level", 0)
        if self.accuracy_level is not None and self.accuracy_level not in ACCURACY_LEVELS:
            raise QuantizeError(f"--accuracy-level must be one of {_choices(ACCURACY_LEVELS)}, "
                                f"got {self.accuracy_level}")
        if self.algorithm not in ALGORITHMS:
            raise QuantizeError(f"--algorithm must be one of {_choices(ALGORITHMS)}, got {self.algorithm!r}")
        if self.algorithm != "rtn" and self.scheme != "weight_only":
            raise QuantizeError(f"--algorithm {self.algorithm} applies to weight-only schemes only")
        if self.algorithm == "gptq" and self.precision != "int4":
            raise QuantizeError("--algorithm gptq is available for int4 only (onnxruntime's GPTQ packs 4-bit weights)")
        if self.calibration not in CALIBRATION_METHODS:
            raise QuantizeError(f"--calibration must be one of {_choices(CALIBRATION_METHODS)}, "
                                f"got {self.calibration!r}")
        if self.scheme in INT8_FORMATS:
            resolve("int8_format", self.int8_format or INT8_FORMATS[self.scheme][0])
            if self.int8_format not in INT8_FORMATS[self.scheme]:
                raise QuantizeError(f"--int8-format {self.int8_format} does not apply to int8 {self.scheme} "
                                    f"(choose {', '.join(INT8_FORMATS[self.scheme])})")
        elif self.int8_format is not None:
            raise QuantizeError("--int8-format applies to the int8 dynamic and static schemes only")
        if self.embeddings is not None and self.embeddings not in EMBEDDINGS:
            raise QuantizeError(f"--embeddings must be one of {_choices(EMBEDDINGS)}, got {self.embeddings!r}")
        if self.max_kl is not None and not (self.max_kl > 0):
            raise QuantizeError(f"--max-kl must be a positive number, got {self.max_kl}")
        if self.max_kl is not None and self.precision == "fp16":
            raise QuantizeError("--max-kl applies to int8/int4 only")
        if self.max_kl is not None and self.scheme != "weight_only":
            raise QuantizeError("--max-kl works with weight-only schemes")
        if not all(isinstance(p, str) for p in self.keep):
            raise QuantizeError("--keep takes glob patterns of weight names")
        resolve("keep_precision", self.keep_precision or ("int8" if self.precision == "int4" else "fp32"))
        if self.keep_precision not in ("int8", "fp32") or (self.keep_precision == "int8" and self.precision != "int4"):
            raise QuantizeError("--keep-precision can be int8 (under int4) or fp32")
        if self.context < MIN_CONTEXT:
            raise QuantizeError(f"--context must be at least {MIN_CONTEXT} tokens, got {self.context}")
        if self.eval_windows < 1:
            raise QuantizeError(f"--eval-windows must be at least 1, got {self.eval_windows}")
        if self.calib_windows < 1:
            raise QuantizeError(f"calib_windows must be at least 1, got {self.calib_windows}")
        if self.provider is not None:
            self._resolve_target(resolve)

    def _resolve_target(self, resolve) -> None:
        """The defaults and limits that depend on the target provider."""
        if self.provider not in TARGETS:
            raise QuantizeError(f"--provider must be one of {_choices(TARGETS)}, got {self.provider!r}")
        target = TARGETS[self.provider]
        if self.accuracy_level is None:
            resolve("accuracy_level", target.accuracy_level)
        resolve("embeddings", self.embeddings or ("quantize" if target.quantized_tables else "keep"))
        if self.embeddings == "quantize" and not target.quantized_tables and self.precision != "fp16":
            raise QuantizeError(f"provider '{self.provider}' has no GatherBlockQuantized kernel: its embedding table "
                                f"stays fp16 (--embeddings keep)")
        if (self.precision, self.scheme) not in target.precisions:
            able = sorted(f"{p} {s}" for p, s in target.precisions)
            raise QuantizeError(f"{self.precision} {self.scheme} is not supported on provider '{self.provider}' "
                                f"(it runs: {', '.join(able)})")

    def for_source(self, manifest) -> QuantConfig:
        """This config for a source folder: the target defaults to the provider the folder was exported for."""
        return self if self.provider is not None else dataclasses.replace(self, provider=manifest.provider)

    @property
    def fp16_base(self) -> bool:
        """Weight-only GPU variants: quantized weights under fp16 activations (and fp16 tables)."""
        return self.precision == "fp16" or TARGETS[self.provider].activations == "fp16"

    @property
    def bits(self) -> int:
        return {"int4": 4, "int8": 8, "fp16": 16}[self.precision]

    @property
    def blocks(self) -> BlockFormat:
        """The weight-only format of the main pass."""
        return BlockFormat(self.bits, self.block_size, self.symmetric, self.accuracy_level, self.algorithm)

    @property
    def cpu_dependent(self) -> bool:
        """u8s8 / s8s8 integer GEMMs saturate on AVX2 and non-VNNI AVX-512: quality there differs from the report."""
        return self.int8_format in CPU_DEPENDENT_FORMATS

    def to_dict(self) -> dict:
        return asdict(self)


def _choices(values) -> str:
    return "/".join(map(str, values))
