"""What compare runs every model through: the Engine protocol, the Variant each kind of model path extends
(onnx-edge folder in variants.py, onnxruntime-genai folder, .gguf file, the PyTorch reference in export/),
and the onnxruntime variant and engine behind onnx-edge and genai folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from onnx_edge.errors import EdgeError

if TYPE_CHECKING:
    import numpy as np

    from onnx_edge.evaluate.bench import BenchParams, BenchResult

SPEED_WORKER = "onnx_edge.evaluate.speed"  # measures a genai folder or .gguf file in a fresh process


class CompareError(EdgeError):
    """Variants that cannot be compared (other vocabulary or tokenizer, unknown kind, missing extra)."""


class Engine(Protocol):
    """A loaded variant. "Session-like" for quality.window_logits: forward + empty_cache."""

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: Any) -> tuple[np.ndarray, Any]:
        """(B, S) ids and positions, (B, past + S) mask, a cache -> ((B, S, vocab) logits, the new cache)."""

    def empty_cache(self, batch: int) -> Any:
        """The cache forward() starts a window from."""

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """Exactly n greedy tokens after `ids` (eos ignored)."""

    def close(self) -> None:
        """Release the model: compare keeps only two in memory."""


@dataclass(frozen=True, kw_only=True, eq=False)
class Variant:
    """What compare knows about one model before loading it (cheap: no weights read). A subclass per kind says
    how to open it; its class attributes are what the report records and which worker times it."""

    kind: ClassVar[str]  # "onnx-edge", "genai", "gguf", "pytorch"
    engine: ClassVar[str]  # what runs it: "onnxruntime", "onnxruntime-genai", "llama.cpp", "pytorch"
    # Its tokenizer and chat template are the runtime's own (what generate uses): preferred to encode prompts.
    runtime_tokenizer: ClassVar[bool] = False
    speed_worker: ClassVar[str | None] = None  # module whose worker measures it (`python -m`); None: not measured
    speed_note: ClassVar[str | None] = None  # the report's note where speed_worker is None

    spec: str  # what the user typed
    name: str  # display name
    path: str | None
    precision: str  # "fp32", "int4 weight_only rtn b32 asym", "gguf Q4_1 blocks", ...
    size_mb: float | None
    vocab_size: int
    context_length: int
    tokenizer_sha256: str | None = None  # of tokenizer.json, where there is one
    tokenizer: Any = field(default=None, repr=False)  # what `.encode(text, add_special_tokens).ids` encodes with
    chat_template: str | None = field(default=None, repr=False)
    bos_token: str = ""
    eos_token: str = ""
    # an onnx-edge folder's own quantize report: {"kl", "top1", "measured_on", "cpu_dependent"}
    recorded: dict | None = None
    model: str | None = None  # the model it was made from (the export's source), where known
    weights_note: str | None = None  # manifest.weights_note: how to read numbers measured against it

    def encode(self, text: str, special: bool = False) -> list[int]:
        """Token ids; `special` adds the tokenizer's own special tokens (BOS) like generate does."""
        return list(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def decode(self, ids: list[int]) -> str:
        """The answer in generated ids (the report's sample): their text up to the end-of-turn token, since the
        greedy run ignores eos and goes on into the template's next turn."""
        text = self.tokenizer.decode([int(t) for t in ids], skip_special_tokens=False)
        if self.eos_token and self.eos_token in text:
            text = text[:text.index(self.eos_token)]
        return text.strip()

    def open(self, context: int) -> Engine:
        """Load the model for windows and prompts of up to `context` tokens."""
        raise NotImplementedError

    def speed(self, params: BenchParams) -> BenchResult:
        """bench's measurement in a fresh process (speed_worker), so its peak RSS is this model's alone."""
        from onnx_edge.evaluate.bench import run_worker

        return run_worker(self.speed_worker, self.path, params, CompareError)

    def describe(self) -> dict:
        return {"spec": self.spec, "name": self.name, "kind": self.kind, "engine": self.engine, "path": self.path,
                "precision": self.precision, "size_mb": self.size_mb, "vocab_size": self.vocab_size,
                "context_length": self.context_length, "tokenizer_sha256": self.tokenizer_sha256,
                "recorded": self.recorded, "model": self.model, "weights_note": self.weights_note}


@dataclass(frozen=True, kw_only=True, eq=False)
class OrtVariant(Variant):
    """A folder onnxruntime runs through our DecoderSession and decode loop (onnx-edge, onnxruntime-genai)."""

    runtime_tokenizer = True
    provider: str = "auto"  # auto: the provider the folder targets
    threads: int | None = None

    def load(self):
        """The folder as a runtime EdgeModel."""
        raise NotImplementedError

    def open(self, context: int) -> OrtEngine:
        return OrtEngine(self.load())

    def bench_here(self, params: BenchParams) -> BenchResult:
        """bench's measurement in this process (what a speed worker runs)."""
        from onnx_edge.evaluate.bench import bench_model

        return bench_model(self.load, params)


class OrtEngine:
    """An EdgeModel (onnx-edge or genai folder) behind the Engine protocol."""

    def __init__(self, model):
        self.model = model
        self.session = model.session
        # Every prompt runs from an empty cache: a prefix kept from the previous prompt would make the
        # comparison depend on prompt order.
        self.session.reuse_prefix = False

    def forward(self, input_ids, attention_mask, position_ids, past):
        return self.session.forward(input_ids, attention_mask, position_ids, past)

    def empty_cache(self, batch: int):
        return self.session.empty_cache(batch)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        from onnx_edge.runtime.generate import decode_steps
        from onnx_edge.runtime.sampling import SamplingParams

        # decode_steps never stops at eos (stream_generate does), so exactly n tokens come out.
        return [int(step[0]) for step in decode_steps(self.model, [list(ids)], SamplingParams(temperature=0.0), n)]

    def close(self) -> None:
        self.model = self.session = None
