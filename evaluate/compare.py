"""`onnx-edge compare`: several variants of one model side by side — size, quality against a reference
(perplexity, KL divergence, top-1 agreement), greedy-generation agreement and speed. Torch-free.

Quality comes from `evaluate/quality.py` (token_windows, window_logits/log_softmax, score_window,
aggregate) and speed from `evaluate/bench.py` (bench() in a fresh process, or prompt_ids + measure +
result_from_runs in compare_speed.py's worker for foreign folders): this module only orchestrates them.
Variants come from compare_variants.py, genai_folder.py and llama_cpp_engine.py; the report and its table
from compare_report.py.

A variant is:
- an onnx-edge folder (manifest.json) -> engine "onnxruntime", loaded with `runtime.load`;
- an onnxruntime-genai folder (genai_config.json + model.onnx) -> engine "onnxruntime-genai": its I/O names,
  KV layout and special ids are read from genai_config.json into an in-memory Manifest and the graph runs
  through the same DecoderSession (position_ids may be absent; the graph must need no other input);
- a .gguf file -> engine "llama.cpp" through llama-cpp-python (optional extra `gguf-runtime`);
- a reference only: `pytorch:SOURCE` (the transformers model, float32), built by the CLI from
  onnx_edge.export.torch_reference and handed in as a ready Variant, so nothing here imports torch.

Every engine is "session-like" for quality.window_logits: `forward(ids, mask, positions, past)` returns
(logits, cache) and `empty_cache(batch)` the empty past; `greedy(ids, n)` returns n greedy tokens with eos
ignored. The reference runs first (its scored logits kept as float32, spilled to a temporary file when
large), then each variant is loaded alone, scored and released: only two models are ever in memory.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onnx_edge.evaluate.report import CompareReport, VariantResult
from onnx_edge.evaluate.speed import bench_worker, measure_speed
from onnx_edge.evaluate.variants import ENGINE_TORCH, CompareError, Variant, display_names
from onnx_edge.evaluate.cpu import cpu_isa


# Encoded by every variant's tokenizer: equal ids = the same tokenizer, for all practical purposes.
PROBE_TEXT = ("Hello, world! The quick brown fox jumps over 13 lazy dogs.\n\tdef f(x): return x ** 2  # ok\n"
              "naïve café, Straße, 東京, emoji 🙂, <b>tags</b> and   spaces.")
DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three uses of a paperclip.",
    "Translate 'good morning' into Spanish and German.",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the mountains,",
    "Give me one tip for writing clear emails.",
)
SPILL_BYTES = 1 << 30  # reference logits larger than this go to a temporary file instead of memory


# --------------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------------


@dataclass
class GenerationAgreement:
    """Greedy tokens (eos ignored) of a variant against the reference's on the same prompts."""

    prompts: int
    gen_tokens: int
    matched: list[int]  # per prompt: tokens equal to the reference's before the first divergence
    mean_matched: float
    min_matched: int
    identical: float  # share of prompts whose gen_tokens tokens all equal the reference's
    tokens: list[list[int]] = field(default_factory=list)


def agreement(reference: list[list[int]], candidate: list[list[int]], gen_tokens: int) -> GenerationAgreement:
    matched = []
    for ref, cand in zip(reference, candidate):
        n = 0
        for a, b in zip(ref, cand):
            if a != b:
                break
            n += 1
        matched.append(n)
    return GenerationAgreement(prompts=len(matched), gen_tokens=gen_tokens, matched=matched,
                               mean_matched=float(np.mean(matched)), min_matched=int(min(matched)),
                               identical=sum(m == gen_tokens for m in matched) / len(matched),
                               tokens=[list(c) for c in candidate])


@dataclass
class CompareOptions:
    text: str | None = None  # evaluation text (None: quality.evaluation_text())
    text_label: str = "pydoc_data.topics (evaluation half)"
    context: int = 256
    max_windows: int = 8
    prompts: list[str] | None = None
    gen_tokens: int = 32
    provider: str = "cpu"
    speed: bool = True
    prompt_tokens: int = 256
    bench_gen_tokens: int = 128
    runs: int = 3
    warmup: int = 1
    threads: int | None = None


def check_compatible(variants: list[Variant], reference: Variant) -> None:
    """One vocabulary and one tokenizer for all, or a one-line CompareError naming the odd one out."""
    for v in variants:
        if v.vocab_size != reference.vocab_size:
            raise CompareError(f"{v.name} has a vocabulary of {v.vocab_size} tokens but the reference "
                               f"{reference.name} has {reference.vocab_size}: compare needs variants of one model")
    probe = reference.encode(PROBE_TEXT)
    for v in variants:
        if v is reference or (v.tokenizer_sha256 and v.tokenizer_sha256 == reference.tokenizer_sha256):
            continue
        if v.encode(PROBE_TEXT) != probe:
            raise CompareError(f"{v.name} tokenizes differently from the reference {reference.name} "
                               f"(a probe text encodes to other ids): compare needs variants of one model")


