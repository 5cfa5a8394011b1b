"""What the CPU's instruction set means for onnxruntime's int8 kernels, read through numpy's runtime
CPU dispatch (CPUID on x86), so it is right under emulation too, where /proc/cpuinfo shows the host."""

from __future__ import annotations

import platform
from functools import lru_cache

# MLAS picks its int8 GEMM kernels by these features, best first. "saturating" kernels add u8*s8 product
# pairs into 16 bits (vpmaddubsw): u8s8 int8 can lose accuracy there. numpy does not report AVX-VNNI (the
# VEX form on AVX2-only cores), so such CPUs read as avx2: the cautious side.
INT8_KERNELS = (
    ("avx512-vnni", ("AVX512VNNI",), False),
    ("avx512bw", ("AVX512BW",), True),
    ("avx2", ("AVX2",), True),
    ("neon-dotprod", ("ASIMDDP",), False),
    ("neon", ("ASIMD",), False),
)
REPORTED = ("SSE41", "AVX", "AVX2", "FMA3", "F16C", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512_SPR", "AVX512FP16",
            "AVX512BF16", "ASIMD", "ASIMDDP", "ASIMDHP", "SVE")


@lru_cache(maxsize=1)
def cpu_isa() -> dict:
    """{"int8_kernel": name, "saturating_u8s8": bool, "features": [...], "machine": ...}: stored with every
    quality report, so a later reader on another CPU can tell whether int8 numbers may differ."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    have = sorted(name for name in REPORTED if features.get(name))
    kernel, saturating = "generic", False
    for name, needs, sat in INT8_KERNELS:
        if all(features.get(f) for f in needs):
            kernel, saturating = name, sat
            break
    return {"int8_kernel": kernel, "saturating_u8s8": saturating, "features": have, "machine": platform.machine()}


def measured_on() -> dict:
    """cpu_isa() plus the onnxruntime version: what a quality report's numbers belong to."""
    import onnxruntime

    return dict(cpu_isa(), onnxruntime=onnxruntime.__version__)
