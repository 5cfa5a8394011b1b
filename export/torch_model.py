"""Load the PyTorch model, tokenizer and configs for a resolved Source (safetensors or GGUF only)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_edge.errors import SourceError, UnsupportedModelError
from onnx_edge.export.sources import Source


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel, eval mode, float32
    tokenizer: Any  # transformers fast tokenizer
    config: dict[str, Any]
    generation: dict[str, Any]


def read_model_type(source: Source) -> str:
    """model_type without loading weights, so an unsupported architecture fails fast."""
    if source.kind in ("folder", "hub"):
        from onnx_edge.textfile import read_json

        return str(read_json(source.path / "config.json", SourceError).get("model_type", ""))
    from gguf import GGUFReader

    field = GGUFReader(str(source.path)).fields.get("general.architecture")
    # GGUF architecture names equal HF model_types for every architecture we support.
    return bytes(field.parts[field.data[0]]).decode() if field else ""


def gguf_file_type(path: Path) -> str:
    """The GGUF's main quantization as llama.cpp names it (Q4_1, Q8_0, F16, ...), from general.file_type."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type {value}"


@contextlib.contextmanager
def _quiet_gguf_loader():
    """transformers' GGUF loader draws its own tqdm bar with no switch to turn it off; export shows its steps."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    saved = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = saved


def _where(source: Source) -> tuple[str, dict[str, Any]]:
    """transformers' from_pretrained folder for `source`, and the GGUF file in it when there is one."""
    if source.kind in ("gguf", "alias"):
        return str(source.path.parent), {"gguf_file": source.path.name}
    return str(source.path), {}


@contextlib.contextmanager
def _input_errors(source: Source):
    """Corrupt safetensors/GGUF, config errors: all a problem with the input files, said in one line."""
    try:
        yield
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"{source.text}: could not be loaded ({type(exc).__name__}: {first[:300]})") from None


def read_config(source: Source) -> dict[str, Any]:
    """The config transformers derives from config.json (or the GGUF's metadata), no weights read: what
    models.check_config judges before anything large loads."""
    from transformers import AutoConfig

    where, kwargs = _where(source)
    with _input_errors(source):
        return AutoConfig.from_pretrained(where, trust_remote_code=False, **kwargs).to_dict()


def load_model(source: Source) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, kwargs = _where(source)
    with _input_errors(source):
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **kwargs)
        with _quiet_gguf_loader():
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, trust_remote_code=False,
                                                         **(kwargs or {"use_safetensors": True}))
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(f"{source.text}: only fast (tokenizer.json) tokenizers are supported")
    model.eval()
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF loader's note; our output is plain fp32
    generation = model.generation_config.to_diff_dict() if model.generation_config is not None else {}
    return LoadedModel(model, tokenizer, config, generation)


def rope_tables(model, context_length: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """cos/sin (context_length, rotary_dim/2) from the model's own rotary module, so every static
    rope variant (linear, llama3, yarn) is computed exactly as transformers does, scaling included."""
    import torch

    rotary = next((m for m in model.modules() if hasattr(m, "inv_freq")), None)
    if rotary is None:
        return _layer_type_tables(model, context_length, rotary_dim)  # gemma3
    inv_freq = rotary.inv_freq.detach().float()
    if 2 * inv_freq.numel() != rotary_dim:  # the config read one way, transformers' rotary another
        raise UnsupportedModelError(f"the model's rotary covers {2 * inv_freq.numel()} channels, the config "
                                    f"says {rotary_dim} (head_dim x partial_rotary_factor)")
    if getattr(rotary, "rope_type", None) == "longrope":
        return _longrope_tables(rotary, context_length, rotary_dim)
    scaling = float(getattr(rotary, "attention_scaling", 1.0))
    freqs = torch.outer(torch.arange(context_length, dtype=torch.float32), inv_freq)  # (P, r/2)
    return (freqs.cos() * scaling).numpy(), (freqs.sin() * scaling).numpy()


def _layer_type_tables(model, context_length: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """gemma3: a rotary module with one inv_freq per layer type. The full-attention rows [0, P), then, where
    some layer slides, the sliding-attention rows [0, P) (rope_local_base_freq; ModelShape.local_rope)."""
    import torch

    rotary = next((m for m in model.modules() if hasattr(m, "full_attention_inv_freq")), None)
    if rotary is None:
        return None
    tables = []
    for kind in ("full_attention", "sliding_attention"):
        if not hasattr(rotary, f"{kind}_inv_freq"):
            continue
        inv_freq = getattr(rotary, f"{kind}_inv_freq").detach().float()
        if 2 * inv_freq.numel() != rotary_dim:
            raise UnsupportedModelError(f"the model's {kind} rotary covers {2 * inv_freq.numel()} channels, the "
                                        f"config says {rotary_dim}")
        scaling = float(getattr(rotary, f"{kind}_attention_scaling", 1.0))
        freqs = torch.outer(torch.arange(context_length, dtype=torch.float32), inv_freq)  # (P, r/2)
        tables.append(((freqs.cos() * scaling).numpy(), (freqs.sin() * scaling).numpy()))
    return np.concatenate([t[0] for t in tables]), np.concatenate([t[1] for t in tables])


def _longrope_tables(rotary, context_length: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """phi3 longrope: the short-factor rows [0, O) then the long-factor rows [0, P), O the switch position
    (original_max_position_embeddings). The graph reads row p + (O if the call's largest position >= O else 0),
    as transformers' longrope_frequency_update picks a call's factors. Each table from the module's own forward
    (its per-call factor pick, float ops and attention scaling)."""
    import torch

    original = int(rotary.config.rope_parameters["original_max_position_embeddings"])
    halves = []
    with torch.no_grad():
        for n in (original, context_length):  # a call with max position n - 1: short at O, long past it
            positions = torch.arange(n)[None]
            if n == context_length and n <= original:  # no position ever takes the long factors
                positions = torch.arange(original + 1)[None]
            cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)  # (1, n, r)
            halves.append((cos[0, :, :rotary_dim // 2].numpy(), sin[0, :, :rotary_dim // 2].numpy()))
    return (np.concatenate([halves[0][0], halves[1][0]]), np.concatenate([halves[0][1], halves[1][1]]))


def save_tokenizer_files(loaded: LoadedModel, folder: Path) -> list[str]:
    """tokenizer.json, tokenizer_config.json, chat template and generation_config.json into `folder`."""
    before = set(folder.iterdir())
    loaded.tokenizer.save_pretrained(folder)
    (folder / "generation_config.json").write_text(json.dumps(loaded.generation, indent=2) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(loaded.config, indent=2, default=str) + "\n", encoding="utf-8")
    if not (folder / "tokenizer.json").is_file():
        raise UnsupportedModelError("the tokenizer did not produce tokenizer.json; only fast tokenizers are supported")
    return sorted(p.name for p in set(folder.iterdir()) - before)
