"""compare's foreign engines: the onnxruntime-genai folder adapter (its config and graph read into an IOSpec
before the session), the llama.cpp adapter on a stand-in llama_cpp module, a .gguf without llama-cpp-python,
and the PyTorch reference. Split from tests/test_compare.py, whose fixtures and folder builders it shares."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx_edge.cli import cli
from onnx_edge.evaluate.bench import BenchParams, bench_in_process
from onnx_edge.evaluate.compare import compare
from onnx_edge.evaluate.engine import CompareError
from onnx_edge.evaluate.genai_engine import GenaiVariant
from onnx_edge.evaluate.llama_cpp_engine import GgufVariant
from onnx_edge.evaluate.variants import OnnxEdgeVariant, describe
from tests.test_compare import CLI_FAST, fp32, genai_folder, int4, opts, row, work  # noqa: F401 - fixtures, builders


def test_gguf_without_llama_cpp_names_the_extra(tmp_path, monkeypatch, fp32):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails, installed or not
    gguf = tmp_path / "model.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    res = CliRunner().invoke(cli, ["compare", str(fp32), str(gguf), "--no-speed"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "llama-cpp-python" in lines[0] and "onnx-edge-kit[gguf-runtime]" in lines[0]


def test_genai_folder_runs_through_the_adapter(fp32, work):
    genai = genai_folder(fp32, work / "genai")
    v = describe(str(genai))
    assert (v.kind, v.engine, v.precision) == ("genai", GenaiVariant.engine, "fp32")
    report = compare([describe(str(fp32)), v], options=opts())
    r = row(report, "genai")
    assert r["variant"]["engine"] == "onnxruntime-genai"
    assert r["quality"]["kl"] <= 1e-9 and r["quality"]["top1"] == 1.0
    assert r["generation"]["identical"] == 1.0
    assert row(report, "model")["variant"]["engine"] == OnnxEdgeVariant.engine


def test_genai_folder_errors(fp32, work):
    # the graph needs position_ids but genai_config.json does not name it: compare cannot feed it
    no_pos = genai_folder(fp32, work / "genai-nopos", position_ids=False)
    with pytest.raises(CompareError, match="the graph needs input 'position_ids'"):
        compare([describe(str(fp32)), describe(str(no_pos))], options=opts())
    wrong = genai_folder(fp32, work / "genai-heads", num_key_value_heads=3)
    with pytest.raises(CompareError, match=r"KV input past_key_values\.0\.key has shape"):
        compare([describe(str(fp32)), describe(str(wrong))], options=opts())
    broken = genai_folder(fp32, work / "genai-broken")
    cfg = json.loads((broken / "genai_config.json").read_text())
    del cfg["model"]["decoder"]["outputs"]["logits"]
    (broken / "genai_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CompareError, match="genai_config.json lacks decoder outputs.logits"):
        describe(str(broken))


def test_genai_io_comes_from_the_graph(fp32, work):
    """The manifest is complete before any session: position_ids fed only where the graph takes it, the KV dtype
    the graph's (read by runtime.onnx_proto, not patched onto a session)."""
    from onnx_edge.evaluate.genai_engine import genai_io, read_genai_config
    from onnx_edge.runtime.onnx_proto import GraphInterface

    genai = work / "genai" if (work / "genai").exists() else genai_folder(fp32, work / "genai")
    cfg = read_genai_config(genai)
    kv = (10, ["batch", cfg["num_key_value_heads"], "past", cfg["head_size"]])  # float16
    inputs = {"input_ids": (7, ["batch", "seq"]), "attention_mask": (7, ["batch", "total"])}
    inputs |= {f"past_key_values.{i}.{t}": kv for i in range(cfg["num_hidden_layers"]) for t in ("key", "value")}
    io = genai_io(genai, cfg, GraphInterface(inputs=inputs))
    assert io.position_ids is None and io.kv_dtype == "float16"
    inputs["position_ids"] = (7, ["batch", "seq"])
    assert genai_io(genai, cfg, GraphInterface(inputs=inputs)).position_ids == "position_ids"
    inputs[next(iter(k for k in inputs if k.startswith("past")))] = (16, kv[1])
    with pytest.raises(CompareError, match="KV cache element type 16 is not supported"):
        genai_io(genai, cfg, GraphInterface(inputs=inputs))


