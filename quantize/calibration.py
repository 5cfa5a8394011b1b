"""Calibration inputs for static int8 and GPTQ: token windows from calibration text, fed to the
decoder with an empty KV cache (the prefill path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnx_edge.errors import EdgeError
from onnx_edge.manifest import Manifest
from onnx_edge.models.spec import ModelShape
from onnx_edge.evaluate.quality import calibration_text, evaluation_text
from onnx_edge.textfile import read_utf8


def texts(text_file: str | Path | None) -> tuple[str, str, str]:
    """(calibration, evaluation, label). A user file is split in two halves so the texts stay apart."""
    if text_file is None:
        return calibration_text(), evaluation_text(), "pydoc_data.topics"
    path = Path(text_file)
    text = read_utf8(path, EdgeError)
    if len(text.strip()) < 200:
        raise EdgeError(f"{path}: too little text to calibrate and evaluate on (need at least a few paragraphs)")
    half = len(text) // 2
    return text[:half], text[half:], str(path)


def decoder_feeds(manifest: Manifest, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One feed dict per window: the full graph inputs with an empty past."""
    shape = ModelShape.from_dict(manifest.architecture)
    io = manifest.io
    empty = np.zeros((1, shape.num_kv_heads, 0, shape.head_dim), dtype=np.dtype(io.kv_dtype))
    feeds = []
    for w in windows:
        ids = w[None].astype(np.int64)
        feed = {io.input_ids: ids, io.attention_mask: np.ones_like(ids)}
        if io.position_ids:
            feed[io.position_ids] = np.arange(ids.shape[1], dtype=np.int64)[None]
        for i in range(shape.num_layers):
            feed[io.past_key.format(i=i)] = empty
            feed[io.past_value.format(i=i)] = empty
        feeds.append(feed)
    return feeds


class FeedReader:
    """onnxruntime.quantization.CalibrationDataReader over prepared feeds (re-iterable via rewind)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds, self._i = feeds, 0

    def get_next(self):
        if self._i >= len(self.feeds):
            return None
        self._i += 1
        return self.feeds[self._i - 1]

    def rewind(self):
        self._i = 0

    def __iter__(self):  # GPTQ iterates the reader directly
        return iter(self.feeds)

    def __deepcopy__(self, memo):
        return FeedReader(self.feeds)
