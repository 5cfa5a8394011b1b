"""What `onnx-edge compare` returns: CompareReport (one VariantResult per row; `--json` and back) and its text
table and footer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class VariantResult:
    variant: dict  # Variant.describe()
    is_reference: bool
    quality: dict  # QualityReport.to_dict(): kl, top1, perplexity, perplexity_reference, per_window_kl, ...
    generation: dict  # GenerationAgreement
    speed: dict | None = None  # BenchResult.to_dict(), or None (--no-speed, or no speed for this engine)
    speed_note: str | None = None

    @property
    def name(self) -> str:
        return self.variant["name"]


@dataclass
class CompareReport:
    reference: dict
    variants: list[VariantResult]
    text: str
    scoring: str
    context: int
    windows: int
    scored_tokens: int
    prompts: list[str]
    chat: bool
    gen_tokens: int
    speed: dict | None  # {"provider", "prompt_tokens", "gen_tokens", "runs"} or None
    created: str
    seconds: float = 0.0
    versions: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)  # cpu.cpu_isa() of the machine that ran this compare
    schema: str = "onnx-edge-compare/1"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CompareReport":
        """A report read back from `--json` output (to print its table or render its HTML again)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known = VariantResult.__dataclass_fields__
        fields["variants"] = [VariantResult(**{k: v for k, v in r.items() if k in known}) for r in data["variants"]]
        return cls(**fields)


def fmt_kl(kl: float) -> str:
    """KL for a table: 5 decimals, or 2 significant digits when small but not zero."""
    return f"{kl:.1e}" if 0 < kl < 1e-4 else f"{kl:.5f}"


def _fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def format_table(report: CompareReport):
    """A rich Table, one row per variant (the reference first when it is not one of the variants)."""
    from rich.table import Table

    title = f"onnx-edge compare — reference: {report.reference['name']} ({report.reference['engine']})"
    table = Table(title=title, title_justify="left")
    for col, justify in (("variant", "left"), ("engine", "left"), ("precision / scheme", "left"),
                         ("size\nMB", "right"), ("perplexity", "right"), ("KL vs ref\nnats/token", "right"),
                         ("top-1\nagree", "right"), ("gen match\nmean / min", "right"), ("gen\nidentical", "right"),
                         ("prefill\ntok/s", "right"), ("decode\ntok/s", "right"), ("TTFT\nms", "right"),
                         ("peak RSS\nMB", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in report.variants:
        q, g, s = r.quality, r.generation, r.speed or {}
        name = r.name + (" (ref)" if r.is_reference else "")
        table.add_row(
            name, r.variant["engine"], r.variant["precision"], _fmt(r.variant["size_mb"], ".1f"),
            f"{q['perplexity']:.3f}", fmt_kl(q["kl"]), f"{q['top1']:.2%}",
            f"{g['mean_matched']:.1f} / {g['min_matched']}", f"{g['identical']:.0%}",
            _fmt(s.get("prefill_tps"), ".0f"), _fmt(s.get("decode_tps"), ".1f"),
            _fmt(s.get("ttft_s") * 1e3 if s.get("ttft_s") is not None else None, ".1f"),
            _fmt(s.get("peak_rss_mb"), ".0f"),
        )
    return table


def footer(report: CompareReport) -> str:
    lines = [f"quality: {report.scored_tokens} scored tokens of {report.text}; {report.scoring} (llama.cpp's "
             f"perplexity rule); KL = mean KL(reference || variant) per scored token, in nats; top-1 = share of "
             f"scored tokens whose argmax equals the reference's",
             f"generation: {len(report.prompts)} prompts{' (chat template)' if report.chat else ''} x "
             f"{report.gen_tokens} greedy tokens, eos ignored; match = tokens equal to the reference's before the "
             f"first divergence (mean / min over prompts); identical = share of prompts that never diverge"]
    if report.speed:
        s = report.speed
        lines.append(f"speed: onnx-edge bench on {s['provider']}: {s['prompt_tokens']}-token prompt, "
                     f"{s['gen_tokens']} generated tokens, median of {s['runs']} runs after {s['warmup']} warm-up, "
                     f"each model in a fresh process (peak RSS is that process's)")
    lines += machine_notes(report.machine, [r.variant for r in report.variants])
    return "\n".join(lines)


def machine_notes(machine: dict, variants: list[dict]) -> list[str]:
    """A line for each variant (Variant.describe()) whose own quantize report came from a CPU with other int8
    kernels than `machine` (cpu.cpu_isa() of the machine that ran the compare)."""
    here = machine.get("int8_kernel")
    notes = []
    for v in variants:
        rec = v.get("recorded") or {}
        there = rec.get("measured_on", {}).get("int8_kernel")
        if not here or not there or there == here:
            continue
        why = ("its u8s8/s8s8 int8 kernels saturate differently, so expect other numbers here"
               if rec["cpu_dependent"] else "its kernels are not instruction-set sensitive, so numbers should agree")
        kl = f" (KL {rec['kl']:.5f})" if isinstance(rec.get("kl"), (int, float)) else ""
        notes.append(f"note: {v['name']}'s quantize report{kl} was measured with {there} int8 kernels; "
                     f"this machine runs {here}: {why}")
    return notes
