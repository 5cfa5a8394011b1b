"""`onnx-edge bench` and onnx_edge.evaluate.bench on the tiny exported llama: schema, token counts, stats
order, size from the manifest, side-by-side CLI output, errors. Speed itself is never asserted."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from click.testing import CliRunner

from onnx_edge.cli import cli
from onnx_edge.errors import EdgeError
from onnx_edge.manifest import read_manifest
from onnx_edge.runtime import load
from onnx_edge.evaluate.bench import (BenchError, BenchParams, BenchResult, bench, bench_in_process, measure,
                                      prompt_ids, weight_bytes)

SIZES = dict(prompt_tokens=12, gen_tokens=5, runs=2, warmup=1)
PARAMS = BenchParams(provider="cpu", threads=1, **SIZES)
JSON_FIELDS = {"prefill_tps", "decode_tps", "ttft_s", "peak_rss_mb", "size_mb", "gbps", "stats", "precision",
               "provider", "threads", "prompt_tokens", "gen_tokens", "runs", "warmup", "path", "name", "weight_mb",
               "load_s", "prompt_sha256", "output_sha256", "context_length"}
STAT_METRICS = {"prefill_tps", "decode_tps", "ttft_s", "gbps"}


@pytest.fixture(scope="module")
def folder(exported_models):
    return exported_models("llama")


@pytest.fixture(scope="module")
def model(folder):
    return load(folder, provider="cpu", threads=1)


def _check_result(data: dict, folder, prompt_tokens: int, gen_tokens: int, runs: int) -> None:
    assert JSON_FIELDS <= set(data), sorted(JSON_FIELDS - set(data))
    assert (data["prompt_tokens"], data["gen_tokens"], data["runs"]) == (prompt_tokens, gen_tokens, runs)
    assert data["precision"] == "fp32" and data["provider"] == "cpu"
    assert set(data["stats"]) == STAT_METRICS
    for metric, s in data["stats"].items():
        assert set(s) == {"min", "median", "max"}
        assert 0 <= s["min"] <= s["median"] <= s["max"], (metric, s)
        assert data[metric] == s["median"]
    assert data["prefill_tps"] > 0 and data["decode_tps"] > 0 and data["ttft_s"] > 0
    manifest = read_manifest(folder)
    assert data["size_mb"] == pytest.approx(sum(e.size for e in manifest.files.values()) / 1e6, rel=1e-12)
    assert data["weight_mb"] == pytest.approx(weight_bytes(manifest) / 1e6, rel=1e-12)
    assert 0 < data["weight_mb"] <= data["size_mb"]
    assert data["gbps"] == pytest.approx(weight_bytes(manifest) * data["decode_tps"] / 1e9, rel=1e-9)
    assert data["peak_rss_mb"] > 0


def test_prompt_ids_deterministic_and_exact(model):
    a = prompt_ids(model.tokenizer, 300, model.shape.vocab_size)
    assert a == prompt_ids(model.tokenizer, 300, model.shape.vocab_size)
    assert len(a) == 300 and all(0 <= i < model.shape.vocab_size for i in a)
    assert prompt_ids(model.tokenizer, 7) == a[:7]
    with pytest.raises(BenchError):
        prompt_ids(model.tokenizer, 0)


def test_measure_counts_exactly_gen_tokens(model):
    ids = prompt_ids(model.tokenizer, 10, model.shape.vocab_size)
    timings = measure(model, ids, BenchParams(prompt_tokens=10, gen_tokens=6, runs=3, warmup=0))
    assert len(timings) == 3
    for t in timings:
        assert len(t.output_ids) == 6 and t.gen_tokens == 6 and t.prompt_tokens == 10
        assert t.ttft_s > 0 and t.decode_s > 0
    # greedy: every run produces the same tokens (eos included, never a stop)
    assert all(t.output_ids == timings[0].output_ids for t in timings)
    # every run prefilled the whole prompt: the runtime's prefix cache (same prompt again) was not used
    assert getattr(model.session, "last_reused", 0) == 0


def test_eos_does_not_stop_the_count(model):
    # Generate enough tokens that a tiny random model is very likely to emit its eos at least once;
    # whatever it emits, the count must be exact.
    ids = prompt_ids(model.tokenizer, 4, model.shape.vocab_size)
    (t,) = measure(model, ids, BenchParams(prompt_tokens=4, gen_tokens=40, runs=1, warmup=0))
    assert len(t.output_ids) == 40


def test_bench_subprocess_result(folder):
    (result,) = bench([folder], PARAMS)
    assert isinstance(result, BenchResult)
    data = json.loads(json.dumps(result.to_dict()))
    _check_result(data, folder, SIZES["prompt_tokens"], SIZES["gen_tokens"], SIZES["runs"])
    assert data["threads"] == 1 and data["warmup"] == 1


def test_in_process_matches_subprocess_tokens(folder):
    a = bench_in_process(folder, PARAMS)
    (b,) = bench([folder], PARAMS)
    assert a.prompt_sha256 == b.prompt_sha256 and a.output_sha256 == b.output_sha256


def test_cli_two_folders_side_by_side_json(folder, tmp_path):
    other = tmp_path / "copy-of-llama"
    shutil.copytree(folder, other)
    args = ["bench", str(folder), str(other), "--prompt-tokens", "8", "--gen-tokens", "3", "--runs", "2",
            "--threads", "1", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list) and len(data) == 2
    assert [d["path"] for d in data] == [str(folder), str(other)]
    for d, f in zip(data, (folder, other)):
        _check_result(d, f, 8, 3, 2)
    assert data[0]["prompt_sha256"] == data[1]["prompt_sha256"]
    assert data[0]["output_sha256"] == data[1]["output_sha256"]


def test_cli_table(folder, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(folder, other)
    result = CliRunner().invoke(cli, ["bench", str(folder), str(other), "--prompt-tokens", "8", "--gen-tokens", "3",
                                      "--runs", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for label in ("decode (tok/s)", "prefill (tok/s)", "time to first token", "peak RSS (MB)", "size on disk (MB)",
                  "GB/s"):
        assert label in out, out
    header = next(line for line in out.splitlines() if "second" in line)
    assert folder.name in header  # both folders are columns of the same row


def test_prompt_longer_than_context(folder):
    ctx = read_manifest(folder).architecture["context_length"]
    with pytest.raises(BenchError, match="context"):
        bench([folder], BenchParams(prompt_tokens=ctx + 1, gen_tokens=2))
    with pytest.raises(EdgeError, match="context"):  # prompt fits, prompt + generated does not
        bench_in_process(folder, BenchParams(prompt_tokens=ctx - 2, gen_tokens=4))
    result = CliRunner().invoke(cli, ["bench", str(folder), "--prompt-tokens", str(ctx + 1)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "context" in lines[0], result.output


@pytest.mark.parametrize("args", [["--gen-tokens", "1"], ["--runs", "0"], ["--threads", "0"]])
def test_cli_bad_sizes_are_one_line_errors(folder, args):
    result = CliRunner().invoke(cli, ["bench", str(folder), *args])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()][0].startswith("error: ")


def test_bench_params_are_checked_once_made():
    for bad in ({"gen_tokens": 1}, {"runs": 0}, {"warmup": -1}, {"prompt_tokens": True}, {"threads": 0}):
        with pytest.raises(EdgeError):
            BenchParams(**bad)
    params = BenchParams(prompt_tokens=8, gen_tokens=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.runs = 0
    params.check_context(12)
    with pytest.raises(BenchError, match="prompt \\+ generated tokens .* exceeds the model's context of 11"):
        params.check_context(11)


def test_cli_missing_folder(tmp_path):
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.startswith("error: ")


def test_bench_is_torch_free(folder):
    """The measurement runs with torch, transformers and onnx_edge.export blocked (see test_torch_free)."""
    from tests.test_torch_free import _run

    code = f"""
import json, sys
from onnx_edge.evaluate.bench import BenchParams, bench_in_process
r = bench_in_process({str(folder)!r}, BenchParams(prompt_tokens=6, gen_tokens=3, runs=1, warmup=0, threads=1))
leaked = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "transformers", "optimum"))
print(json.dumps({{"decode_tps": r.decode_tps, "leaked": leaked}}))
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["leaked"] == [] and out["decode_tps"] > 0
