"""The `onnx-edge compare --html` report: one self-contained HTML file (inline SVG charts drawn here, inline
CSS, no scripts, fonts, images or links to anything outside the file). Torch-free and dependency-free.

Charts: KL divergence vs size, perplexity vs size, decode speed vs size, per-window KL per variant; then
the table. Every variant keeps one colour in every chart and in the table."""

from __future__ import annotations

import html
import math
from pathlib import Path

# Tableau 10 minus grey: distinct, print-friendly, colour-blind-tolerable. The reference is slate.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f")
REFERENCE_COLOUR = "#334155"
FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', 'Helvetica Neue', Helvetica, Arial, 'DejaVu Sans', sans-serif"

W, H = 540, 330  # one chart
M = dict(left=72, right=24, top=18, bottom=56)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def colours(report: dict) -> dict[str, str]:
    out, i = {}, 0
    for v in report["variants"]:
        if v["is_reference"]:
            out[v["variant"]["name"]] = REFERENCE_COLOUR
        else:
            out[v["variant"]["name"]] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def tick_decimals(ticks: list[float]) -> int:
    """The fewest decimals that write every tick exactly (a 2.5 step needs one: 0, 2.5, 5, 7.5)."""
    for decimals in range(7):
        if all(abs(round(t, decimals) - t) <= 1e-9 * max(1.0, abs(t)) for t in ticks):
            return decimals
    return 6


def _fmt_tick(v: float, ticks: list[float]) -> str:
    return f"{v:,.{tick_decimals(ticks)}f}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades covering [lo, hi] (lo > 0)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** k for k in range(a, max(b, a + 1) + 1)]


def wants_log(values: list[float]) -> bool:
    """A log axis when the positive values span more than 1.5 decades (KL of int8 vs int4, say)."""
    pos = [v for v in values if v > 0]
    return len(pos) >= 2 and max(pos) / min(pos) > 10 ** 1.5


class _Axes:
    def __init__(self, xlo, xhi, ylo, yhi, xlabel, ylabel, xticks=None, ylog=False):
        self.ylog = ylog
        self.xt = xticks or nice_ticks(xlo, xhi)
        self.yt = log_ticks(ylo, yhi) if ylog else nice_ticks(ylo, yhi)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        self.floor = self.y0  # log axis: where zeros are drawn
        self.xlabel, self.ylabel = xlabel, ylabel
        self.pw = W - M["left"] - M["right"]
        self.ph = H - M["top"] - M["bottom"]

    def px(self, x: float) -> float:
        return M["left"] + (x - self.x0) / ((self.x1 - self.x0) or 1) * self.pw

    def py(self, y: float) -> float:
        if self.ylog:
            y = max(y, self.floor)
            frac = (math.log10(y) - math.log10(self.y0)) / ((math.log10(self.y1) - math.log10(self.y0)) or 1)
            return M["top"] + self.ph - frac * self.ph
        return M["top"] + self.ph - (y - self.y0) / ((self.y1 - self.y0) or 1) * self.ph

    def ylabel_of(self, t: float) -> str:
        if self.ylog:
            k = round(math.log10(t))
            return f"{t:g}" if -3 <= k <= 3 else f"1e{k}"
        return _fmt_tick(t, self.yt)

    def frame(self, xfmt=None) -> list[str]:
        out = []
        every = math.ceil(len(self.yt) / 6) if self.ylog else 1  # a long log axis labels every 2nd/3rd decade
        for i, t in enumerate(self.yt):
            y = self.py(t)
            labelled = (len(self.yt) - 1 - i) % every == 0
            out.append(f'<line x1="{M["left"]}" x2="{M["left"] + self.pw}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'class="{"grid" if labelled else "grid minor"}"/>')
            if labelled:
                out.append(f'<text x="{M["left"] - 8}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                           f'{_e(self.ylabel_of(t))}</text>')
        for t in self.xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{M["top"] + self.ph}" y2="{M["top"] + self.ph + 5}" class="axis"/>')
            label = xfmt(t) if xfmt else _fmt_tick(t, self.xt)
            out.append(f'<text x="{x:.1f}" y="{M["top"] + self.ph + 20}" class="tick" text-anchor="middle">{_e(label)}</text>')
        out.append(f'<line x1="{M["left"]}" x2="{M["left"] + self.pw}" y1="{M["top"] + self.ph}" '
                   f'y2="{M["top"] + self.ph}" class="axis"/>')
        out.append(f'<line x1="{M["left"]}" x2="{M["left"]}" y1="{M["top"]}" y2="{M["top"] + self.ph}" class="axis"/>')
        out.append(f'<text x="{M["left"] + self.pw / 2:.1f}" y="{H - 12}" class="label" text-anchor="middle">'
                   f'{_e(self.xlabel)}</text>')
        cy = M["top"] + self.ph / 2
        out.append(f'<text x="18" y="{cy:.1f}" class="label" text-anchor="middle" '
                   f'transform="rotate(-90 18 {cy:.1f})">{_e(self.ylabel)}</text>')
        return out


def _svg(body: list[str], title: str) -> str:
    return (f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{_e(title)}">'
            + "".join(body) + "</svg>")


def _place_labels(points: list[tuple[float, float, str, str]]) -> list[str]:
    """Name labels right of each point; a label that would overlap an earlier one moves down, or up when
    moving down would leave the plot (and run into the axis ticks)."""
    placed: list[tuple[float, float]] = []
    out = []
    bottom = H - M["bottom"] - 4

    def clashes(lx: float, ly: float) -> bool:
        return any(abs(ly - py) < 15 and abs(lx - px) < 140 for px, py in placed)

    for x, y, name, colour in sorted(points, key=lambda p: p[1]):
        lx, ly = x + 11, min(y + 4, bottom)
        right = lx + 7 * len(name) > W - M["right"]
        if right:
            lx = x - 11
        start = ly
        while clashes(lx, ly) and ly + 15 <= bottom:
            ly += 15
        if clashes(lx, ly):
            ly = start
            while clashes(lx, ly):
                ly -= 15
        placed.append((lx, ly))
        anchor = "end" if right else "start"
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" class="pointlabel" text-anchor="{anchor}" fill="{colour}">'
                   f'{_e(name)}</text>')
    return out


def _marker(ax: _Axes, cx: float, cy: float, value: float, colour: str, r: float, tip: str) -> str:
    """A filled dot; on a log axis a zero is a hollow dot on the floor (it has no place on the scale)."""
    if ax.ylog and value <= 0:
        return (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r - 1}" fill="#fff" stroke="{colour}" stroke-width="2.5">'
                f'<title>{_e(tip)}</title></circle>')
    return (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{colour}" stroke="#fff" stroke-width="2">'
            f'<title>{_e(tip)}</title></circle>')


