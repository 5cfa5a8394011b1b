"""`load()` an exported folder into an EdgeModel: manifest checked, files verified, session ready."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from onnx_edge.errors import GenerationError, ManifestError
from onnx_edge.manifest import Manifest, read_manifest
from onnx_edge.runtime.integrity import verify_files
from onnx_edge.models.spec import ModelShape
from onnx_edge.runtime.chat import load_chat_template, render_chat
from onnx_edge.runtime.generate import Chunk, Response, generate, generate_batch, stream_generate
from onnx_edge.runtime.providers import resolve_provider
from onnx_edge.runtime.sampling import SamplingParams
from onnx_edge.runtime.session import DecoderSession, check_threads
from onnx_edge.runtime.tokenizer import TokenizerInfo, encode_text, load_tokenizer


@dataclass
class EdgeModel:
    folder: Path
    manifest: Manifest
    shape: ModelShape
    session: DecoderSession
    tok: TokenizerInfo
    chat_template: str | None
    provider: str
    eos_ids: set[int] = field(default_factory=set)
    template_error: str | None = None  # a chat template that cannot be read: raised only when chat is used

    @property
    def tokenizer(self):
        return self.tok.tokenizer

    def encode(self, prompt: str | None = None, messages: list[dict] | None = None, chat: bool | None = None) -> list[int]:
        """Token ids for a plain prompt, or a chat rendered with the model's template."""
        if messages is None:
            if not isinstance(prompt, str) or not prompt:
                raise GenerationError("prompt is empty")
            has_template = self.chat_template is not None or self.template_error is not None
            use_chat = has_template if chat is None else chat
            if not use_chat:
                return encode_text(self.tokenizer, prompt, special=True)
            messages = [{"role": "user", "content": prompt}]
        if self.template_error is not None:
            raise GenerationError(self.template_error)
        if self.chat_template is None:
            raise GenerationError("this model has no chat template; pass a plain prompt (--no-chat)")
        text = render_chat(self.chat_template, messages, add_generation_prompt=True,
                           bos_token=self.tok.bos_token, eos_token=self.tok.eos_token)
        # The template already wrote the special tokens.
        return encode_text(self.tokenizer, text, special=False)

    def generate(self, prompt: str | None = None, *, messages: list[dict] | None = None, chat: bool | None = None,
                 max_new_tokens: int = 128, stop: list[str] | tuple[str, ...] = (), truncate: bool = False,
                 cancel=None, params: SamplingParams | None = None, **sampling) -> Response:
        """Generate for one prompt (or chat `messages`); sampling as `params` or as SamplingParams keywords."""
        params = _sampling(params, sampling)
        return generate(self, self.encode(prompt, messages, chat), params, max_new_tokens, stop, truncate, cancel)

    def stream(self, prompt: str | None = None, *, messages: list[dict] | None = None, chat: bool | None = None,
               max_new_tokens: int = 128, stop: list[str] | tuple[str, ...] = (), truncate: bool = False,
               cancel=None, params: SamplingParams | None = None, **sampling) -> Iterator[Chunk]:
        """Yield text pieces as they are generated; the last chunk carries the full Response."""
        params = _sampling(params, sampling)
        return stream_generate(self, self.encode(prompt, messages, chat), params, max_new_tokens, stop, truncate,
                               cancel)

    def generate_batch(self, prompts: list[str], *, chat: bool | None = None, max_new_tokens: int = 128,
                       stop: list[str] | tuple[str, ...] = (), truncate: bool = False, cancel=None,
                       params: SamplingParams | None = None, **sampling) -> list[Response]:
        """Several prompts in one left-padded batch; each response equals its own batch-1 run."""
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise GenerationError("generate_batch takes a list of prompt strings (use generate for one prompt)")
        if not prompts:
            raise GenerationError("no prompts given")
        params = _sampling(params, sampling)
        ids = [self.encode(p, None, chat) for p in prompts]
        return generate_batch(self, ids, params, max_new_tokens, stop, truncate, cancel)


def _sampling(params: SamplingParams | None, keywords: dict) -> SamplingParams:
    """The request's SamplingParams: `params` as given (already checked), or built, and so checked, from
    keywords."""
    if params is None:
        return SamplingParams(**keywords)
    if not isinstance(params, SamplingParams):
        raise GenerationError(f"params must be a SamplingParams, got {type(params).__name__}")
    if keywords:
        raise GenerationError(f"give sampling as params= or as keywords, not both (got {', '.join(keywords)})")
    return params


def load(path: str | os.PathLike, provider: str = "auto", *, verify: bool = True, threads: int | None = None,
         hash_cache: bool = True) -> EdgeModel:
    """Open an exported folder. Before onnxruntime sees anything: manifest.json must be a real file, the schema
    valid, the folder free of links and special files, every external-data reference of the graph inside a
    listed file, every listed file the recorded size and (with `verify`) sha256, the manifest's io names,
    dtypes and sizes those of the graph. `hash_cache` reuses digests of unchanged files from the user's cache
    (see onnx_edge.runtime.integrity); `onnx-edge verify` always rehashes."""
    from onnx_edge.runtime.graph_contract import check_contract
    from onnx_edge.runtime.integrity import check_manifest_entry

    check_threads(threads)  # before any work: a bad value is the caller's mistake
    folder = Path(path).expanduser()
    check_manifest_entry(folder)  # a symlinked manifest is refused before it is read
    manifest = read_manifest(folder)
    info = verify_files(folder, manifest, check_hashes=verify, use_cache=hash_cache)
    check_contract(manifest, info.interface)  # io names, dtypes, KV and vocab sizes match the graph
    shape = ModelShape.from_dict(manifest.architecture)
    chosen = resolve_provider(provider, manifest.provider)
    tok = load_tokenizer(folder, manifest.tokenizer.get("file", "tokenizer.json"))
    # Highest id the tokenizer can produce (base vocabulary, then added tokens; get_vocab() would be exact but
    # costs ~0.15 s for 50k tokens): ids past the model's vocabulary would fail inside onnxruntime.
    ids = tok.tokenizer.get_vocab_size(with_added_tokens=False)
    ids = max([ids, *(i + 1 for i in tok.tokenizer.get_added_tokens_decoder())])
    if ids > shape.vocab_size:
        raise ManifestError(f"{folder}: the tokenizer has {ids} ids but the model only {shape.vocab_size} "
                            f"(architecture.vocab_size): tokenizer and model do not belong together")
    template, template_error = None, None
    try:
        template = load_chat_template(folder)
    except GenerationError as exc:  # a plain prompt (--no-chat) never needs it
        template_error = str(exc)
    session = DecoderSession(folder, manifest, chosen, threads=threads)
    return EdgeModel(folder=folder, manifest=manifest, shape=shape, session=session, tok=tok,
                     chat_template=template, provider=chosen, eos_ids=set(shape.eos_token_ids),
                     template_error=template_error)