def pick_reference(variants: list[Variant], reference: Variant | None) -> Variant:
    """--reference, else the fp32 variant, else the first one."""
    if reference is not None:
        return reference
    return next((v for v in variants if v.precision == "fp32"), variants[0])


def _check_positive(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CompareError(f"{name} must be an integer >= {low}, got {value!r}")


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (UTF-8); blank lines are skipped."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CompareError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise CompareError(f"{path}: {exc.strerror}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CompareError(f"{path}: no prompts (one per line)")
    return prompts


def encode_prompts(encoder: Variant, prompts: list[str]) -> tuple[list[list[int]], bool]:
    """Token ids of each prompt: the chat template applied when the encoding variant has one (as generate
    does by default), else the plain text with the tokenizer's special tokens."""
    if encoder.chat_template:
        from onnx_edge.runtime.chat import render_chat

        out = []
        for p in prompts:
            text = render_chat(encoder.chat_template, [{"role": "user", "content": p}], add_generation_prompt=True,
                               bos_token=encoder.bos_token, eos_token=encoder.eos_token)
            out.append(encoder.encode(text, False))
        return out, True
    return [encoder.encode(p, True) for p in prompts], False


class _Progress:
    """Thin wrapper over onnx_edge.progress.Steps (rich bar on stderr)."""

    def __init__(self, total: int, enabled: bool):
        from onnx_edge.progress import Steps

        self.steps = Steps(total, enabled=enabled, title="compare")

    def step(self, name: str):
        return self.steps.step(name)

    def close(self) -> None:
        self.steps.close()


class _LogitStore:
    """The reference's scored rows (float32 logits) for every window; in memory, or a temporary file when big."""

    def __init__(self, windows: int, context: int, vocab: int):
        from onnx_edge.evaluate.quality import scored_rows

        self.rows = scored_rows(context)
        self.context, self.vocab = context, vocab
        n_rows = len(range(context)[self.rows])
        shape = (windows, n_rows, vocab)
        self._tmp = None
        if math.prod(shape) * 4 > SPILL_BYTES:
            self._tmp = tempfile.TemporaryDirectory(prefix="onnx-edge-compare-")
            self.data = np.lib.format.open_memmap(os.path.join(self._tmp.name, "reference.npy"), mode="w+",
                                                  dtype=np.float32, shape=shape)
        else:
            self.data = np.empty(shape, dtype=np.float32)

    def put(self, i: int, logits: np.ndarray) -> None:
        self.data[i] = logits[self.rows]

    def logprobs(self, i: int) -> np.ndarray:
        """(context, vocab) log-probabilities, exact in the scored rows (the others are never read)."""
        from onnx_edge.evaluate.quality import log_softmax

        full = np.zeros((self.context, self.vocab), dtype=np.float32)
        full[self.rows] = self.data[i]
        return log_softmax(full)

    def close(self) -> None:
        self.data = None
        if self._tmp is not None:
            self._tmp.cleanup()


def compare(variants: list[Variant], reference: Variant | None = None, options: CompareOptions | None = None,
            progress: bool = False) -> CompareReport:
    """Score every variant against the reference (see the module docstring)."""
    from onnx_edge.evaluate.quality import aggregate, evaluation_text, log_softmax, score_window, token_windows

    opts = options or CompareOptions()
    start = time.perf_counter()
    if not variants:
        raise CompareError("give at least one variant")
    for name in ("context", "max_windows", "gen_tokens", "prompt_tokens", "runs"):
        _check_positive(name.replace("_", "-"), getattr(opts, name))
    _check_positive("bench-gen-tokens", opts.bench_gen_tokens, 2)
    paths = [os.path.realpath(v.path) for v in variants if v.path]
    if len(set(paths)) < len(paths):
        raise CompareError("the same variant is given twice")
    if reference is not None and reference.path:  # --reference naming one of the variants: that variant
        same = [v for v in variants if v.path and os.path.realpath(v.path) == os.path.realpath(reference.path)]
        reference = same[0] if same else reference
    ref = pick_reference(variants, reference)
    ref_in_list = any(v is ref for v in variants)
    rows = variants if ref_in_list else [ref] + list(variants)
    display_names(rows)
    check_compatible(rows, ref)

    context = min([opts.context] + [v.context_length for v in rows])
    text = opts.text if opts.text is not None else evaluation_text()
    encoder = next((v for v in [ref] + rows if v.kind in ("onnx-edge", "genai")), ref)
    windows = token_windows(_Encoder(ref), text, context, opts.max_windows)
    prompts = list(opts.prompts) if opts.prompts is not None else list(DEFAULT_PROMPTS)
    if not prompts:
        raise CompareError("no prompts")
    prompt_ids, chat = encode_prompts(encoder, prompts)
    needed = max(len(p) for p in prompt_ids) + opts.gen_tokens
    for v in rows:
        if needed > v.context_length:
            raise CompareError(f"the longest prompt ({needed - opts.gen_tokens} tokens) + {opts.gen_tokens} generated "
                               f"tokens exceed {v.name}'s context of {v.context_length}; use shorter prompts or "
                               f"fewer --gen-tokens")
    speed_rows = [v for v in rows if v.engine != ENGINE_TORCH] if opts.speed else []
    if opts.speed:
        from onnx_edge.evaluate.bench import check_sizes

        for v in speed_rows:
            check_sizes(opts.prompt_tokens, opts.bench_gen_tokens, opts.runs, opts.warmup, v.context_length)

    n_windows, n_prompts = len(windows), len(prompt_ids)
    others = [v for v in rows if v is not ref]
    total = (1 + len(others)) * (n_windows + n_prompts + 1) + len(speed_rows)
    bar = _Progress(total, progress)
    open_ctx = max(context, needed)
    store = _LogitStore(n_windows, context, ref.vocab_size)
    results: dict[int, VariantResult] = {}
    try:
        # 1. the reference: its scored logits and greedy tokens, kept; its own row scores it against itself.
        with bar.step(f"load {ref.name} (reference)"):
            engine = ref.open(open_ctx)
        def score_ref(i, window, logits):
            store.put(i, logits)
            logp = store.logprobs(i)
            return score_window(logp, logp, window)

        try:
            scores, ref_tokens = _evaluate(engine, f"{ref.name} (reference)", windows, prompt_ids, bar,
                                           opts.gen_tokens, score_ref)
        finally:
            engine.close()
            del engine
        ref_quality = aggregate(scores, context, opts.text_label)
        results[id(ref)] = VariantResult(ref.describe(), True, ref_quality.to_dict(),
                                         asdict(agreement(ref_tokens, ref_tokens, opts.gen_tokens)))
        # 2. each variant alone against the stored reference.
        for v in others:
            with bar.step(f"load {v.name}"):
                engine = v.open(open_ctx)
            try:
                scores, tokens = _evaluate(engine, v.name, windows, prompt_ids, bar, opts.gen_tokens,
                                           lambda i, window, logits: score_window(store.logprobs(i),
                                                                                  log_softmax(logits), window))
            finally:
                engine.close()
                del engine
            results[id(v)] = VariantResult(v.describe(), False, aggregate(scores, context, opts.text_label).to_dict(),
                                           asdict(agreement(ref_tokens, tokens, opts.gen_tokens)))
        # 3. speed, each model in a fresh process (bench's own measurement).
        for v in rows:
            if not opts.speed:
                results[id(v)].speed_note = "skipped (--no-speed)"
                continue
            if v.engine == ENGINE_TORCH:
                results[id(v)].speed_note = "not measured for the PyTorch reference"
                continue
            with bar.step(f"speed: {v.name}"):
                results[id(v)].speed = measure_speed(v, opts).to_dict()
    finally:
        store.close()
        bar.close()
    ordered = [results[id(v)] for v in rows]
    return CompareReport(
        reference=ref.describe(), variants=ordered, text=opts.text_label, scoring=ref_quality.scoring,
        context=context, windows=n_windows, scored_tokens=ref_quality.tokens, prompts=prompts, chat=chat,
        gen_tokens=opts.gen_tokens,
        speed=(dict(provider=opts.provider, prompt_tokens=opts.prompt_tokens, gen_tokens=opts.bench_gen_tokens,
                    runs=opts.runs, warmup=opts.warmup) if opts.speed else None),
        created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), seconds=round(time.perf_counter() - start, 2),
        versions=_versions(), machine=cpu_isa())


