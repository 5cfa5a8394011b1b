"""Turn a stream of token ids into text pieces without ever emitting half a UTF-8 character.

Same prefix_offset/read_offset scheme as text-generation-inference and vLLM.
"""

from __future__ import annotations

from tokenizers import Tokenizer

_REPLACEMENT = "\ufffd"  # what a byte-level decode shows for an unfinished multi-byte character


class StreamDetokenizer:
    """Feed ids one at a time with add(); call flush() once at the end of the stream.

    Each step decodes only a short window of recent ids, so a token costs O(window), not O(text).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # The window: ids[:read_offset] were emitted last step and are decoded again only as context
        # (decoders such as Metaspace change a token's text when it starts a decode); ids[read_offset:]
        # are not emitted yet. Older ids are dropped: they are never decoded again.
        self._ids: list[int] = []
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _advance(self, allow_partial: bool) -> str:
        prefix_text = self._decode(self._ids[: self._read_offset])
        new_text = self._decode(self._ids)
        # Hold back while the window ends in U+FFFD: the next id may finish the character.
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and not allow_partial):
            return ""
        piece = new_text[len(prefix_text) :]
        # The ids just emitted become the next window's context; the old context can go.
        del self._ids[: self._read_offset]
        self._read_offset = len(self._ids)
        return piece

    def add(self, token_id: int) -> str:
        """Append one id and return the text it completes (often "", e.g. mid-character)."""
        self._ids.append(int(token_id))
        return self._advance(allow_partial=False)

    def flush(self) -> str:
        """Return whatever is still held back (such as a trailing U+FFFD that the model really produced)."""
        return self._advance(allow_partial=True)