def _y_range(values: list[float], zero_based: bool, log: bool) -> tuple[float, float]:
    if log:
        pos = [v for v in values if v > 0]
        # the floor (where zeros sit) stays clear of the smallest positive value
        return 10 ** math.floor(math.log10(min(pos)) - 0.5), max(pos)
    if zero_based:
        return 0.0, (max(values) * 1.12) or 1.0
    span = (max(values) - min(values)) or abs(max(values)) * 0.02 or 1.0
    return min(values) - span * 0.25, max(values) + span * 0.25


def scatter(report: dict, ykey, ylabel: str, title: str, zero_based: bool = True, yfmt: str = ".4f",
            unit: str = "", log_ok: bool = False) -> str:
    col = colours(report)
    pts = []
    for v in report["variants"]:
        size = v["variant"]["size_mb"]
        y = ykey(v)
        if size is None or y is None:
            continue
        pts.append((size, y, v["variant"]["name"], col[v["variant"]["name"]]))
    if not pts:
        return _empty(title, "no variant has both a size and this value")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    log = log_ok and wants_log(ys)
    ax = _Axes(0.0, max(xs) * 1.1, *_y_range(ys, zero_based, log), "size on disk (MB)",
               ylabel + (" — log scale" if log else ""), ylog=log)
    body = ax.frame()
    marks = []
    for x, y, name, c in pts:
        cx, cy = ax.px(x), ax.py(y)
        body.append(_marker(ax, cx, cy, y, c, 7, f"{name}: {x:.1f} MB, {format(y, yfmt)}{unit}"))
        marks.append((cx, cy, name + (" (0)" if log and y <= 0 else ""), c))
    body += _place_labels(marks)
    return _svg(body, title)


