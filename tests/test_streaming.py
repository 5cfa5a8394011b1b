"""Streaming detokenization: pieces join to the full decode and never hold half a UTF-8 character."""

from pydoc_data.topics import topics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from onnx_edge.runtime.streaming import StreamDetokenizer

EMOJI = "👩‍👩‍👧 家族 🚀 naïve café"
CHINESE = "我们的家族住在一个小村庄里，每天早上都会喝茶。"
ASCII = "def main():\n    return 'hello, world'  # done\n"
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def byte_bpe():
    # A small byte-level BPE (like GPT-2's) trained on Python's bundled docs: with ~400 tokens,
    # most non-ASCII characters are spread over several byte tokens.
    text = "".join(topics[k] for k in sorted(topics))[:20000]
    extra = "家族 中文 汉字 日本語 naïve café 🚀 " * 3  # a few merges inside multi-byte characters
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text, extra], trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def sentencepiece_like():
    # Llama-style: Metaspace "▁" words, byte fallback for unknown characters, leading space stripped
    # on decode. Its decode of a token changes when the token starts the text, which the window handles.
    vocab = {"<unk>": 0, EOS: 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)}}
    for word in ["▁", "▁the", "▁cat", "▁sat", "s", "a", "t", "h", "e", "c", "▁a"]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([EOS])
    return tok


def _stream(tok, ids, skip_special_tokens=True):
    stream = StreamDetokenizer(tok, skip_special_tokens=skip_special_tokens)
    pieces = [stream.add(i) for i in ids]
    pieces.append(stream.flush())
    return pieces


@pytest.mark.parametrize("text", [EMOJI, CHINESE, ASCII, EMOJI + "\n" + CHINESE + ASCII])
def test_pieces_join_to_full_decode(byte_bpe, text):
    ids = byte_bpe.encode(text).ids
    # The test is only meaningful if characters really are split over tokens.
    assert text.isascii() or any("\ufffd" in byte_bpe.decode([i]) for i in ids)
    pieces = _stream(byte_bpe, ids)
    assert "".join(pieces) == byte_bpe.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[-1] == ""  # nothing left over: every character completed during add()


def test_special_tokens_skipped_or_kept(byte_bpe):
    ids = byte_bpe.encode("café").ids + [byte_bpe.token_to_id(EOS)]
    assert "".join(_stream(byte_bpe, ids)) == "café"
    assert "".join(_stream(byte_bpe, ids, skip_special_tokens=False)) == "café" + EOS


def test_unfinished_character_comes_out_at_flush(byte_bpe):
    # Cut a 4-byte emoji in half: the model "stopped" mid-character.
    ids = byte_bpe.encode("ok 🚀").ids[:-1]
    full = byte_bpe.decode(ids)
    assert full.endswith("\ufffd")
    stream = StreamDetokenizer(byte_bpe)
    streamed = "".join(stream.add(i) for i in ids)
    assert "\ufffd" not in streamed
    assert streamed + stream.flush() == full


def test_window_stays_short(byte_bpe):
    # Per-token cost is O(window): the detokenizer must not keep the whole history.
    stream = StreamDetokenizer(byte_bpe)
    for i in byte_bpe.encode(ASCII * 50 + CHINESE * 20).ids:
        stream.add(i)
        assert len(stream._ids) <= 16


def test_sentencepiece_style_decoder(sentencepiece_like):
    text = "the cat sat 家族 🚀 a"
    ids = sentencepiece_like.encode(text).ids
    pieces = _stream(sentencepiece_like, ids)
    assert "".join(pieces) == sentencepiece_like.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_random_text_round_trips(byte_bpe, text):
    ids = byte_bpe.encode(text).ids
    pieces = _stream(byte_bpe, ids)
    assert "".join(pieces) == byte_bpe.decode(ids) == text
    if "\ufffd" not in text:
        assert not any("\ufffd" in p for p in pieces)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(min_value=0, max_value=399), max_size=30))
def test_random_ids_match_full_decode(byte_bpe, ids):
    # Arbitrary ids make invalid UTF-8 too; the stream must still agree with the lossy full decode.
    for skip in (True, False):
        assert "".join(_stream(byte_bpe, ids, skip)) == byte_bpe.decode(ids, skip_special_tokens=skip)
