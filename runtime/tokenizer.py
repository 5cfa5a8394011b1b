"""The model folder's tokenizer (tokenizers library) plus the special-token strings its template needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from onnx_edge.errors import ManifestError


@dataclass
class TokenizerInfo:
    tokenizer: object  # tokenizers.Tokenizer
    bos_token: str
    eos_token: str


def _token_str(value) -> str:
    # tokenizer_config.json stores special tokens as strings or as AddedToken dicts.
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


def load_tokenizer(folder: Path, filename: str = "tokenizer.json") -> TokenizerInfo:
    from tokenizers import Tokenizer

    path = folder / filename
    if not path.is_file():
        raise ManifestError(f"{folder}: tokenizer file {filename} is missing")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception on malformed JSON
        raise ManifestError(f"{path}: unreadable tokenizer ({str(exc).splitlines()[0][:200]})") from None
    config = {}
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{cfg_path}: malformed JSON ({exc})") from None
    return TokenizerInfo(tokenizer, _token_str(config.get("bos_token")), _token_str(config.get("eos_token")))