def window_chart(report: dict) -> str:
    """Per-window KL: one line per variant (the reference is 0 by definition and left out)."""
    col = colours(report)
    series = [(v["variant"]["name"], v["quality"]["per_window_kl"]) for v in report["variants"]
              if not v["is_reference"] and v["quality"]["per_window_kl"]]
    title = "KL divergence per evaluation window"
    if not series:
        return _empty(title, "only the reference was evaluated")
    n = max(len(s) for _, s in series)
    values = [x for _, s in series for x in s]
    log = wants_log(values)
    xt = list(range(1, n + 1)) if n <= 12 else None
    ax = _Axes(1, max(n, 2), *_y_range(values, True, log), "evaluation window",
               "KL (nats / token)" + (" — log scale" if log else ""), xticks=xt, ylog=log)
    body = ax.frame(xfmt=lambda t: f"{t:.0f}")
    for name, vals in series:
        c = col[name]
        pts = " ".join(f"{ax.px(i + 1):.1f},{ax.py(v):.1f}" for i, v in enumerate(vals))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2.5" stroke-linejoin="round"/>')
        for i, v in enumerate(vals):
            body.append(_marker(ax, ax.px(i + 1), ax.py(v), v, c, 4, f"{name}, window {i + 1}: KL {v:.6f}"))
    return _svg(body, title)


def bars(report: dict, value, label: str, title: str, fmt: str) -> str:
    """One horizontal bar per variant with a speed result (TTFT, peak RSS): names left, values at the bar end."""
    col = colours(report)
    rows = [(v["variant"]["name"], value(v.get("speed") or {})) for v in report["variants"]]
    rows = [(name, x) for name, x in rows if x is not None]
    if not rows:
        return _empty(title, "no variant has this value")
    name_w = min(190, 12 + 7 * max(len(name) for name, _ in rows))
    ticks = nice_ticks(0.0, max(x for _, x in rows) * 1.08)
    left, right = name_w, W - M["right"] - 52
    height = M["top"] + 30 * len(rows) + 44

    def px(x: float) -> float:
        return left + x / (ticks[-1] or 1) * (right - left)

    body = []
    for t in ticks:
        body.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{M["top"]}" y2="{height - 40}" class="grid"/>')
        body.append(f'<text x="{px(t):.1f}" y="{height - 24}" class="tick" text-anchor="middle">'
                    f'{_e(_fmt_tick(t, ticks))}</text>')
    for i, (name, x) in enumerate(rows):
        y = M["top"] + 30 * i + 6
        body.append(f'<text x="{left - 8}" y="{y + 13}" class="tick" text-anchor="end">{_e(name)}</text>')
        body.append(f'<rect x="{left}" y="{y}" width="{max(1.0, px(x) - left):.1f}" height="18" rx="3" '
                    f'fill="{col[name]}"><title>{_e(name)}: {format(x, fmt)}</title></rect>')
        body.append(f'<text x="{px(x) + 6:.1f}" y="{y + 13}" class="tick">{_e(format(x, fmt))}</text>')
    body.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 6}" class="label" text-anchor="middle">'
                f'{_e(label)}</text>')
    return (f'<svg viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" aria-label="{_e(title)}">'
            + "".join(body) + "</svg>")


def headline(report: dict) -> str:
    """One sentence a reader can act on: the smallest variant, how close it stays, and the fastest decode."""
    others = [v for v in report["variants"] if not v["is_reference"] and v["variant"]["size_mb"] is not None]
    if not others:
        return "Only the reference was evaluated."
    ref = next((v for v in report["variants"] if v["is_reference"]), None)
    small = min(others, key=lambda v: v["variant"]["size_mb"])
    q = small["quality"]
    parts = [f"Smallest: {small['variant']['name']} ({small['variant']['size_mb']:.0f} MB"
             + (f", {small['variant']['size_mb'] / ref['variant']['size_mb']:.0%} of the reference"
                if ref and ref["variant"]["size_mb"] else "")
             + f") keeps top-1 agreement {q['top1']:.1%} at KL {fmt_kl(q['kl'])} nats/token"]
    close = min(others, key=lambda v: v["quality"]["kl"])
    if close is not small:
        parts.append(f"closest to the reference: {close['variant']['name']} ({close['variant']['size_mb']:.0f} MB, "
                     f"top-1 {close['quality']['top1']:.1%}, KL {fmt_kl(close['quality']['kl'])})")
    timed = [v for v in report["variants"] if (v.get("speed") or {}).get("decode_tps")]
    if timed:
        fast = max(timed, key=lambda v: v["speed"]["decode_tps"])
        base = (ref.get("speed") or {}).get("decode_tps") if ref else None
        parts.append(f"fastest decode: {fast['variant']['name']} at {fast['speed']['decode_tps']:.1f} tok/s"
                     + (f" ({fast['speed']['decode_tps'] / base:.2f}× the reference)" if base else ""))
    return "; ".join(parts) + "."


