"""The one writer of measured tables into the docs: a script that measures numbers writes them between
`<!-- NAME:begin -->` and `<!-- NAME:end -->` in its doc, so every number lives in one place, as measured."""

from __future__ import annotations

from pathlib import Path


def write_block(doc: Path, name: str, lines: list[str], title: str = "# Benchmarks") -> None:
    """Replace block NAME in `doc` with `lines` (appended, with `title` for a new file, when absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *lines, end])
    text = doc.read_text(encoding="utf-8") if doc.is_file() else title + "\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
