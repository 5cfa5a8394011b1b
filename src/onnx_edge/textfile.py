"""The readers of text a user or a model folder hands us (prompts, calibration text, templates, JSON): a
hostile file (not UTF-8, malformed, nested thousands deep, the wrong top-level type, huge) is one line of
the caller's error class, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onnx_edge.errors import EdgeError

MAX_BYTES = 256 << 20  # far above any real manifest, config or tokenizer_config.json


def read_utf8(path: Path, error: type[EdgeError], max_bytes: int = MAX_BYTES) -> str:
    """The text of `path`, which must be UTF-8 and at most `max_bytes`."""
    try:
        with open(path, "rb") as fh:
            return _read_text(fh, str(path), error, max_bytes)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None


def read_stdin(error: type[EdgeError], max_bytes: int = MAX_BYTES) -> str:
    """Standard input as text (a prompt given as `-`), with read_utf8's checks."""
    if sys.stdin is None:
        raise error("standard input is closed")
    try:
        return _read_text(sys.stdin.buffer, "standard input", error, max_bytes)
    except OSError as exc:
        raise error(f"standard input: cannot read ({exc.strerror})") from None


def _read_text(fh, name: str, error: type[EdgeError], max_bytes: int) -> str:
    raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise error(f"{name}: larger than {max_bytes >> 20} MB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{name}: not valid UTF-8 (byte {exc.start})") from None


def read_json(path: Path, error: type[EdgeError], expect: type = dict, max_bytes: int = MAX_BYTES):
    """The parsed content of `path`, which must be a JSON `expect` (dict by default)."""
    text = read_utf8(path, error, max_bytes)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: malformed JSON ({exc})") from None
    except ValueError as exc:  # an integer literal past Python's 4300-digit conversion limit
        raise error(f"{path}: unreadable JSON ({str(exc).split(';')[0]})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deep to read") from None
    if not isinstance(data, expect):
        kind = {dict: "object", list: "array"}.get(expect, expect.__name__)
        raise error(f"{path}: must hold a JSON {kind}, not {_json_type(data)}")
    return data


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