def measured_on(report: dict) -> str:
    """The providers the speed runs used (what `--provider auto` resolved to), else the one asked for."""
    used = sorted({str(v["speed"]["provider"]) for v in report["variants"] if (v.get("speed") or {}).get("provider")})
    return ", ".join(used) or str(report["speed"]["provider"])


def speed_context(report: dict) -> str:
    """Where the speed numbers come from: machine, threads, what else was running, how long loading took."""
    speed, machine, host = report["speed"], report.get("machine") or {}, report.get("host") or {}
    threads = sorted({str((v.get("speed") or {}).get("threads") or "one per core") for v in report["variants"]
                      if v.get("speed")})
    parts = [f'{speed["prompt_tokens"]}-token prompt, {speed["gen_tokens"]} greedy tokens, median of '
             f'{speed["runs"]} runs after {speed.get("warmup", 0)} warm-up on {measured_on(report)}, each model in '
             f'a fresh process']
    cpu = machine.get("machine", "")
    if host.get("cores"):
        cpu += f", {host['cores']} cores"
    if cpu:
        parts.append(f"{cpu}; threads: {', '.join(threads)}")
    if host.get("loadavg"):
        parts.append(f"load average {host['loadavg'][0]:.2f} before the speed runs")
    return "; ".join(parts)


def _empty(title: str, why: str) -> str:
    return _svg([f'<rect x="{M["left"]}" y="{M["top"]}" width="{W - M["left"] - M["right"]}" '
                 f'height="{H - M["top"] - M["bottom"]}" class="emptybox"/>',
                 f'<text x="{W / 2}" y="{H / 2}" class="label" text-anchor="middle">{_e(why)}</text>'], title)


def fmt_kl(kl: float) -> str:
    return f"{kl:.1e}" if 0 < kl < 1e-4 else f"{kl:.5f}"