class _FakeLlama:
    """Stands in for llama_cpp.Llama (the calls compare makes), computing logits with an onnx-edge folder."""

    folders: dict[str, Path] = {}

    def __init__(self, model_path, vocab_only=False, logits_all=False, n_ctx=512, verbose=True, n_threads=None):
        from onnx_edge.runtime import load

        self.model = load(self.folders[model_path], provider="cpu")
        self.metadata = {"general.file_type": "3", "general.architecture": "llama",
                         "llama.context_length": str(self.model.shape.context_length)}
        self.scores = np.zeros((n_ctx, self.model.shape.vocab_size), dtype=np.float32)
        self.n_tokens, self.tokens, self.logits_all = 0, [], logits_all

    def tokenize(self, text: bytes, add_bos=True, special=False):
        return self.model.tokenizer.encode(text.decode("utf-8"), add_special_tokens=add_bos).ids

    def detokenize(self, tokens, special=False):
        return self.model.tokenizer.decode(list(tokens), skip_special_tokens=not special).encode("utf-8")

    def n_vocab(self):
        return self.model.shape.vocab_size

    def reset(self):
        self.n_tokens, self.tokens = 0, []

    def eval(self, tokens):
        assert self.logits_all
        self.tokens += list(tokens)
        ids = np.array([self.tokens], dtype=np.int64)
        s = self.model.session
        logits, _ = s.forward(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], s.empty_cache(1))
        self.scores[:len(self.tokens)] = logits[0]
        self.n_tokens = len(self.tokens)

    def close(self):
        self.model = None


def test_gguf_variant_through_llama_cpp_adapter(fp32, tmp_path, monkeypatch):
    gguf = tmp_path / "SmolTiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    _FakeLlama.folders = {str(gguf): fp32}
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=_FakeLlama))
    v = describe(str(gguf))
    assert (v.kind, v.engine, v.precision) == ("gguf", GgufVariant.engine, "gguf Q4_1")
    report = compare([describe(str(fp32)), v], options=opts())
    r = row(report, gguf.name)
    assert r["variant"]["engine"] == "llama.cpp"
    assert r["quality"]["kl"] <= 1e-9 and r["generation"]["identical"] == 1.0
    # the speed worker's measurement, in this process: bench's prompt ids and greedy tokens, on llama.cpp's loop
    params = BenchParams(prompt_tokens=8, gen_tokens=4, runs=1, warmup=1)
    speed, ours = v.bench_here(params), bench_in_process(fp32, params)
    assert (speed.prompt_tokens, speed.gen_tokens, speed.runs, speed.precision) == (8, 4, 1, "gguf Q4_1")
    assert (speed.prompt_sha256, speed.output_sha256) == (ours.prompt_sha256, ours.output_sha256)
    assert speed.decode_tps > 0 and speed.weight_mb == speed.size_mb == gguf.stat().st_size / 1e6


def test_pytorch_reference(fp32, tiny_models, int4):
    res = CliRunner().invoke(cli, ["compare", str(fp32), str(int4), "--reference", f"pytorch:{tiny_models('llama')}",
                                   "--no-speed", "--json", *CLI_FAST])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    ref, onnx_fp32, q4 = data["variants"]
    assert ref["is_reference"] and ref["variant"]["engine"] == "pytorch" and ref["speed"] is None
    assert onnx_fp32["quality"]["kl"] < 1e-6 and onnx_fp32["quality"]["top1"] == 1.0
    assert onnx_fp32["generation"]["identical"] == 1.0
    assert q4["quality"]["kl"] > onnx_fp32["quality"]["kl"]


def test_pytorch_reference_without_torch_names_the_extra(fp32, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "onnx_edge.export.torch_reference", raising=False)
    res = CliRunner().invoke(cli, ["compare", str(fp32), "--reference", "pytorch:whatever", "--no-speed"])
    assert res.exit_code == 1
    assert "needs the export extra (torch missing)" in res.output and "onnx-edge-kit[export]" in res.output


# -- output ----------------------------------------------------------------------------------------------
