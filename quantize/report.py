"""The text printed after every quantize: plan, sizes, and what it cost in quality."""

from __future__ import annotations

from collections import Counter

from onnx_edge.manifest import Manifest


def format_report(path, m: Manifest) -> str:
    q = m.quantization
    if q.get("method") == "gguf_blocks":
        return _format_gguf(path, q)
    cfg = q["config"]
    counts = Counter(q["weights"].values())
    plan = ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
    scheme = f"{cfg['precision']} {cfg['scheme']}"
    if cfg["scheme"] == "weight_only":
        scheme += (f", {cfg['algorithm']}, block {cfg['block_size']}, "
                   f"{'symmetric' if cfg['symmetric'] else 'asymmetric'}, accuracy level {cfg['accuracy_level']}")
    elif cfg["scheme"] == "static":
        scheme += f", calibration {cfg['calibration']}"
    if cfg.get("int8_format"):
        scheme += f", {cfg['int8_format']}"
    size = q["size_mb"]
    lines = [f"quantized to {path}",
             f"  scheme       {scheme} (target provider {cfg['provider']})",
             f"  weights      {plan}",
             f"  size         {size['before']:.1f} MB -> {size['after']:.1f} MB ({size['after'] / size['before']:.0%})"]
    sens = q.get("sensitivity")
    if sens:
        kept = ", ".join(sens["kept"]) or "none"
        status = "met" if sens["met"] else "NOT met (every unit already kept)"
        lines.append(f"  auto plan    budget KL {sens['budget']:g}: keeps {kept} at {cfg['keep_precision']}; "
                     f"calibration KL {sens['plan_kl']:.5f} ({status})")
    quality = q.get("quality")
    if quality:
        lines += [f"  quality      KL {quality['kl']:.5f}, top-1 agreement {quality['top1']:.2%}, "
                  f"perplexity {quality['perplexity']:.3f} vs {quality['perplexity_reference']:.3f} fp32 "
                  f"({quality['perplexity'] / quality['perplexity_reference'] - 1:+.2%})",
                  f"  evaluated on {quality['tokens']} tokens of {quality['text']}; {quality['scoring']}"]
        where = quality.get("measured_on")
        if where:
            lines.append(f"  measured on  {where['machine']} CPU, int8 kernel {where['int8_kernel']}, onnxruntime "
                         f"{where['onnxruntime']}" + ("; this format's quality differs on CPUs with other int8 kernels"
                                                      if q.get("cpu_dependent") else ""))
    return "\n".join(lines)


def _format_gguf(path, q: dict) -> str:
    kinds = Counter(w["qtype"] for w in q["weights"].values() if w.get("status") == "imported")
    kept = [n for n, w in q["weights"].items() if w.get("status") == "kept"]
    size = q["size_mb"]
    return "\n".join([
        f"imported GGUF blocks into {path}",
        f"  scheme       {q['gguf']} blocks, {'bitwise exact' if q['exact'] else 'NOT exact'} "
        f"(accuracy level {q['accuracy_level']})",
        "  weights      " + ", ".join(f"{n} {t}" for t, n in sorted(kinds.items())) + (f", {len(kept)} kept fp32" if kept else ""),
        f"  size         {size['before']:.1f} MB -> {size['after']:.1f} MB ({size['after'] / size['before']:.0%})",
    ])