def _num(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def sample_answers(report: dict) -> str:
    """Each variant's greedy answer to the first prompt (what the numbers mean in words), when compare kept it."""
    col = colours(report)
    answers = [(v["variant"]["name"], v["generation"].get("sample")) for v in report["variants"]]
    answers = [(name, text) for name, text in answers if isinstance(text, str)]
    if not answers or not report.get("prompts"):
        return ""
    items = "".join(f'<div class="answer"><span class="who"><span class="chip" style="background:{col[name]}">'
                    f'</span>{_e(name)}</span><span class="said">{_e(text)}</span></div>' for name, text in answers)
    return (f'<section class="card samples"><h2>Sample answers</h2><p class="note">“{_e(report["prompts"][0])}”: '
            f'each variant\'s greedy answer up to its end-of-turn token (at most {report["gen_tokens"]} tokens)</p>'
            f'{items}</section>')


def table_html(report: dict) -> str:
    col = colours(report)
    speed = report.get("speed") is not None
    head = ["variant", "engine", "precision / scheme", "size|MB", "perplexity", "KL vs ref|nats/token",
            "top-1|agreement", "gen. match|mean / min", "gen.|identical"]
    if speed:
        head += ["prefill|tok/s", "decode|tok/s", "TTFT|ms", "peak RSS|MB"]
    rows = []
    for v in report["variants"]:
        var, q, g, s = v["variant"], v["quality"], v["generation"], v.get("speed") or {}
        name = f'<span class="chip" style="background:{col[var["name"]]}"></span>{_e(var["name"])}'
        if v["is_reference"]:
            name += ' <span class="ref">reference</span>'
        cells = [name, _e(var["engine"]), _e(var["precision"]), _num(var["size_mb"], ".1f"),
                 f'{q["perplexity"]:.3f}', fmt_kl(q["kl"]), f'{q["top1"]:.2%}',
                 f'{g["mean_matched"]:.1f} / {g["min_matched"]}', f'{g["identical"]:.0%}']
        if speed:
            ttft = s.get("ttft_s")
            cells += [_num(s.get("prefill_tps"), ".0f"), _num(s.get("decode_tps"), ".1f"),
                      _num(ttft * 1e3 if ttft is not None else None, ".1f"), _num(s.get("peak_rss_mb"), ".0f")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<table><thead><tr>' + "".join(f"<th>{'<br>'.join(_e(x) for x in h.split('|'))}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


CSS = f"""
*{{box-sizing:border-box}}
body{{margin:0;background:#f4f5f7;color:#1f2933;font-family:{FONT};font-size:15px;line-height:1.45}}
main{{max-width:1180px;margin:0 auto;padding:36px 32px 48px}}
h1{{font-size:30px;font-weight:700;letter-spacing:-.01em;margin:0 0 6px}}
h2{{font-size:17px;font-weight:600;margin:0 0 2px}}
.sub{{color:#52606d;margin:0 0 22px;font-size:15px}}
.legend{{display:flex;flex-wrap:wrap;gap:10px 22px;margin:0 0 18px;font-size:14px}}
.legend span{{display:inline-flex;align-items:center;gap:7px}}
.chip{{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:7px;vertical-align:-1px}}
.legend .chip{{margin-right:0}}
.grid2{{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px}}
.card{{background:#fff;border-radius:12px;box-shadow:0 1px 3px rgba(15,23,42,.08),0 1px 2px rgba(15,23,42,.04);
       padding:18px 20px 10px}}
.card p.note{{color:#7b8794;font-size:12.5px;margin:0 0 6px}}
.card svg{{width:100%;height:auto;display:block}}
svg .grid{{stroke:#e4e7eb;stroke-width:1}}
svg .grid.minor{{stroke:#f1f3f5}}
svg .axis{{stroke:#9aa5b1;stroke-width:1}}
svg .tick{{fill:#616e7c;font-size:12px;font-family:{FONT};font-variant-numeric:tabular-nums}}
svg .label{{fill:#3e4c59;font-size:13px;font-family:{FONT};font-weight:600}}
svg .pointlabel{{font-size:12px;font-family:{FONT};font-weight:600}}
svg .emptybox{{fill:#f8f9fa;stroke:#e4e7eb}}
.tablecard{{margin-top:18px;padding:18px 20px 16px;overflow-x:auto}}
table{{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}}
th{{text-align:right;font-weight:600;color:#52606d;border-bottom:2px solid #e4e7eb;padding:8px 7px;
    font-size:12px;vertical-align:bottom;white-space:nowrap}}
td{{text-align:right;padding:8px 7px;border-bottom:1px solid #eef0f2;white-space:nowrap}}
td:nth-child(3){{white-space:normal;min-width:9em}}
th:first-child,td:first-child{{padding-left:0}}
th:last-child,td:last-child{{padding-right:0}}
th:nth-child(-n+3),td:nth-child(-n+3){{text-align:left}}
tbody tr:last-child td{{border-bottom:none}}
.ref{{font-size:11px;font-weight:600;color:#fff;background:{REFERENCE_COLOUR};border-radius:4px;padding:1px 6px;
      margin-left:6px;vertical-align:1px}}
.headline{{font-size:17px;font-weight:600;margin:0 0 16px;color:#1f2933}}
.samples{{margin-top:18px}}
.answer{{display:grid;grid-template-columns:14em 1fr;gap:12px;padding:7px 0;border-bottom:1px solid #eef0f2;
         font-size:13.5px}}
.answer:last-child{{border-bottom:none}}
.answer .who{{font-weight:600}}
.answer .said{{white-space:pre-wrap;color:#3e4c59}}
.foot{{color:#616e7c;font-size:12.5px;margin-top:18px}}
.foot p{{margin:3px 0}}
"""


def render_html(report) -> str:
    """The report (a CompareReport or its to_dict()) as one self-contained HTML page."""
    r = report if isinstance(report, dict) else report.to_dict()
    col = colours(r)
    ref = r["reference"]
    speed = r.get("speed")
    legend = "".join(f'<span><span class="chip" style="background:{col[v["variant"]["name"]]}"></span>'
                     f'{_e(v["variant"]["name"])} <small style="color:#7b8794">{_e(v["variant"]["precision"])}'
                     f'</small></span>' for v in r["variants"])
    kl = scatter(r, lambda v: v["quality"]["kl"], "KL vs reference (nats / token)", "KL divergence vs size",
                 yfmt=".5f", unit=" nats/token", log_ok=True)
    ppl = scatter(r, lambda v: v["quality"]["perplexity"], "perplexity", "Perplexity vs size", zero_based=False,
                  yfmt=".3f")
    cards = [
        ("Quality vs size: KL divergence", f"lower is closer to the reference; {r['scored_tokens']} scored tokens"
         + ("; a hollow dot is 0 (identical to the reference)"
            if wants_log([v["quality"]["kl"] for v in r["variants"]]) else ""), kl),
        ("Quality vs size: perplexity", f"on {_e(r['text'])}; lower is better", ppl),
        ("KL divergence per window", f"{r['windows']} windows of {r['context']} tokens; reference omitted (0)",
         window_chart(r)),
    ]
    if speed:  # without a speed run there is nothing to chart: no empty cards
        context = _e(speed_context(r))
        cards += [
            ("Decode speed vs size", context, scatter(r, lambda v: (v.get("speed") or {}).get("decode_tps"),
                                                      "decode speed (tokens / s)", "Decode speed vs size",
                                                      yfmt=".1f", unit=" tok/s")),
            ("Time to first token", f"prefill of the {speed['prompt_tokens']}-token prompt; lower is better",
             bars(r, lambda s: s["ttft_s"] * 1e3 if s.get("ttft_s") is not None else None, "milliseconds",
                  "Time to first token", ".0f")),
            ("Peak memory", "peak resident set size of the measuring process; lower is better",
             bars(r, lambda s: s.get("peak_rss_mb"), "MB", "Peak memory", ".0f")),
        ]
    charts = "".join(f'<section class="card"><h2>{_e(t)}</h2><p class="note">{n}</p>{svg}</section>'
                     for t, n, svg in cards)
    samples = sample_answers(r)
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted((r.get("versions") or {}).items()))
    foot = [f"<p><b>Scoring.</b> {_e(r['scoring'])} (llama.cpp's perplexity rule). KL = mean KL(reference ‖ variant) "
            f"per scored token, in nats; top-1 = share of scored tokens whose most likely next token equals the "
            f"reference's.</p>",
            f"<p><b>Generation.</b> {len(r['prompts'])} prompts{' (chat template)' if r['chat'] else ''}, "
            f"{r['gen_tokens']} greedy tokens each, eos ignored; “match” counts tokens equal to the reference's "
            f"before the first divergence, “identical” the share of prompts that never diverge.</p>"]
    if speed:
        foot.append("<p><b>Speed.</b> The <code>onnx-edge bench</code> measurement: prefill = prompt tokens / time "
                    "to first token; decode = later tokens / their time; peak RSS of the measuring process.</p>")
    from onnx_edge.evaluate.report import machine_notes

    machine = r.get("machine") or {}
    if machine:
        foot.append(f"<p><b>Machine.</b> {_e(machine.get('machine', ''))} CPU, int8 kernels "
                    f"{_e(machine.get('int8_kernel', ''))} ({_e(' '.join(machine.get('features', [])))}).</p>")
    foot += [f"<p><b>CPU.</b> {_e(note)}</p>" for note in machine_notes(machine, [v["variant"] for v in r["variants"]])]
    foot.append(f"<p>Created {_e(r['created'])} in {r.get('seconds', 0):.0f} s. {versions}</p>")
    model = ref.get("model") or ref["name"]
    subtitle = (f"Reference: <b>{_e(ref['name'])}</b> ({_e(ref['engine'])}, {_e(ref['precision'])}) · "
                f"{len(r['variants'])} models · text: {_e(r['text'])}"
                + ("" if speed else " · speed not measured (--no-speed)"))
    if ref.get("weights_note"):
        subtitle += f"<br>Reference weights {_e(ref['weights_note'])}."
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>onnx-edge compare: {_e(model)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{_e(model)}: variants compared</h1><p class=\"sub\">{subtitle}</p>"
            f"<p class=\"headline\">{_e(headline(r))}</p>"
            f"<div class=\"legend\">{legend}</div><div class=\"grid2\">{charts}</div>"
            f"<section class=\"card tablecard\"><h2>All numbers</h2>{table_html(r)}</section>{samples}"
            f"<div class=\"foot\">{''.join(foot)}</div></main></body></html>\n")


def write_html(report, path, inputs=()) -> Path:
    """Render and write atomically (onnx_edge.staging): a failed write leaves any old report intact."""
    from onnx_edge.staging import write_file_atomic

    return write_file_atomic(path, render_html(report), inputs)
