"""`onnx-edge compare --reference pytorch:SOURCE`: the PyTorch model itself (transformers, float32) as the
reference, behind compare's Engine protocol (onnx_edge.evaluate.engine: forward -> logits for a window,
empty_cache, greedy). Lives in export/ because it imports torch; the CLI imports it only for `pytorch:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch  # at the top, so a missing torch fails the CLI's import with the extra's name

from onnx_edge.export.sources import resolve_source
from onnx_edge.export.torch_model import load_model
from onnx_edge.evaluate.engine import Variant

PREFIX = "pytorch:"


class TorchEngine:
    def __init__(self, loaded):
        self.loaded = loaded

    def forward(self, input_ids, attention_mask, position_ids, past):
        if past is not None:
            raise ValueError("the PyTorch reference scores windows from an empty cache only")
        with torch.no_grad():
            out = self.loaded.model(input_ids=torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
                                    attention_mask=torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)),
                                    position_ids=torch.from_numpy(np.asarray(position_ids, dtype=np.int64)),
                                    use_cache=False)
        return out.logits.float().numpy(), None

    def empty_cache(self, batch: int):
        return None

    def greedy(self, ids: list[int], n: int) -> list[int]:
        from onnx_edge.export.validate import _greedy_torch  # export validation's own greedy loop

        with torch.no_grad():
            tokens, _ = _greedy_torch(self.loaded.model, np.asarray([ids], dtype=np.int64), n)
        return tokens

    def close(self) -> None:
        self.loaded = None


@dataclass(frozen=True, kw_only=True, eq=False)
class TorchVariant(Variant):
    """The transformers model as the reference; loaded when described, handed to the first open()."""

    kind = "pytorch"
    engine = "pytorch"
    speed_note = "not measured for the PyTorch reference"
    source: object = field(repr=False)  # resolve_source's answer, to load the model again
    holder: dict = field(repr=False)  # {"loaded": the loaded model, or None once an engine has it}

    def open(self, context: int) -> TorchEngine:
        if self.holder["loaded"] is None:  # opened a second time: load again
            self.holder["loaded"] = load_model(self.source)
        engine, self.holder["loaded"] = TorchEngine(self.holder["loaded"]), None
        return engine


def torch_variant(spec: str) -> TorchVariant:
    """A Variant for `pytorch:SOURCE` (SOURCE as for `onnx-edge export`). Loads the model now."""
    text = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    source = resolve_source(text)
    loaded = load_model(source)
    cfg = loaded.config
    tok = loaded.tokenizer
    context = cfg.get("max_position_embeddings") or cfg.get("n_positions") or cfg.get("n_ctx") or 2048

    def token_str(value) -> str:
        return value if isinstance(value, str) else ""

    return TorchVariant(spec=spec, name=f"{PREFIX}{Path(text).name or text}", path=None,
                        precision="fp32 (transformers)", size_mb=None, vocab_size=int(cfg["vocab_size"]),
                        context_length=int(context), tokenizer=tok.backend_tokenizer,
                        chat_template=getattr(tok, "chat_template", None) or None,
                        bos_token=token_str(getattr(tok, "bos_token", "")),
                        eos_token=token_str(getattr(tok, "eos_token", "")), source=source,
                        holder={"loaded": loaded})
