"""Provider targets: graphs shaped for DirectML, fp16-based GPU variants, provider resolution, the device-resident
KV cache path (run on the CPU), and DirectML folders loaded by onnxruntime 1.24 in a side environment."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_edge.errors import ProviderError
from onnx_edge.quantize import QuantConfig, QuantizeError, quantize
from onnx_edge.runtime import load
from onnx_edge.runtime.session import DecoderSession, session_options
from onnx_edge.targets import TARGETS, unsupported_ops

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(context=64, eval_windows=2)
PROMPT = "The quick brown fox jumps"
# The side environment `make test` builds: onnxruntime 1.24.x, the newest onnxruntime-directml release.
SIDE_PYTHON = Path(os.environ.get("ONNX_EDGE_SIDE_PYTHON", ROOT / ".venv-ort124" / "bin" / "python"))


@pytest.fixture(scope="module")
def folders(tiny_models, exported_models, tmp_path_factory):
    """(arch, variant) -> folder: 'cpu' fp32, 'dml' fp32, and dml/cuda fp16/int4, built once."""
    from onnx_edge.export import export

    done = {}

    def get(arch: str, variant: str) -> Path:
        if (arch, variant) in done:
            return done[arch, variant]
        out = tmp_path_factory.mktemp(f"target-{arch}-{variant}") / "model"
        if variant == "cpu":
            out = exported_models(arch)
        elif variant == "dml":
            export(str(tiny_models(arch)), out, provider="dml")
        else:
            provider, precision = variant.split("-")
            source = get(arch, "dml" if provider == "dml" else "cpu")
            quantize(source, out, QuantConfig(precision=precision, provider=provider, **FAST))
        done[arch, variant] = out
        return out

    return get


def graph(folder: Path) -> onnx.GraphProto:
    return onnx.load(folder / "model.onnx", load_external_data=False).graph


def ops(folder: Path) -> Counter:
    return Counter(n.op_type for n in graph(folder).node)


def logits(folder: Path) -> np.ndarray:
    model = load(folder, provider="cpu")
    ids = np.array([model.encode(PROMPT, chat=False)], dtype=np.int64)
    sess = model.session
    out, _ = sess.forward(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], sess.empty_cache(1))
    return out[0]


# -- the table ------------------------------------------------------------------------------------------
def test_targets_table_says_what_each_provider_needs():
    cpu, cuda, dml = TARGETS["cpu"], TARGETS["cuda"], TARGETS["dml"]
    assert cpu.rotary_in_attention and cuda.rotary_in_attention and not dml.rotary_in_attention
    assert cpu.quantized_tables and cuda.quantized_tables and not dml.quantized_tables
    assert (cpu.activations, cuda.activations, dml.activations) == ("fp32", "fp16", "fp16")
    assert not dml.mem_pattern and not dml.prefix_reuse and cpu.prefix_reuse
    assert ("fp16", "cast") in dml.precisions and ("int4", "weight_only") in dml.precisions
    assert ("int8", "dynamic") not in dml.precisions
    assert unsupported_ops({("com.microsoft", "GatherBlockQuantized")}, "dml") == ["GatherBlockQuantized"]
    assert unsupported_ops({("com.microsoft", "GatherBlockQuantized")}, "cuda") == []
    assert unsupported_ops({("com.microsoft", "DynamicQuantizeMatMul")}, "cpu") == []


def test_provider_names_come_from_the_targets_table():
    """targets.py is the one list of provider names: onnxruntime's name and the extra for each, the runtime's
    and the CLI's choices, auto's order; every extra is one pyproject.toml declares."""
    import tomllib

    from onnx_edge.cli import PROVIDERS
    from onnx_edge.runtime.providers import resolve_provider
    from onnx_edge.targets import AUTO_ORDER, PROVIDER_CHOICES, TARGET_NAMES

    assert TARGET_NAMES == tuple(TARGETS) == ("cpu", "cuda", "dml")
    assert tuple(PROVIDERS.choices) == PROVIDER_CHOICES == ("auto", *TARGET_NAMES)
    assert AUTO_ORDER == ("cuda", "dml", "cpu")
    assert [t.ort_name for t in TARGETS.values()] == ["CPUExecutionProvider", "CUDAExecutionProvider",
                                                       "DmlExecutionProvider"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, t in TARGETS.items():
        assert t.name == name and t.extra.removeprefix("onnx-edge-kit[").removesuffix("]") in extras
    assert [name for name, t in TARGETS.items() if t.gguf_export] == ["cpu"]
    with pytest.raises(ProviderError, match="choose from auto, cpu, cuda, dml"):
        resolve_provider("tpu")


def test_gguf_export_refuses_a_gpu_target_in_the_api(tiny_models, tmp_path):
    """The gguf-needs-cpu rule lives in export_gguf_native (from TARGETS' gguf_export), not only in the CLI;
    it is checked before the source is read or the output touched."""
    from onnx_edge.errors import OutputError
    from onnx_edge.export.gguf_native import export_gguf_native

    for provider in ("cuda", "dml"):
        with pytest.raises(OutputError, match=f"CPU graphs .* for {provider} export fp32"):
            export_gguf_native(str(tmp_path / "missing.gguf"), tmp_path / "out", provider=provider)
    with pytest.raises(OutputError, match="'tpu' is not one of cpu, cuda, dml"):
        export_gguf_native(str(tiny_models("llama")), tmp_path / "out", provider="tpu")
    assert not (tmp_path / "out").exists()


def test_directml_session_options_are_set():
    import onnxruntime as ort

    opts = session_options(ort, 1, mem_pattern=False)
    assert opts.enable_mem_pattern is False
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session_options(ort, 1).enable_mem_pattern is True


# -- graphs shaped for DirectML --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_dml_export_rotates_outside_attention_and_unpacks_qkv(arch, folders):
    folder = folders(arch, "dml")
    manifest = load(folder, provider="cpu").manifest
    assert manifest.provider == "dml" and manifest.precision == "fp32"
    g = graph(folder)
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == manifest.architecture["num_layers"]
    for node in gqa:
        assert node.input[1] and node.input[2], "DirectML's GQA needs separate key and value inputs"
        assert all(a.name != "do_rotary" or a.i == 0 for a in node.attribute)
    rotary = ops(folder)["RotaryEmbedding"]
    assert rotary == (0 if arch == "gpt2" else 2 * manifest.architecture["num_layers"])
    assert unsupported_ops({(n.domain, n.op_type) for n in g.node}, "dml") == []
    # Same model, other graph: the logits agree with the CPU-shaped export.
    np.testing.assert_allclose(logits(folder), logits(folders(arch, "cpu")), atol=2e-4)


def test_dml_export_caps_a_sliding_window_model_at_its_window(folders):
    manifest = load(folders("mistral", "dml"), provider="cpu").manifest
    assert manifest.architecture["context_length"] == 16  # the tiny mistral's sliding_window


# -- fp16-based GPU variants ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["dml-fp16", "dml-int4", "cuda-fp16", "cuda-int4"])
def test_gpu_variants_run_on_an_fp16_base(variant, folders):
    provider, precision = variant.split("-")
    folder = folders("llama", variant)
    model = load(folder, provider="cpu")
    m = model.manifest
    assert (m.provider, m.precision, m.io.kv_dtype) == (provider, precision, "float16")
    g = graph(folder)
    outputs = {o.name: o.type.tensor_type.elem_type for o in g.output}
    assert outputs[m.io.logits] == onnx.TensorProto.FLOAT  # samplers get fp32 logits
    assert outputs[m.io.present_key.format(i=0)] == onnx.TensorProto.FLOAT16
    assert unsupported_ops({(n.domain, n.op_type) for n in g.node}, provider) == []
    counted = ops(folder)
    if precision == "int4":
        assert m.quantization["config"]["accuracy_level"] == 0
        assert counted["MatMulNBits"] >= 4 * m.architecture["num_layers"]
        assert ("GatherBlockQuantized" in counted) == (provider == "cuda")
        assert m.quantization["quality"]["top1"] >= 0.3
    else:
        assert m.quantization["quality"]["kl"] < 1e-3 and m.quantization["quality"]["top1"] >= 0.95
    assert model.generate(PROMPT, max_new_tokens=4, chat=False).generated_tokens == 4


def test_cpu_shaped_graph_cannot_become_a_dml_folder(folders, tmp_path):
    with pytest.raises(QuantizeError, match="export again with --provider dml"):
        quantize(folders("llama", "cpu"), tmp_path / "out", QuantConfig(precision="fp16", provider="dml", **FAST))
    assert not (tmp_path / "out").exists()


def test_dml_refuses_quantized_tables_and_cpu_only_schemes(folders, tmp_path):
    with pytest.raises(QuantizeError, match="GatherBlockQuantized"):
        quantize(folders("llama", "dml"), tmp_path / "a", QuantConfig(precision="int4", embeddings="quantize", **FAST))
    with pytest.raises(QuantizeError, match="not supported on provider 'dml'"):
        quantize(folders("llama", "dml"), tmp_path / "b", QuantConfig(precision="int8", scheme="dynamic", **FAST))


def test_quantize_defaults_to_the_folders_target(folders):
    assert load(folders("llama", "dml-fp16"), provider="cpu").manifest.provider == "dml"


# -- provider resolution ---------------------------------------------------------------------------------
def test_auto_never_falls_back_to_cpu_from_a_gpu_target(folders):
    import onnxruntime

    if "DmlExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has DirectML")
    with pytest.raises(ProviderError) as err:
        load(folders("llama", "dml-fp16"))
    assert "onnx-edge-kit[directml]" in str(err.value) and "--provider cpu" in str(err.value)
    assert "\n" not in str(err.value)
    assert load(folders("llama", "dml-fp16"), provider="cpu").provider == "cpu"
    assert load(folders("llama", "cpu")).provider == "cpu"


# -- the device-resident cache path, on the CPU ----------------------------------------------------------
@pytest.mark.parametrize("variant", ["cpu", "cuda-fp16"])
def test_device_buffers_give_the_same_tokens(variant, folders):
    folder = folders("llama", variant)
    host = load(folder, provider="cpu")
    device = load(folder, provider="cpu")
    device.session = DecoderSession(folder, device.manifest, "cpu", device_buffers=True)
    for prompt in (PROMPT, PROMPT + " over", "Hello"):
        a = host.generate(prompt, max_new_tokens=10, chat=False)
        b = device.generate(prompt, max_new_tokens=10, chat=False)
        assert a.token_ids == b.token_ids
    cache = device.session.new_cache(1, 8)
    assert not isinstance(cache.keys[0], np.ndarray) and cache.keys[0].device_name() == "cpu"
    batch_a = host.generate_batch(["Hello", PROMPT], max_new_tokens=6, chat=False)
    batch_b = device.generate_batch(["Hello", PROMPT], max_new_tokens=6, chat=False)
    assert [r.token_ids for r in batch_a] == [r.token_ids for r in batch_b]


# -- CUDA, where a GPU is present ------------------------------------------------------------------------
def test_cuda_keeps_the_cache_on_the_device(folders):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("no CUDAExecutionProvider in this onnxruntime build (install onnx-edge-kit[cuda] on an "
                    "NVIDIA machine)")
    for variant in ("cuda-fp16", "cuda-int4"):
        folder = folders("llama", variant)
        gpu, cpu = load(folder), load(folder, provider="cpu")
        assert gpu.provider == "cuda" and gpu.session.device_buffers
        cache = gpu.session.new_cache(1, 8)
        assert cache.keys[0].device_name() == "cuda"
        a = gpu.generate(PROMPT, max_new_tokens=10, chat=False)
        b = cpu.generate(PROMPT, max_new_tokens=10, chat=False)
        assert a.token_ids[:4] == b.token_ids[:4]  # fp16 kernels differ; the first tokens must agree


# -- DirectML folders in onnxruntime 1.24 (side environment) ---------------------------------------------
def side_run(folder: Path, prompt: str = PROMPT, chat: bool = False, new_tokens: int = 8) -> dict:
    if not SIDE_PYTHON.is_file():
        if os.environ.get("ONNX_EDGE_SIDE_PYTHON"):  # make test promised one: its absence is a failure
            pytest.fail(f"ONNX_EDGE_SIDE_PYTHON={SIDE_PYTHON} does not exist")
        pytest.skip(f"no side environment at {SIDE_PYTHON} (make test builds it)")
    done = subprocess.run([str(SIDE_PYTHON), str(ROOT / "tests" / "ort_side.py"), str(folder), prompt,
                           "chat" if chat else "plain", str(new_tokens)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("variant", ["dml-fp16", "dml-int4"])
def test_dml_folder_runs_in_onnxruntime_1_24_with_directml_options(variant, folders):
    folder = folders("llama", variant)
    side = side_run(folder)
    assert side["onnxruntime"].startswith("1.24."), side["onnxruntime"]
    assert side["mem_pattern"] is False and side["sequential"] is True
    ours = logits(folder)
    np.testing.assert_allclose(np.array(side["logits"]), ours, atol=2e-2, rtol=0)
    model = load(folder, provider="cpu")
    assert side["greedy"] == model.generate(PROMPT, max_new_tokens=8, chat=False).token_ids
    if variant == "dml-fp16":  # and fp16 stays close to the fp32 model it came from
        reference = logits(folders("llama", "cpu"))
        assert np.abs(np.array(side["logits"]) - reference).max() < 0.05
        assert np.argmax(side["logits"], -1).tolist() == np.argmax(reference, -1).tolist()


# -- the command line -------------------------------------------------------------------------------------
def test_cli_target_mistakes_are_one_line_errors(folders, tiny_models, tmp_path):
    from tests.cli_cases import assert_one_line_error, assert_ok, invoke

    out = tmp_path / "q"
    assert_one_line_error(invoke("quantize", folders("llama", "cpu"), "-o", out, "--precision", "fp16",
                                 "--provider", "dml"), "--provider dml", out=out)
    assert_one_line_error(invoke("export", tiny_models("llama"), "-o", out, "--precision", "gguf",
                                 "--provider", "cuda"), "CPU graphs", out=out)
    usage = invoke("export", tiny_models("llama"), "-o", out, "--provider", "tpu")
    assert usage.exit_code == 2 and "'tpu' is not one of" in usage.output
    assert not out.exists()
    result = invoke("info", folders("llama", "dml-int4"))
    assert_ok(result)
    assert "int4 for dml" in result.output
