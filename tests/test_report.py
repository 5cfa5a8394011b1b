"""compare's report as a person sees it: the terminal table fits 80 columns; the HTML page's tick labels,
headline, speed context, no empty cards, sample answers, and the page rendered by headless Chromium (every
variant's colour on screen, nothing cut off)."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from onnx_edge.evaluate.report import CompareReport
from onnx_edge.evaluate.report_html import colours, nice_ticks, render_html, _fmt_tick
from tests.report_data import VARIANTS, report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        self.svgs += tag == "svg"

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


@pytest.mark.parametrize("hi, want", [(12.0, ["0.0", "2.5", "5.0", "7.5", "10.0", "12.5"]),
                                      (0.011, ["0.0000", "0.0025", "0.0050", "0.0075", "0.0100", "0.0125"]),
                                      (3300, ["0", "1,000", "2,000", "3,000", "4,000"])])
def test_tick_labels_keep_their_decimals(hi, want):
    """A 2.5 step was labelled 2, 8, 12 (rounded to integers)."""
    ticks = nice_ticks(0.0, hi)
    labels = [_fmt_tick(t, ticks) for t in ticks]
    assert labels == want


def test_headline_model_and_speed_context():
    page = render_html(report())
    text = " ".join(_parse(page).text)
    assert "smollm2-135m-instruct: variants compared" in text
    assert "Reference weights from a Q4_1 GGUF: the fp32 weights are its blocks dequantized." in text
    assert "Smallest: smollm2-int4-rtn (101 MB, 19% of the reference)" in text
    assert "closest to the reference: smollm2-int4-gguf (119 MB, top-1 100.0%, KL 0.00000)" in text
    assert "fastest decode: smollm2-int4-rtn at 69.9 tok/s (2.22× the reference)" in text
    assert "x86_64, 2 cores; threads: one per core" in text and "load average 0.31" in text
    assert "Time to first token" in text and "Peak memory" in text
    assert _parse(page).svgs == 6  # KL, perplexity, per-window KL, decode speed, TTFT, peak RSS


def test_no_speed_means_no_speed_cards():
    page = render_html(report(speed=False))
    text = " ".join(_parse(page).text)
    assert _parse(page).svgs == 3
    assert "Decode speed" not in text and "Time to first token" not in text and "Peak memory" not in text
    assert "speed not measured (--no-speed)" in text  # said once, in the subtitle


def test_sample_answers_are_escaped():
    page = render_html(report())
    assert "&lt;smollm2-int8&gt; &amp; more" in page and "<smollm2-int8>" not in page
    assert "Sample answers" in page


def test_report_keeps_host_and_samples_through_json():
    data = report()
    again = CompareReport.from_dict(data).to_dict()
    assert again["host"] == data["host"]
    assert again["variants"][1]["generation"]["sample"] == data["variants"][1]["generation"]["sample"]


@pytest.mark.parametrize("speed", [True, False])
def test_table_fits_an_80_column_terminal(speed):
    from rich.console import Console

    from onnx_edge.evaluate.report import terminal_tables

    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    for table in terminal_tables(CompareReport.from_dict(report(speed=speed)), console.width):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    words = " ".join(text.split())
    assert "every variant on onnxruntime" in words and "engine" not in words  # one engine: said in the title
    for name, *_ in VARIANTS:
        assert name in text  # whole on one line: not folded, never cut with "…"
    assert ("decode" in text) == speed and "…" not in text
    assert "0.06110" in text and "87.10%" in text and "69%" in text


def _screenshot(tmp_path, page: str, width: int, height: int):
    from PIL import Image

    html = tmp_path / "report.html"
    html.write_text(page, encoding="utf-8")
    png = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert png.exists(), "chromium wrote no screenshot"
    return Image.open(png).convert("RGB")


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("ONNX_EDGE_REQUIRE_CHROMIUM"),
                    reason="headless Chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("speed", [True, False])
def test_report_renders_in_chromium(tmp_path, speed):
    assert CHROMIUM, "ONNX_EDGE_REQUIRE_CHROMIUM is set but no chromium is installed"
    data = report(speed=speed)
    image = _screenshot(tmp_path, render_html(data), 1280, 2600)
    counts: dict[tuple[int, int, int], int] = {}
    for rgb, n in ((c, n) for n, c in image.getcolors(maxcolors=1 << 20)):
        counts[rgb] = n
    # every variant's colour is drawn (dots, lines, bars, table chips): hundreds of pixels each
    for name, colour in colours(data).items():
        assert counts.get(_hex(colour), 0) > 150, f"{name}'s colour {colour} is barely on screen"
    # the page is not blank and nothing runs off the right edge: the last 24 columns are page background
    assert len(counts) > 50
    background = image.getpixel((image.width - 1, 10))
    strip = image.crop((image.width - 24, 0, image.width, image.height))
    assert {c for _, c in strip.getcolors(maxcolors=1 << 16)} == {background}
    assert len(VARIANTS) == len(data["variants"])