def _evaluate(engine, label: str, windows, prompt_ids, bar, gen_tokens: int, score):
    """One engine over every window (`score(i, window, logits)` -> WindowScore) and every prompt (greedy)."""
    from onnx_edge.evaluate.quality import window_logits

    scores = []
    for i, window in enumerate(windows):
        with bar.step(f"{label}: window {i + 1}/{len(windows)}"):
            scores.append(score(i, window, window_logits(engine, window)))
    tokens = []
    for j, ids in enumerate(prompt_ids):
        with bar.step(f"{label}: prompt {j + 1}/{len(prompt_ids)}"):
            tokens.append(engine.greedy(ids, gen_tokens))
    return scores, tokens


class _Encoder:
    """A Variant as the `tokenizer` quality.token_windows expects (`.encode(text, add_special_tokens).ids`)."""

    def __init__(self, variant: Variant):
        self.variant = variant

    def encode(self, text: str, add_special_tokens: bool = False):
        return _Ids(self.variant.encode(text, add_special_tokens))


@dataclass
class _Ids:
    ids: list[int]


def _versions() -> dict[str, str]:
    """Library versions (bench's list, plus the optional engines this process actually used)."""
    import importlib.metadata as md

    from onnx_edge.evaluate.bench import _versions as bench_versions

    found = bench_versions()
    for module, dist in (("llama_cpp", "llama-cpp-python"), ("torch", "torch"), ("transformers", "transformers")):
        if module in sys.modules:
            try:
                found[dist] = md.version(dist)
            except md.PackageNotFoundError:
                pass
    return found


if __name__ == "__main__":
    sys.exit(bench_worker())
