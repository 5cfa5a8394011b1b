"""The decoder's onnxruntime session: feeds input ids, mask, positions and the KV cache, returns
logits and the new cache. Names come from the manifest, never from guesses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnx_edge.manifest import Manifest
from onnx_edge.models.spec import ModelShape
from onnx_edge.runtime.providers import ORT_NAMES, import_ort

KV = list[tuple[np.ndarray, np.ndarray]]  # per layer (key, value), each (B, kv_heads, T, head_dim)


class DecoderSession:
    def __init__(self, folder: Path, manifest: Manifest, provider: str = "cpu", threads: int | None = None,
                 model_bytes: bytes | None = None):
        """`model_bytes` runs an in-memory graph (weights embedded) under the folder's manifest: quantize's
        sensitivity search tries many graphs without writing each to disk."""
        ort = import_ort()
        self.manifest = manifest
        self.shape = ModelShape.from_dict(manifest.architecture)
        self.io = manifest.io
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3  # warnings about unused initializers etc. are not the user's concern
        model = model_bytes if model_bytes is not None else str(folder / manifest.model_file)
        self.session = ort.InferenceSession(model, sess_options=opts,
                                            providers=[ORT_NAMES[provider]])
        n = self.shape.num_layers
        self.past_names = [(self.io.past_key.format(i=i), self.io.past_value.format(i=i)) for i in range(n)]
        self.output_names = [self.io.logits] + [name for i in range(n) for name in
                                                (self.io.present_key.format(i=i), self.io.present_value.format(i=i))]
        self.kv_dtype = np.dtype(self.io.kv_dtype)
        self.uses_positions = self.io.position_ids is not None

    def empty_cache(self, batch: int) -> KV:
        empty = np.zeros((batch, self.shape.num_kv_heads, 0, self.shape.head_dim), dtype=self.kv_dtype)
        return [(empty, empty) for _ in range(self.shape.num_layers)]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: KV) -> tuple[np.ndarray, KV]:
        """input_ids/position_ids (B, S), attention_mask (B, past + S) -> logits (B, S, vocab), new cache."""
        feed = {self.io.input_ids: np.ascontiguousarray(input_ids, dtype=np.int64),
                self.io.attention_mask: np.ascontiguousarray(attention_mask, dtype=np.int64)}
        if self.uses_positions:
            feed[self.io.position_ids] = np.ascontiguousarray(position_ids, dtype=np.int64)
        for (k_name, v_name), (k, v) in zip(self.past_names, past):
            feed[k_name], feed[v_name] = k, v
        outs = self.session.run(self.output_names, feed)
        cache = [(outs[1 + 2 * i], outs[2 + 2 * i]) for i in range(self.shape.num_layers)]
        return outs[0], cache
