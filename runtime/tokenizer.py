"""The model folder's tokenizer (tokenizers library) plus the special-token strings its template needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnx_edge.errors import GenerationError, ManifestError
from onnx_edge.textfile import read_json


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
        config = read_json(cfg_path, ManifestError)
    return TokenizerInfo(tokenizer, _token_str(config.get("bos_token")), _token_str(config.get("eos_token")))


def encode_text(tokenizer, text: str, special: bool) -> list[int]:
    """tokenizer.encode(text).ids, with a prompt that is not valid UTF-8 and a tokenizer that panics (its
    regex engine giving up on a hostile pattern raises PanicException, a BaseException) as GenerationErrors."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: a non-UTF-8 argv decoded with surrogateescape
        raise GenerationError(f"the prompt is not valid UTF-8 (character {exc.start})") from None
    try:
        return tokenizer.encode(text, add_special_tokens=special).ids
    except BaseException as exc:
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise  # KeyboardInterrupt, SystemExit
        raise GenerationError(f"the tokenizer failed on this text: {str(exc).splitlines()[0][:200]}") from None
