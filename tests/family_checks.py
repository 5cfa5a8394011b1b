"""The checks every decoder family's tests make against transformers (tests/test_qwen3.py, test_gemma.py,
test_llama_variants.py, ...): greedy equal to `generate`, logits of a long prompt through both session paths,
and a config refused from config.json alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from onnx_edge.errors import UnsupportedModelError


def load_without_eos(folder: Path):
    """The folder's EdgeModel with eos off, so whole continuations are compared."""
    from onnx_edge.runtime import load

    model = load(folder, provider="cpu")
    model.eos_ids = set()
    return model


def assert_quantized_generates(model, prompt: str) -> None:
    """A quantized folder generates, and a left-padded batch gives each prompt's tokens alone (weight-only)."""
    r = model.generate(prompt, chat=False, max_new_tokens=8)
    assert r.generated_tokens == 8 and all(0 <= t < model.shape.vocab_size for t in r.token_ids)
    batch = model.generate_batch(["Hello", prompt], chat=False, max_new_tokens=6)
    model.session.reuse_prefix = False
    assert [b.token_ids for b in batch] == [model.generate(p, chat=False, max_new_tokens=6).token_ids
                                            for p in ("Hello", prompt)]


def assert_greedy_equals_generate(src: Path, model, prompt: str, tokens: int = 24) -> None:
    """`model` (an EdgeModel with eos off) generates transformers' greedy tokens for `prompt`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(src)(prompt, return_tensors="pt")
    with torch.no_grad():
        out = ref.generate(**ids, max_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=3)
    got = model.generate(prompt, chat=False, max_new_tokens=tokens)
    assert got.token_ids == out[0, ids["input_ids"].shape[1]:].tolist()


def assert_long_prompt_logits_match(src: Path, session) -> None:
    """A 60-token prompt: every position against PyTorch, through forward() and the shared-buffer step()."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    ids = np.arange(4, 64, dtype=np.int64)[None]  # (1, 60)
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
    got, _ = session.forward(ids, np.ones_like(ids), np.arange(60)[None], session.empty_cache(1))
    assert np.max(np.abs(got - expected)) < 1e-4
    every = session.step(ids, np.ones_like(ids), np.arange(60)[None], session.new_cache(1, 60), last_only=False)
    assert np.max(np.abs(every - expected)) < 1e-4


def assert_refused_from_config(family: str, src: Path, change: dict, tmp_path: Path) -> None:
    """`change` to the config of the tiny `src` is refused by export, naming its first field, from config.json
    alone (the weights file is junk) and with no output left behind."""
    from onnx_edge.export import export

    folder = tmp_path / "src"
    shutil.copytree(src, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not loaded")
    with pytest.raises(UnsupportedModelError, match=f"{family} {next(iter(change))} .* is not supported"):
        export(str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def export_variants(tiny_models, exported_models, tmp_path_factory):
    """(family, variant) -> exported folder, each exported once per module: 'fused' (the default export),
    'reference', 'dml' (the DirectML-shaped fp32 graph)."""
    from onnx_edge.export import export

    done = {}

    def get(family: str, variant: str) -> Path:
        if (family, variant) not in done:
            if variant == "fused":
                done[family, variant] = exported_models(family)
            else:
                out = tmp_path_factory.mktemp(f"{family}-{variant}") / "model"
                export(str(tiny_models(family)), out, **(dict(provider="dml") if variant == "dml" else
                                                         dict(graph=variant)))
                done[family, variant] = out
        return done[family, variant]

    return get


def optimized_ops(folder: Path, tmp_path: Path):
    """Counter of op types in the graph onnxruntime runs after its own fusions (CPU)."""
    import collections

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return collections.Counter(x.op_type for x in onnx.load(tmp_path / "optimized.onnx",
                                                            load_external_data=False).graph.node)
