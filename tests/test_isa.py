"""int8 quality must not depend on the CPU's instruction set. The tiny llama's variants are scored natively
and under `qemu-x86_64 -cpu Haswell` (an AVX2 CPU without AVX-512 or VNNI, where onnxruntime's u8s8 kernels
add product pairs into saturating 16-bit sums): the default formats score the same on both, and u8s8
(onnxruntime's usual format) is shown to differ where the emulated CPU saturates, so the check has teeth.

qemu-user is a Debian package; .ci/run installs it and sets ONNX_EDGE_REQUIRE_QEMU=1 so CI never skips this."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_edge.quantize import QuantConfig, quantize
from onnx_edge.evaluate.cpu import cpu_isa

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "int8_isa.py"
QEMU = ["qemu-x86_64", "-cpu", "Haswell"]
# The formats quantize uses by default, and the one that saturates on AVX2.
STABLE = {"dynamic": dict(precision="int8", scheme="dynamic"), "static": dict(precision="int8", scheme="static"),
          "int8-acc4": dict(precision="int8"), "int4-acc4": dict(precision="int4", accuracy_level=4)}
SATURATING = {"dynamic-u8s8": dict(precision="int8", scheme="dynamic", int8_format="u8s8")}
WINDOWS = dict(context=64, windows=4)


def _have_emulator() -> bool:
    if shutil.which(QEMU[0]) is None:
        if os.environ.get("ONNX_EDGE_REQUIRE_QEMU"):
            pytest.fail("ONNX_EDGE_REQUIRE_QEMU is set but qemu-x86_64 is missing (apt-get install qemu-user)")
        return False
    return True


def _score(prefix: list[str], fp32: Path, workdir: Path, names: list[str]) -> dict:
    cmd = prefix + [sys.executable, str(SCRIPT), "--score", str(fp32), str(workdir), "--variants", ",".join(names),
                    "--context", str(WINDOWS["context"]), "--windows", str(WINDOWS["windows"])]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scored(exported_models, tmp_path_factory):
    if not _have_emulator():
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user): no AVX2 CPU to compare against")
    fp32 = exported_models("llama")
    workdir = tmp_path_factory.mktemp("isa")
    variants = {**STABLE, **SATURATING}
    for name, kwargs in variants.items():
        quantize(fp32, workdir / name, QuantConfig(**kwargs, context=WINDOWS["context"], eval_windows=WINDOWS["windows"],
                 report=False))
    names = list(variants)
    return _score([], fp32, workdir, names), _score(QEMU, fp32, workdir, names)


@pytest.mark.slow
def test_emulated_cpu_is_avx2_without_vnni(scored):
    _, avx2 = scored
    assert avx2["isa"]["int8_kernel"] == "avx2" and avx2["isa"]["saturating_u8s8"], avx2["isa"]
    assert "AVX512F" not in avx2["isa"]["features"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STABLE))
def test_default_formats_score_the_same_on_avx2_and_avx512(scored, name):
    native, avx2 = (s["variants"][name] for s in scored)
    # Kernels may sum in another order: allow rounding, not saturation (which moved KL 12x on this model).
    assert avx2["kl"] == pytest.approx(native["kl"], rel=0.02, abs=1e-5), (
        f"{name}: KL {native['kl']:.5f} with {scored[0]['isa']['int8_kernel']} kernels but {avx2['kl']:.5f} "
        f"with AVX2 kernels: this format's quality depends on the CPU's instruction set")
    assert abs(avx2["top1"] - native["top1"]) <= 0.01, (native, avx2)


@pytest.mark.slow
def test_u8s8_saturates_on_avx2_only(scored):
    """The failure the defaults avoid: u8s8 loses accuracy on AVX2 (vpmaddubsw) but not with VNNI."""
    native, avx2 = (s["variants"]["dynamic-u8s8"] for s in scored)
    stable = scored[0]["variants"]["dynamic"]
    assert avx2["kl"] > 3 * stable["kl"], (native, avx2, stable)
    if not cpu_isa()["saturating_u8s8"]:
        assert native["kl"] < 2 * stable["kl"], (native, stable)


# ---------------------------------------------------------------- what the report was measured on (no qemu)


def test_quality_report_records_the_cpu_it_ran_on(exported_models, tmp_path):
    m = quantize(exported_models("llama"), tmp_path / "q", QuantConfig(precision="int8", scheme="dynamic", context=32, eval_windows=1))
    where = m.quantization["quality"]["measured_on"]
    assert where["int8_kernel"] == cpu_isa()["int8_kernel"] and where["onnxruntime"] and where["features"]
    assert m.quantization["config"]["int8_format"] == "u8u8" and m.quantization["cpu_dependent"] is False
    sat = quantize(exported_models("llama"), tmp_path / "s", QuantConfig(precision="int8", scheme="dynamic", int8_format="u8s8",
                   context=32, eval_windows=1))
    assert sat.quantization["cpu_dependent"] is True


def test_compare_says_when_a_report_came_from_other_int8_kernels(exported_models, tmp_path):
    from onnx_edge.evaluate.compare import CompareOptions, compare
    from onnx_edge.evaluate.variants import describe
    from onnx_edge.evaluate.report import footer

    fp32 = exported_models("llama")
    sat = tmp_path / "u8s8"
    quantize(fp32, sat, QuantConfig(precision="int8", scheme="dynamic", int8_format="u8s8", context=32, eval_windows=1))
    report = compare([describe(str(fp32)), describe(str(sat))],
                     options=CompareOptions(context=32, eval_windows=1, prompts=["Hi"], agreement_tokens=2, speed=False))
    assert report.machine["int8_kernel"] == cpu_isa()["int8_kernel"]
    assert "note:" not in footer(report)  # measured here: nothing to say
    here = report.machine["int8_kernel"]
    report.machine = dict(report.machine, int8_kernel="avx2" if here != "avx2" else "avx512-vnni")
    note = [line for line in footer(report).splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "u8s8" in note[0] and here in note[0] and "expect other numbers" in note[0], note
