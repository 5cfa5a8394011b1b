"""The text printed after every quantize (and by `info`): plan, sizes, and what it cost in quality."""

from __future__ import annotations

from onnx_edge.manifest import Manifest
from onnx_edge.quant_record import GGUF_BLOCKS, QuantRecord

INCOMPLETE = ("  quantization  incomplete record (the run that wrote it did not finish); "
              "`info --json` shows what is there")


def format_report(path, m: Manifest) -> str:
    """A heading naming `path`, then one line per part of the folder's quantization record."""
    q = QuantRecord.from_dict(m.quantization)
    label = q.label(m.precision)
    if q.method == GGUF_BLOCKS:
        lines = [f"imported GGUF blocks into {path}",
                 f"  scheme       {label} from {q.gguf} (accuracy level {q.accuracy_level})"]
    else:
        lines = [f"quantized to {path}", f"  scheme       {label} (target provider {q.config.get('provider')})"]
    if not q.complete:
        return "\n".join(lines + [INCOMPLETE])
    size = q.size_mb
    lines += ["  weights      " + ", ".join(f"{n} {p}" for p, n in sorted(q.weight_precisions().items())),
              f"  size         {size['before']:.1f} MB -> {size['after']:.1f} MB ({size['after'] / size['before']:.0%})"]
    sens = q.sensitivity
    if sens:
        kept = ", ".join(sens["kept"]) or "none"
        status = "met" if sens["met"] else "NOT met (every unit already kept)"
        lines.append(f"  auto plan    budget KL {sens['budget']:g}: keeps {kept} at {q.config['keep_precision']}; "
                     f"calibration KL {sens['plan_kl']:.5f} ({status})")
    quality = q.quality
    if quality:
        lines += [f"  quality      KL {quality['kl']:.5f}, top-1 agreement {quality['top1']:.2%}, "
                  f"perplexity {quality['perplexity']:.3f} vs {quality['perplexity_reference']:.3f} fp32 "
                  f"({quality['perplexity'] / quality['perplexity_reference'] - 1:+.2%})",
                  f"  evaluated on {quality['tokens']} tokens of {quality['text']}; {quality['scoring']}"]
        where = quality.get("measured_on")
        if where:
            lines.append(f"  measured on  {where['machine']} CPU, int8 kernel {where['int8_kernel']}, onnxruntime "
                         f"{where['onnxruntime']}" + ("; this format's quality differs on CPUs with other int8 kernels"
                                                      if q.cpu_dependent else ""))
    return "\n".join(lines)
