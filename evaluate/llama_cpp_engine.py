""".gguf files as compare variants, run by llama.cpp through llama-cpp-python (optional extra `gguf-runtime`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from onnx_edge.evaluate.variants import ENGINE_LLAMA, GGUF_EXTRA, MB, CompareError, Variant


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


def gguf_variant(spec: str, path: Path, threads: int | None) -> Variant:
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

    def encoder(text: str, special: bool) -> list[int]:
        return list(vocab.tokenize(text.encode("utf-8"), add_bos=special, special=False))

    def opener(context: int):
        return LlamaEngine(path, context, threads)

    return Variant(spec=spec, name=path.name, kind="gguf", engine=ENGINE_LLAMA, path=str(path),
                   precision=f"gguf {label}", size_mb=path.stat().st_size / MB, vocab_size=int(vocab.n_vocab()),
                   context_length=context_length, encoder=encoder, opener=opener)


class LlamaEngine:
    """llama-cpp-python with logits for every position (logits_all) behind the engine interface."""

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

    def greedy(self, ids: list[int], n: int) -> list[int]:
        self._run(ids)
        out: list[int] = []
        for i in range(n):
            out.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
            if i < n - 1:
                self.llm.eval([out[-1]])
        return out

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
