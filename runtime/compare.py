"""`onnx-edge compare`: several variants of one model side by side — size, quality against a reference
(perplexity, KL divergence, top-1 agreement), greedy-generation agreement and speed. Torch-free.

Quality comes from `runtime/quality.py` (token_windows, window_logits/log_softmax, score_window,
aggregate) and speed from `runtime/bench.py` (bench() in a fresh process, or prompt_ids + measure +
result_from_runs in this module's worker for foreign folders): this module only orchestrates them.

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

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onnx_edge.errors import EdgeError

ENGINE_ORT = "onnxruntime"
ENGINE_GENAI = "onnxruntime-genai"
ENGINE_LLAMA = "llama.cpp"
ENGINE_TORCH = "pytorch"
GGUF_EXTRA = "gguf-runtime"
GENAI_CONFIG = "genai_config.json"
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
MB = 1e6


class CompareError(EdgeError):
    """Variants that cannot be compared (other vocabulary or tokenizer, unknown kind, missing extra)."""


# --------------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """What compare knows about one model before loading it (cheap: no weights read)."""

    spec: str  # what the user typed
    name: str  # display name
    kind: str  # "onnx-edge" | "genai" | "gguf" | "pytorch"
    engine: str  # ENGINE_*
    path: str | None
    precision: str  # "fp32", "int4 weight_only rtn b32 asym", "gguf Q4_1 blocks", ...
    size_mb: float | None
    vocab_size: int
    context_length: int
    tokenizer_sha256: str | None = None  # of tokenizer.json, where there is one
    # encode(text, special) -> ids; `special` adds the tokenizer's own special tokens (BOS) like generate does
    encoder: Callable[[str, bool], list[int]] | None = field(default=None, repr=False)
    opener: Callable[..., object] | None = field(default=None, repr=False)  # (context_needed) -> engine
    chat_template: str | None = field(default=None, repr=False)
    bos_token: str = ""
    eos_token: str = ""

    def encode(self, text: str, special: bool = False) -> list[int]:
        return list(self.encoder(text, special))

    def open(self, context: int):
        return self.opener(context)

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in ("spec", "name", "kind", "engine", "path", "precision", "size_mb",
                                              "vocab_size", "context_length", "tokenizer_sha256")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _folder_size(folder: Path) -> tuple[float, dict[str, int]]:
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    return sum(sizes.values()) / MB, sizes


def precision_label(manifest) -> str:
    """The precision/scheme of an onnx-edge folder, from its manifest."""
    q = manifest.quantization
    if not q:
        return manifest.precision
    if q.get("method") == "gguf_blocks":
        kinds = sorted({str(w.get("qtype")) for w in (q.get("weights") or {}).values()
                        if isinstance(w, dict) and w.get("status") == "imported"})
        return f"gguf {'/'.join(kinds) or manifest.precision} blocks" + (" (exact)" if q.get("exact") else "")
    cfg = q.get("config") or {}
    label = f"{cfg.get('precision', manifest.precision)} {cfg.get('scheme', '')}".strip()
    if cfg.get("scheme") == "weight_only":
        label += (f" {cfg.get('algorithm')} b{cfg.get('block_size')} "
                  f"{'sym' if cfg.get('symmetric') else 'asym'}")
        if cfg.get("accuracy_level"):
            label += f" acc{cfg['accuracy_level']}"
    elif cfg.get("scheme") == "static":
        label += f" {cfg.get('calibration')}"
    kept = (q.get("sensitivity") or {}).get("kept") or cfg.get("keep") or []
    if kept:
        label += f" (+{len(kept)} kept)"
    return label


def _tokenizer_encoder(tokenizer) -> Callable[[str, bool], list[int]]:
    return lambda text, special: tokenizer.encode(text, add_special_tokens=special).ids


def _display_names(variants: list[Variant]) -> None:
    """Folder names, made longer only where two would read the same."""
    names = [v.name for v in variants]
    if len(set(names)) == len(names):
        return
    for v in variants:
        if v.path:
            p = Path(v.path)
            v.name = f"{p.parent.name}/{p.name}"
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        for v in variants:
            v.name = v.spec


def describe(spec: str, provider: str = "cpu", threads: int | None = None) -> Variant:
    """A Variant for a path: onnx-edge folder, onnxruntime-genai folder or .gguf file."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise CompareError(f"{spec}: no such file or folder")
    if path.is_dir():
        if (path / "manifest.json").exists():
            return _onnx_edge_variant(spec, path, provider, threads)
        if (path / GENAI_CONFIG).exists():
            return _genai_variant(spec, path, provider, threads)
        raise CompareError(f"{spec}: not a model folder (no manifest.json from onnx-edge export, "
                           f"no {GENAI_CONFIG} from onnxruntime-genai)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if path.suffix.lower() == ".gguf" or magic == b"GGUF":
        return _gguf_variant(spec, path, threads)
    raise CompareError(f"{spec}: not a model folder or a .gguf file")


# -- onnx-edge folders ----------------------------------------------------------------------------------


def _onnx_edge_variant(spec: str, folder: Path, provider: str, threads: int | None) -> Variant:
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.tokenizer import load_tokenizer

    m = read_manifest(folder)
    tok_file = m.tokenizer.get("file", "tokenizer.json")
    tok = load_tokenizer(folder, tok_file)

    def opener(context: int):
        from onnx_edge.runtime.model import load

        return OrtEngine(load(folder, provider=provider, threads=threads))

    return Variant(spec=spec, name=folder.resolve().name, kind="onnx-edge", engine=ENGINE_ORT, path=str(folder),
                   precision=precision_label(m), size_mb=sum(e.size for e in m.files.values()) / MB,
                   vocab_size=int(m.architecture["vocab_size"]), context_length=int(m.architecture["context_length"]),
                   tokenizer_sha256=(m.files[tok_file].sha256 if tok_file in m.files else _sha256(folder / tok_file)),
                   encoder=_tokenizer_encoder(tok.tokenizer), opener=opener,
                   chat_template=load_chat_template(folder), bos_token=tok.bos_token, eos_token=tok.eos_token)


class OrtEngine:
    """An EdgeModel (onnx-edge or genai folder) behind the engine interface."""

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


# -- onnxruntime-genai folders --------------------------------------------------------------------------


def _genai_fail(folder: Path, what: str) -> CompareError:
    return CompareError(f"{folder}: {GENAI_CONFIG} {what}")


def read_genai_config(folder: Path) -> dict:
    """The parts of genai_config.json compare needs, checked: I/O names, KV layout, special ids, sizes."""
    path = folder / GENAI_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: unreadable ({exc})") from None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    dec = model.get("decoder") if isinstance(model, dict) else None
    if not isinstance(dec, dict):
        raise _genai_fail(folder, "has no model.decoder section")
    ins, outs = dec.get("inputs") or {}, dec.get("outputs") or {}
    if "past_names" in ins or "present_names" in outs:
        raise _genai_fail(folder, "uses a combined key/value cache (past_names); compare needs separate "
                                  "past_key_names / past_value_names")
    for key, where in (("input_ids", ins), ("attention_mask", ins), ("past_key_names", ins),
                       ("past_value_names", ins), ("logits", outs), ("present_key_names", outs),
                       ("present_value_names", outs)):
        if not isinstance(where.get(key), str) or not where[key]:
            raise _genai_fail(folder, f"lacks decoder {'inputs' if where is ins else 'outputs'}.{key}")
    for key in ("past_key_names", "past_value_names"):
        if "%d" not in ins[key]:
            raise _genai_fail(folder, f"decoder inputs.{key} {ins[key]!r} has no %d layer index")
    for key in ("present_key_names", "present_value_names"):
        if "%d" not in outs[key]:
            raise _genai_fail(folder, f"decoder outputs.{key} {outs[key]!r} has no %d layer index")
    ints = {}
    for key in ("head_size", "num_key_value_heads", "num_hidden_layers", "num_attention_heads"):
        value = dec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _genai_fail(folder, f"decoder.{key} must be a positive integer")
        ints[key] = value
    for key in ("context_length", "vocab_size"):
        value = model.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _genai_fail(folder, f"model.{key} must be a positive integer")
        ints[key] = value
    filename = dec.get("filename", "model.onnx")
    from onnx_edge.runtime.integrity import check_relative

    check_relative(filename, f"{GENAI_CONFIG} decoder.filename")

    def ids(value) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []

    pad = ids(model.get("pad_token_id"))
    bos = ids(model.get("bos_token_id"))
    return dict(filename=filename, inputs=ins, outputs=outs, type=str(model.get("type", "unknown")),
                hidden_size=int(dec.get("hidden_size") or 0), eos=ids(model.get("eos_token_id")),
                bos=bos[0] if bos else None, pad=pad[0] if pad else None, **ints)


def _genai_precision(folder: Path, filename: str) -> str:
    """int4/int8 (genai's MatMulNBits weights are named *_Q4 / *_Q8), else the dominant float type."""
    from onnx_edge.runtime.integrity import tensors

    import mmap

    try:
        with open(folder / filename, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found = tensors(buf)
    except Exception:  # a malformed graph is reported by the integrity check when it is opened
        return "unknown"
    names = [t.name for t in found]
    for bits in (4, 8):
        if any(n.endswith(f"_Q{bits}") for n in names):
            return f"int{bits}"
    weight = {1: 0, 10: 0, 16: 0}
    for t in found:
        if t.data_type in weight:
            weight[t.data_type] += math.prod(t.dims) if t.dims else 1
    dominant = max(weight, key=weight.get)
    return {1: "fp32", 10: "fp16", 16: "bf16"}[dominant] if weight[dominant] else "unknown"


def genai_manifest(folder: Path, cfg: dict, precision: str):
    """An in-memory Manifest for a genai folder: what DecoderSession and bench's result_from_runs read."""
    from onnx_edge.manifest import FileEntry, IOSpec, Manifest

    ins, outs = cfg["inputs"], cfg["outputs"]
    io = IOSpec(input_ids=ins["input_ids"], attention_mask=ins["attention_mask"],
                position_ids=ins.get("position_ids") or None,
                past_key=ins["past_key_names"].replace("%d", "{i}"), past_value=ins["past_value_names"].replace("%d", "{i}"),
                logits=outs["logits"], present_key=outs["present_key_names"].replace("%d", "{i}"),
                present_value=outs["present_value_names"].replace("%d", "{i}"))
    arch = dict(model_type=cfg["type"], num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
                num_kv_heads=cfg["num_key_value_heads"], head_dim=cfg["head_size"], hidden_size=cfg["hidden_size"],
                intermediate_size=0, vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                norm_eps=0.0, rotary_dim=cfg["head_size"], rope_theta=0.0, rope_type="unknown", sliding_window=None,
                tie_word_embeddings=False, bos_token_id=cfg["bos"], eos_token_ids=cfg["eos"], pad_token_id=cfg["pad"])
    _, sizes = _folder_size(folder)
    return Manifest(architecture=arch, io=io, model_file=cfg["filename"], graph="onnxruntime-genai",
                    precision=precision, tokenizer={"file": "tokenizer.json", "chat_template": None},
                    provenance={"source": str(folder), "source_kind": "onnxruntime-genai"},
                    files={rel: FileEntry(sha256="", size=size) for rel, size in sizes.items()})


def _check_genai_folder(folder: Path, filename: str) -> None:
    """The same safety checks load() applies to our folders, before onnxruntime opens the graph: no links or
    special files, every external-data reference inside a file of this folder."""
    from onnx_edge.runtime import integrity

    integrity.scan_folder(folder)
    listed = {p.relative_to(folder).as_posix(): p.stat() for p in folder.rglob("*") if p.is_file()}
    st = integrity.member_stat(folder, filename, "genai model file",
                               missing=f"{filename}: named by {GENAI_CONFIG} but missing from {folder}")
    integrity.check_model_file(folder, filename, st, listed)


def _genai_variant(spec: str, folder: Path, provider: str, threads: int | None) -> Variant:
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.tokenizer import load_tokenizer

    cfg = read_genai_config(folder)
    if not (folder / "tokenizer.json").is_file():
        raise CompareError(f"{folder}: onnxruntime-genai folder without tokenizer.json (compare needs the "
                           f"tokenizers-library tokenizer to check it matches the other variants)")
    if not (folder / cfg["filename"]).is_file():
        raise CompareError(f"{folder}: {cfg['filename']} (decoder.filename in {GENAI_CONFIG}) is missing")
    tok = load_tokenizer(folder)
    size_mb, _ = _folder_size(folder)

    def opener(context: int):
        return OrtEngine(open_genai(folder, provider, threads))

    return Variant(spec=spec, name=folder.resolve().name, kind="genai", engine=ENGINE_GENAI, path=str(folder),
                   precision=_genai_precision(folder, cfg["filename"]), size_mb=size_mb,
                   vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                   tokenizer_sha256=_sha256(folder / "tokenizer.json"), encoder=_tokenizer_encoder(tok.tokenizer),
                   opener=opener, chat_template=load_chat_template(folder), bos_token=tok.bos_token,
                   eos_token=tok.eos_token)


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16"}


def open_genai(folder: Path, provider: str = "cpu", threads: int | None = None):
    """An EdgeModel for an onnxruntime-genai folder, run by our DecoderSession (same decode loop)."""
    from onnx_edge.models.spec import ModelShape
    from onnx_edge.runtime.chat import load_chat_template
    from onnx_edge.runtime.model import EdgeModel
    from onnx_edge.runtime.providers import resolve_provider
    from onnx_edge.runtime.session import DecoderSession
    from onnx_edge.runtime.tokenizer import load_tokenizer

    folder = Path(folder)
    cfg = read_genai_config(folder)
    _check_genai_folder(folder, cfg["filename"])
    manifest = genai_manifest(folder, cfg, _genai_precision(folder, cfg["filename"]))
    chosen = resolve_provider(provider)
    session = DecoderSession(folder, manifest, chosen, threads=threads)
    inputs = {i.name: i for i in session.session.get_inputs()}  # required inputs only (not initializers)
    io = manifest.io
    fed = {io.input_ids, io.attention_mask} | {n for pair in session.past_names for n in pair}
    if io.position_ids:
        fed.add(io.position_ids)
    missing = sorted(n for n in fed if n not in inputs and n != io.position_ids)
    extra = sorted(set(inputs) - fed)
    if missing:
        raise CompareError(f"{folder}: the graph has no input {missing[0]!r} named in {GENAI_CONFIG}")
    if extra:
        raise CompareError(f"{folder}: the graph needs input {extra[0]!r}, which compare cannot feed "
                           f"(supported: input_ids, attention_mask, position_ids, past key/value per layer)")
    if io.position_ids and io.position_ids not in inputs:
        session.uses_positions = False
    past = inputs[session.past_names[0][0]]
    dims = list(past.shape)
    if len(dims) != 4 or any(isinstance(d, int) and d != want for d, want in
                             ((dims[1], cfg["num_key_value_heads"]), (dims[3], cfg["head_size"]))):
        raise CompareError(f"{folder}: KV input {past.name} has shape {dims}; {GENAI_CONFIG} implies "
                           f"(batch, {cfg['num_key_value_heads']}, past, {cfg['head_size']})")
    kv_dtype = _ORT_TYPES.get(past.type)
    if kv_dtype is None or kv_dtype == "bfloat16":
        raise CompareError(f"{folder}: KV cache type {past.type} is not supported")
    io.kv_dtype = kv_dtype
    session.kv_dtype = np.dtype(kv_dtype)
    shape = ModelShape.from_dict(manifest.architecture)
    tok = load_tokenizer(folder)
    return EdgeModel(folder=folder, manifest=manifest, shape=shape, session=session, tok=tok,
                     chat_template=load_chat_template(folder), provider=chosen, eos_ids=set(shape.eos_token_ids))


# -- .gguf files (llama.cpp) ----------------------------------------------------------------------------

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


def _gguf_variant(spec: str, path: Path, threads: int | None) -> Variant:
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
class VariantResult:
    variant: dict  # Variant.describe()
    is_reference: bool
    quality: dict  # QualityReport.to_dict(): kl, top1, perplexity, perplexity_reference, per_window_kl, ...
    generation: dict  # GenerationAgreement
    speed: dict | None = None  # BenchResult.to_dict(), or None (--no-speed, or no speed for this engine)
    speed_note: str | None = None

    @property
    def name(self) -> str:
        return self.variant["name"]


@dataclass
class CompareReport:
    reference: dict
    variants: list[VariantResult]
    text: str
    scoring: str
    context: int
    windows: int
    scored_tokens: int
    prompts: list[str]
    chat: bool
    gen_tokens: int
    speed: dict | None  # {"provider", "prompt_tokens", "gen_tokens", "runs"} or None
    created: str
    seconds: float = 0.0
    versions: dict = field(default_factory=dict)
    schema: str = "onnx-edge-compare/1"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CompareReport":
        """A report read back from `--json` output (to print its table or render its HTML again)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known = VariantResult.__dataclass_fields__
        fields["variants"] = [VariantResult(**{k: v for k, v in r.items() if k in known}) for r in data["variants"]]
        return cls(**fields)


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
        from onnx_edge.runtime.quality import scored_rows

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
        from onnx_edge.runtime.quality import log_softmax

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
    from onnx_edge.runtime.quality import (aggregate, evaluation_text, log_softmax, score_window, token_windows,
                                           window_logits)

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
    _display_names(rows)
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
        from onnx_edge.runtime.bench import check_sizes

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
        try:
            scores = []
            for i, window in enumerate(windows):
                with bar.step(f"{ref.name} (reference): window {i + 1}/{n_windows}"):
                    store.put(i, window_logits(engine, window))
                    logp = store.logprobs(i)
                    scores.append(score_window(logp, logp, window))
            ref_tokens = []
            for j, ids in enumerate(prompt_ids):
                with bar.step(f"{ref.name} (reference): prompt {j + 1}/{n_prompts}"):
                    ref_tokens.append(engine.greedy(ids, opts.gen_tokens))
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
                scores = []
                for i, window in enumerate(windows):
                    with bar.step(f"{v.name}: window {i + 1}/{n_windows}"):
                        logp = log_softmax(window_logits(engine, window))
                        scores.append(score_window(store.logprobs(i), logp, window))
                tokens = []
                for j, ids in enumerate(prompt_ids):
                    with bar.step(f"{v.name}: prompt {j + 1}/{n_prompts}"):
                        tokens.append(engine.greedy(ids, opts.gen_tokens))
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
        versions=_versions())


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

    from onnx_edge.runtime.bench import _versions as bench_versions

    found = bench_versions()
    for module, dist in (("llama_cpp", "llama-cpp-python"), ("torch", "torch"), ("transformers", "transformers")):
        if module in sys.modules:
            try:
                found[dist] = md.version(dist)
            except md.PackageNotFoundError:
                pass
    return found


# --------------------------------------------------------------------------------------------------
# speed: bench() for onnx-edge folders; the same measurement in a worker process for foreign ones
# --------------------------------------------------------------------------------------------------


def measure_speed(v: Variant, opts: CompareOptions):
    from onnx_edge.runtime.bench import BenchResult, bench

    if v.kind == "onnx-edge":
        return bench(v.path, provider=opts.provider, prompt_tokens=opts.prompt_tokens, gen_tokens=opts.bench_gen_tokens,
                     runs=opts.runs, threads=opts.threads, warmup=opts.warmup)
    import subprocess

    cmd = [sys.executable, "-m", "onnx_edge.runtime.compare", "--bench-worker", v.kind, v.path,
           "--provider", opts.provider, "--prompt-tokens", str(opts.prompt_tokens),
           "--gen-tokens", str(opts.bench_gen_tokens), "--runs", str(opts.runs), "--warmup", str(opts.warmup)]
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    data = json.loads(lines[-1]) if lines else None
    if data is not None and "error" in data:
        raise CompareError(data["error"])
    if proc.returncode != 0 or data is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompareError(f"{v.path}: benchmark worker failed (exit {proc.returncode}): {tail}")
    return BenchResult.from_dict(data)


def _bench_genai(path: str, a) -> dict:
    from onnx_edge.runtime.bench import check_sizes, measure, prompt_ids, result_from_runs

    cfg = read_genai_config(Path(path))
    check_sizes(a.prompt_tokens, a.gen_tokens, a.runs, a.warmup, cfg["context_length"])
    start = time.perf_counter()
    model = open_genai(Path(path), a.provider, a.threads)
    load_s = time.perf_counter() - start
    ids = prompt_ids(model.tokenizer, a.prompt_tokens, model.shape.vocab_size)
    timings = measure(model, ids, a.gen_tokens, a.runs, a.warmup)
    return result_from_runs(model, timings, threads=a.threads, warmup=a.warmup, load_s=load_s, ids=ids).to_dict()


def _bench_gguf(path: str, a) -> dict:
    """bench's protocol on llama.cpp: the same prompt ids, greedy, eos ignored, prefill -> first token = TTFT."""
    from onnx_edge.runtime.bench import (BenchResult, RunTiming, _versions as bench_versions, check_sizes, ids_sha256,
                                         peak_rss_mb, prompt_text, summarize)

    variant = _gguf_variant(path, Path(path), a.threads)
    check_sizes(a.prompt_tokens, a.gen_tokens, a.runs, a.warmup, variant.context_length)
    ids = [t for t in variant.encode(prompt_text()) if t < variant.vocab_size]
    ids = (ids * -(-a.prompt_tokens // max(1, len(ids))))[:a.prompt_tokens]
    start = time.perf_counter()
    engine = LlamaEngine(Path(path), a.prompt_tokens + a.gen_tokens, a.threads)
    load_s = time.perf_counter() - start
    timings = []
    for run in range(a.warmup + a.runs):
        t0 = time.perf_counter()
        engine._run(ids)
        out = [int(np.argmax(engine.llm.scores[engine.llm.n_tokens - 1]))]
        t1 = time.perf_counter()
        for _ in range(a.gen_tokens - 1):
            engine.llm.eval([out[-1]])
            out.append(int(np.argmax(engine.llm.scores[engine.llm.n_tokens - 1])))
        t2 = time.perf_counter()
        if run >= a.warmup:
            timings.append(RunTiming(ttft_s=t1 - t0, decode_s=t2 - t1, prompt_tokens=len(ids), gen_tokens=a.gen_tokens,
                                     output_ids=out))
    size = Path(path).stat().st_size
    per_run = {"prefill_tps": [t.prefill_tps for t in timings], "decode_tps": [t.decode_tps for t in timings],
               "ttft_s": [t.ttft_s for t in timings], "gbps": [size * t.decode_tps / 1e9 for t in timings]}
    stats = {k: summarize(v) for k, v in per_run.items()}
    versions = bench_versions()
    import importlib.metadata as md

    try:
        versions["llama-cpp-python"] = md.version("llama-cpp-python")
    except md.PackageNotFoundError:
        pass
    return BenchResult(
        path=path, name=Path(path).name, precision=variant.precision, provider="cpu", threads=a.threads,
        prompt_tokens=len(ids), gen_tokens=a.gen_tokens, runs=len(timings), warmup=a.warmup,
        prefill_tps=stats["prefill_tps"]["median"], decode_tps=stats["decode_tps"]["median"],
        ttft_s=stats["ttft_s"]["median"], gbps=stats["gbps"]["median"], peak_rss_mb=peak_rss_mb(),
        size_mb=size / MB, weight_mb=size / MB, load_s=load_s, stats=stats, prompt_sha256=ids_sha256(ids),
        output_sha256=ids_sha256(timings[-1].output_ids), context_length=variant.context_length,
        library_versions=versions).to_dict()


def _worker(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m onnx_edge.runtime.compare",
                                description="Benchmark one onnxruntime-genai folder or .gguf file; prints one JSON object.")
    p.add_argument("--bench-worker", nargs=2, required=True, metavar=("KIND", "PATH"))
    p.add_argument("--provider", default="cpu")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    kind, path = a.bench_worker
    try:
        if kind == "genai":
            result = _bench_genai(path, a)
        elif kind == "gguf":
            result = _bench_gguf(path, a)
        else:
            raise CompareError(f"no benchmark worker for {kind!r}")
    except EdgeError as exc:
        print(json.dumps({"error": f"{exc}"}))
        return 2
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def fmt_kl(kl: float) -> str:
    """KL for a table: 5 decimals, or 2 significant digits when small but not zero."""
    return f"{kl:.1e}" if 0 < kl < 1e-4 else f"{kl:.5f}"


def _fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def format_table(report: CompareReport):
    """A rich Table, one row per variant (the reference first when it is not one of the variants)."""
    from rich.table import Table

    title = f"onnx-edge compare — reference: {report.reference['name']} ({report.reference['engine']})"
    table = Table(title=title, title_justify="left")
    for col, justify in (("variant", "left"), ("engine", "left"), ("precision / scheme", "left"),
                         ("size\nMB", "right"), ("perplexity", "right"), ("KL vs ref\nnats/token", "right"),
                         ("top-1\nagree", "right"), ("gen match\nmean / min", "right"), ("gen\nidentical", "right"),
                         ("prefill\ntok/s", "right"), ("decode\ntok/s", "right"), ("TTFT\nms", "right"),
                         ("peak RSS\nMB", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in report.variants:
        q, g, s = r.quality, r.generation, r.speed or {}
        name = r.name + (" (ref)" if r.is_reference else "")
        table.add_row(
            name, r.variant["engine"], r.variant["precision"], _fmt(r.variant["size_mb"], ".1f"),
            f"{q['perplexity']:.3f}", fmt_kl(q["kl"]), f"{q['top1']:.2%}",
            f"{g['mean_matched']:.1f} / {g['min_matched']}", f"{g['identical']:.0%}",
            _fmt(s.get("prefill_tps"), ".0f"), _fmt(s.get("decode_tps"), ".1f"),
            _fmt(s.get("ttft_s") * 1e3 if s.get("ttft_s") is not None else None, ".1f"),
            _fmt(s.get("peak_rss_mb"), ".0f"),
        )
    return table


def footer(report: CompareReport) -> str:
    lines = [f"quality: {report.scored_tokens} scored tokens of {report.text}; {report.scoring} (llama.cpp's "
             f"perplexity rule); KL = mean KL(reference || variant) per scored token, in nats; top-1 = share of "
             f"scored tokens whose argmax equals the reference's",
             f"generation: {len(report.prompts)} prompts{' (chat template)' if report.chat else ''} x "
             f"{report.gen_tokens} greedy tokens, eos ignored; match = tokens equal to the reference's before the "
             f"first divergence (mean / min over prompts); identical = share of prompts that never diverge"]
    if report.speed:
        s = report.speed
        lines.append(f"speed: onnx-edge bench on {s['provider']}: {s['prompt_tokens']}-token prompt, "
                     f"{s['gen_tokens']} generated tokens, median of {s['runs']} runs after {s['warmup']} warm-up, "
                     f"each model in a fresh process (peak RSS is that process's)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker())
