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
    host: dict = field(default_factory=dict)  # {"cores", "loadavg"} when the speed runs began: their context
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


# Every table column: header, justification and the cell of a VariantResult.
COLUMNS = {
    "variant": ("variant", "left", lambda r: r.name + (" (ref)" if r.is_reference else "")),
    "engine": ("engine", "left", lambda r: r.variant["engine"]),
    "precision": ("precision / scheme", "left", lambda r: r.variant["precision"]),
    "size": ("size\nMB", "right", lambda r: _fmt(r.variant["size_mb"], ".1f")),
    "perplexity": ("perplexity", "right", lambda r: f"{r.quality['perplexity']:.3f}"),
    "kl": ("KL vs ref\nnats/token", "right", lambda r: fmt_kl(r.quality["kl"])),
    "top1": ("top-1\nagree", "right", lambda r: f"{r.quality['top1']:.2%}"),
    "match": ("gen match\nmean / min", "right",
              lambda r: f"{r.generation['mean_matched']:.1f} / {r.generation['min_matched']}"),
    "identical": ("gen\nequal", "right", lambda r: f"{r.generation['identical']:.0%}"),
    "prefill": ("prefill\ntok/s", "right", lambda r: _fmt((r.speed or {}).get("prefill_tps"), ".0f")),
    "decode": ("decode\ntok/s", "right", lambda r: _fmt((r.speed or {}).get("decode_tps"), ".1f")),
    "ttft": ("TTFT\nms", "right", lambda r: _fmt((r.speed or {}).get("ttft_s") * 1e3
                                                if (r.speed or {}).get("ttft_s") is not None else None, ".1f")),
    "rss": ("peak RSS\nMB", "right", lambda r: _fmt((r.speed or {}).get("peak_rss_mb"), ".0f")),
}
QUALITY = ("variant", "engine", "precision", "size", "perplexity", "kl", "top1", "match", "identical")
SPEED = ("prefill", "decode", "ttft", "rss")
WIDE = 150  # terminal columns the one-table layout needs with long precision labels


def format_table(report: CompareReport, columns: tuple[str, ...] = QUALITY + SPEED, title: str | None = None):
    """A rich Table, one row per variant (the reference first when it is not one of the variants). Columns that
    say the same for every row (one engine; no speed run) move to the title."""
    from rich import box
    from rich.table import Table

    engines = {r.variant["engine"] for r in report.variants}
    timed = any(r.speed for r in report.variants)
    if title is None:
        title = f"onnx-edge compare — reference: {report.reference['name']} ({report.reference['engine']})"
        if len(engines) == 1 and "engine" in columns:
            title += f"; every variant on {next(iter(engines))}"
    keep = [c for c in columns if not (c == "engine" and len(engines) == 1) and not (c in SPEED and not timed)]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False)
    longest = max(len(COLUMNS["variant"][2](r)) for r in report.variants)
    for key in keep:  # variant names stay whole (up to 32 characters): the other columns fold first
        table.add_column(COLUMNS[key][0], justify=COLUMNS[key][1], overflow="fold",
                         min_width=min(longest, 32) if key == "variant" else None)
    for r in report.variants:
        table.add_row(*(COLUMNS[key][2](r) for key in keep))
    return table


def terminal_tables(report: CompareReport, width: int) -> list:
    """The table for a terminal `width` columns wide: one table when it fits, else quality and speed apart
    (a 12-column table folded into 80 columns is unreadable)."""
    if width >= WIDE:
        return [format_table(report)]
    timed = any(r.speed for r in report.variants)
    return [format_table(report, tuple(c for c in QUALITY if c != "precision")),
            format_table(report, ("variant", "precision") + SPEED, title="precision" + (" and speed" if timed else ""))]


def footer(report: CompareReport) -> str:
    lines = [f"quality: {report.scored_tokens} scored tokens of {report.text}; {report.scoring} (llama.cpp's "
             f"perplexity rule); KL = mean KL(reference || variant) per scored token, in nats; top-1 = share of "
             f"scored tokens whose argmax equals the reference's",
             f"generation: {len(report.prompts)} prompts{' (chat template)' if report.chat else ''} x "
             f"{report.gen_tokens} greedy tokens, eos ignored; match = tokens equal to the reference's before the "
             f"first divergence (mean / min over prompts); equal = share of prompts that never diverge"]
    if report.speed:
        s = report.speed
        used = sorted({str(r.speed["provider"]) for r in report.variants if (r.speed or {}).get("provider")})
        lines.append(f"speed: onnx-edge bench on {', '.join(used) or s['provider']}: {s['prompt_tokens']}-token prompt, "
                     f"{s['gen_tokens']} generated tokens, median of {s['runs']} runs after {s['warmup']} warm-up, "
                     f"each model in a fresh process (peak RSS is that process's)")
    if report.reference.get("weights_note"):
        lines.append(f"reference: {report.reference['name']}'s weights {report.reference['weights_note']}")
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
