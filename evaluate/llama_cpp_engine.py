""".gguf files as compare variants, run by llama.cpp through llama-cpp-python (optional extra `gguf-runtime`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from onnx_edge.evaluate.bench import MB, BenchParams, BenchResult, bench_result, prompt_ids, repeat, timed_run
from onnx_edge.evaluate.engine import SPEED_WORKER, CompareError, Variant

GGUF_EXTRA = "gguf-runtime"
# GGUF general.file_type -> llama.cpp's name for the file's main quantization.
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
                   11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
                   18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 24: "IQ1_S", 25: "IQ4_NL", 30: "IQ4_XS", 32: "BF16"}


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise CompareError(f"a .gguf variant needs llama-cpp-python, which is not installed: "
                           f"pip install 'onnx-edge-kit[{GGUF_EXTRA}]'") from None
    return llama_cpp


class _QuietStderr:
    """llama.cpp logs from C straight to file descriptor 2 even with verbose=False: hide it while loading."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(self._null, 2)
        except (OSError, ValueError):
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            os.close(self._null)


@dataclass(frozen=True)
class LlamaTokenizer:
    """llama.cpp's vocabulary behind the one call compare and bench make of a `tokenizers.Tokenizer`."""

    vocab: object  # a vocab_only llama_cpp.Llama

    def encode(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(ids=list(self.vocab.tokenize(text.encode("utf-8"), add_bos=add_special_tokens,
                                                            special=False)))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.vocab.detokenize(list(ids), special=not skip_special_tokens).decode("utf-8", "replace")


@dataclass(frozen=True, kw_only=True, eq=False)
class GgufVariant(Variant):
    """A .gguf file, run by llama.cpp."""

    kind = "gguf"
    engine = "llama.cpp"
    speed_worker = SPEED_WORKER
    threads: int | None = None

    def open(self, context: int) -> LlamaEngine:
        return LlamaEngine(Path(self.path), context, self.threads)

    def bench_here(self, params: BenchParams) -> BenchResult:
        """bench's protocol on llama.cpp (the speed worker calls it): the same prompt ids, greedy, eos ignored,
        prefill -> first token = TTFT."""
        params.check_context(self.context_length)
        ids = prompt_ids(self.tokenizer, params.prompt_tokens, self.vocab_size)
        start = time.perf_counter()
        engine = self.open(params.prompt_tokens + params.gen_tokens)
        load_s = time.perf_counter() - start
        timings = repeat(lambda: timed_run(engine.tokens(ids, params.gen_tokens), len(ids), params.gen_tokens),
                         params)
        size = Path(self.path).stat().st_size
        return bench_result(timings, params, path=self.path, precision=self.precision, provider="cpu", load_s=load_s,
                            ids=ids, size_bytes=size, weight_bytes=size, context_length=self.context_length)


def gguf_variant(spec: str, path: Path, threads: int | None) -> GgufVariant:
    llama_cpp = import_llama_cpp()
    with _QuietStderr():
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    meta = getattr(vocab, "metadata", {}) or {}
    file_type = meta.get("general.file_type")
    try:
        label = GGUF_FILE_TYPES.get(int(file_type), f"type {file_type}") if file_type is not None else "?"
    except ValueError:
        label = str(file_type)
    arch = meta.get("general.architecture", "")
    try:
        context_length = int(meta.get(f"{arch}.context_length") or 0)
    except ValueError:
        context_length = 0
    if context_length <= 0:
        raise CompareError(f"{path}: the GGUF metadata has no {arch or '<architecture>'}.context_length")
    return GgufVariant(spec=spec, name=path.name, path=str(path), precision=f"gguf {label}",
                       size_mb=path.stat().st_size / MB, vocab_size=int(vocab.n_vocab()), context_length=context_length,
                       tokenizer=LlamaTokenizer(vocab), threads=threads)


class LlamaEngine:
    """llama-cpp-python with logits for every position (logits_all) behind the Engine protocol."""

    def __init__(self, path: Path, context: int, threads: int | None = None):
        llama_cpp = import_llama_cpp()
        from onnx_edge.runtime.session import physical_cores

        kwargs = dict(model_path=str(path), logits_all=True, n_ctx=max(int(context), 8), verbose=False,
                      n_threads=threads or physical_cores())
        with _QuietStderr():
            self.llm = llama_cpp.Llama(**kwargs)

    def _run(self, ids: list[int]) -> None:
        self.llm.reset()
        self.llm.eval([int(t) for t in ids])

    def forward(self, input_ids, attention_mask, position_ids, past):
        if input_ids.shape[0] != 1 or past is not None:
            raise CompareError("the llama.cpp engine scores one window at a time from an empty cache")
        ids = [int(t) for t in input_ids[0]]
        self._run(ids)
        logits = np.array(self.llm.scores[:len(ids)], dtype=np.float32)
        return logits[None], None

    def empty_cache(self, batch: int):
        return None

    def tokens(self, ids: list[int], n: int) -> Iterator[int]:
        """The one greedy loop: n tokens after `ids` from a fresh context, eos ignored, lazily (bench times it)."""
        self._run(ids)
        for i in range(n):
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            yield token
            if i < n - 1:  # the last token is never fed back
                self.llm.eval([token])

    def greedy(self, ids: list[int], n: int) -> list[int]:
        return list(self.tokens(ids, n))

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
