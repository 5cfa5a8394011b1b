"""`onnx-edge compare` and onnx_edge.evaluate.compare on the tiny exported llama: identical models score KL 0,
perturbations score KL > 0 in the right order, the metric equals a hand computation, JSON/HTML output,
the CLI and its refusals (other tokenizer, other vocabulary). The foreign engines (genai, llama.cpp, PyTorch):
tests/test_compare_engines.py.
Speed is measured once, on tiny sizes, and never asserted."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnx_edge.cli import cli
from onnx_edge.evaluate.compare import CompareOptions, compare
from onnx_edge.evaluate.quality import SCORING_RULE
from onnx_edge.evaluate.report_html import render_html
from onnx_edge.evaluate.engine import CompareError, Variant
from onnx_edge.evaluate.variants import describe
from onnx_edge.manifest import read_manifest, write_manifest

FAST = dict(context=32, eval_windows=3, agreement_tokens=6, speed=False, prompts=["Hello there", "The quick brown fox"])
CLI_FAST = ["--context", "32", "--eval-windows", "2", "--agreement-tokens", "4"]


def opts(**kw) -> CompareOptions:
    return CompareOptions(**{**FAST, **kw})


@pytest.fixture(scope="module")
def fp32(exported_models) -> Path:
    return exported_models("llama")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare")


@pytest.fixture(scope="module")
def int4(fp32, work) -> Path:
    from onnx_edge.quantize import QuantConfig, quantize

    out = work / "int4"
    quantize(fp32, out, QuantConfig(precision="int4", context=64, eval_windows=2))
    return out


@pytest.fixture(scope="module")
def twin(fp32, work) -> Path:
    """A byte-identical copy in another folder: a different variant with the same weights."""
    out = work / "twin"
    shutil.copytree(fp32, out)
    return out


def scaled_copy(src: Path, out: Path, factor: float, weight: str = "model.layers.1.mlp.down.weight") -> Path:
    """A copy of `src` whose one weight is multiplied by `factor` (manifest rewritten with the new hashes)."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(src, out)
    model = onnx.load(str(src / "model.onnx"))
    for i, init in enumerate(model.graph.initializer):
        if init.name == weight:
            new = numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), weight)
            model.graph.initializer[i].CopyFrom(new)
            break
    else:
        raise AssertionError(f"{weight} not found")
    (out / "model.onnx").unlink()
    (out / "model.onnx.data").unlink()
    onnx.save_model(model, str(out / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data")
    write_manifest(out, read_manifest(src))
    return out


def genai_folder(src: Path, out: Path, position_ids: bool = True, **overrides) -> Path:
    """What onnxruntime-genai's model builder writes: model.onnx (+ data), tokenizer, genai_config.json in
    genai's schema (model.decoder.inputs/outputs, head_size, num_key_value_heads, ...). No manifest."""
    out.mkdir(parents=True)
    for name in ("model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    a = read_manifest(src).architecture
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    if position_ids:
        inputs["position_ids"] = "position_ids"
    cfg = {"model": {"bos_token_id": a["bos_token_id"], "context_length": a["context_length"],
                     "decoder": {"session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                                 "filename": "model.onnx", "head_size": a["head_dim"], "hidden_size": a["hidden_size"],
                                 "inputs": inputs,
                                 "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                             "present_value_names": "present.%d.value"},
                                 "num_attention_heads": a["num_heads"], "num_hidden_layers": a["num_layers"],
                                 "num_key_value_heads": a["num_kv_heads"]},
                     "eos_token_id": a["eos_token_ids"][0], "pad_token_id": a["pad_token_id"], "type": a["model_type"],
                     "vocab_size": a["vocab_size"]},
           "search": {"do_sample": False, "max_length": a["context_length"], "past_present_share_buffer": True}}
    cfg["model"]["decoder"].update(overrides)
    (out / "genai_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out


def row(report, name: str) -> dict:
    return next(r for r in report.to_dict()["variants"] if r["variant"]["name"] == name)


# -- the metrics -----------------------------------------------------------------------------------------


def test_identical_models_score_zero(fp32, twin):
    report = compare([describe(str(fp32)), describe(str(twin))], options=opts())
    ref, other = report.variants
    assert ref.is_reference and not other.is_reference
    q = other.quality
    assert q["kl"] <= 1e-9 and max(q["per_window_kl"]) <= 1e-9
    assert q["top1"] == 1.0
    assert q["perplexity"] == pytest.approx(q["perplexity_reference"], rel=1e-12)
    assert q["perplexity"] == pytest.approx(ref.quality["perplexity"], rel=1e-12)
    g = other.generation
    assert g["identical"] == 1.0 and g["min_matched"] == g["gen_tokens"] == 6
    assert g["tokens"] == ref.generation["tokens"]
    assert report.scoring == SCORING_RULE.format(context=32)


def test_perturbations_raise_kl_in_order(fp32, int4, work):
    small = scaled_copy(fp32, work / "scaled-1.05", 1.05)
    large = scaled_copy(fp32, work / "scaled-2", 2.0)
    report = compare([describe(str(p)) for p in (fp32, small, large, int4)], options=opts())
    kl = {r.name: r.quality["kl"] for r in report.variants}
    assert kl["model"] == 0.0  # the fp32 reference against itself
    assert 0 < kl["scaled-1.05"] < kl["scaled-2"]
    assert kl["int4"] > 0
    assert row(report, "int4")["variant"]["precision"].startswith("int4 weight_only")
    assert report.reference["name"] == "model"
    # the reference defaults to the fp32 variant wherever it stands in the list
    again = compare([describe(str(int4)), describe(str(fp32))], options=opts(eval_windows=1, prompts=["Hi"]))
    assert again.reference["precision"] == "fp32" and again.variants[1].is_reference
    # --reference PATH: a folder outside the list becomes the first row; one inside it is just marked
    outside = compare([describe(str(int4))], describe(str(fp32)), options=opts(eval_windows=1, prompts=["Hi"]))
    assert [r.name for r in outside.variants] == ["model", "int4"] and outside.variants[0].is_reference
    inside = compare([describe(str(fp32)), describe(str(int4))], describe(str(int4)),
                     options=opts(eval_windows=1, prompts=["Hi"]))
    assert [r.is_reference for r in inside.variants] == [False, True] and inside.variants[1].quality["kl"] == 0


class FakeEngine:
    """Logits from a fixed table: logits[t] = table[window[t]] (a bigram model)."""

    def __init__(self, table: np.ndarray):
        self.table = table

    def forward(self, ids, mask, positions, past):
        return self.table[ids], None

    def empty_cache(self, batch):
        return None

    def greedy(self, ids, n):
        out, last = [], ids[-1]
        for _ in range(n):
            last = int(np.argmax(self.table[last]))
            out.append(last)
        return out

    def close(self):
        pass


@dataclasses.dataclass(frozen=True)
class FakeTokenizer:
    vocab: int

    def encode(self, text, add_special_tokens=False):
        return types.SimpleNamespace(ids=[ord(c) % self.vocab for c in text])

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(65 + i % 26) for i in ids)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class FakeVariant(Variant):
    kind = "fake"
    engine = "fake"
    table: np.ndarray

    def open(self, context):
        return FakeEngine(self.table)


def fake_variant(name: str, table: np.ndarray, **kw) -> Variant:
    vocab = table.shape[0]
    return FakeVariant(spec=name, name=name, path=None, precision=kw.pop("precision", "x"), size_mb=1.0,
                       vocab_size=vocab, context_length=64, tokenizer=FakeTokenizer(vocab), table=table, **kw)


def test_metric_equals_hand_computation():
    rng = np.random.default_rng(0)
    vocab, context = 5, 6
    ref_table = rng.normal(size=(vocab, vocab)).astype(np.float32)
    cand_table = (ref_table + rng.normal(scale=0.5, size=(vocab, vocab))).astype(np.float32)
    text = "abcdeabcdeabcdeaabbccddee" * 3
    report = compare([fake_variant("ref", ref_table, precision="fp32"), fake_variant("cand", cand_table)],
                     options=opts(context=context, eval_windows=2, agreement_tokens=3, prompts=["ab"], text=text))
    q = row(report, "cand")["quality"]
    # by hand: the same windows (token_windows: evenly spread whole windows), rows 3 and 4 of each scored
    ids = [ord(c) % vocab for c in text]
    available = len(ids) // context
    picks = [round(x) for x in np.linspace(0, available - 1, 2)]
    kls, agree, nll, nll_ref, n = [], 0, 0.0, 0.0, 0

    def logp(table, token):
        row_ = [float(v) for v in table[token]]
        z = math.log(sum(math.exp(v) for v in row_))
        return [v - z for v in row_]

    for p in picks:
        w = ids[p * context:(p + 1) * context]
        window_kl = 0.0
        for t in range(context // 2, context - 1):
            lr, lc = logp(ref_table, w[t]), logp(cand_table, w[t])
            window_kl += sum(math.exp(a) * (a - b) for a, b in zip(lr, lc))
            agree += int(np.argmax(lr) == np.argmax(lc))
            nll_ref -= lr[w[t + 1]]
            nll -= lc[w[t + 1]]
            n += 1
        kls.append(window_kl / (context - 1 - context // 2))
    assert q["tokens"] == n == 4
    assert q["kl"] == pytest.approx(sum(kls) / len(kls), rel=1e-9)
    assert q["per_window_kl"] == pytest.approx(kls, rel=1e-9)
    assert q["top1"] == pytest.approx(agree / n)
    assert q["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-9)
    assert q["perplexity_reference"] == pytest.approx(math.exp(nll_ref / n), rel=1e-9)
    # generation: greedy chains from the prompt's last token, compared token by token
    ref_tokens = FakeEngine(ref_table).greedy([ord("b") % vocab], 3)
    cand_tokens = FakeEngine(cand_table).greedy([ord("b") % vocab], 3)
    matched = next((i for i, (a, b) in enumerate(zip(ref_tokens, cand_tokens)) if a != b), 3)
    assert row(report, "cand")["generation"]["matched"] == [matched]


# -- refusals --------------------------------------------------------------------------------------------


def test_other_tokenizer_is_refused(fp32, work):
    out = work / "other-tokenizer"
    shutil.copytree(fp32, out)
    tok = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    # swap the ids of two frequent pieces: same vocabulary size, different encoding
    a, b = "e", "t"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (out / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    write_manifest(out, read_manifest(fp32))
    with pytest.raises(CompareError, match="tokenizes differently from the reference"):
        compare([describe(str(fp32)), describe(str(out))], options=opts())
    res = CliRunner().invoke(cli, ["compare", str(fp32), str(out), "--no-speed", *CLI_FAST])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: other-tokenizer tokenizes differently")


def test_other_vocabulary_is_refused(fp32):
    v = describe(str(fp32))
    bigger = dataclasses.replace(v, name="bigger", spec="bigger", path=None, vocab_size=v.vocab_size + 1)
    with pytest.raises(CompareError, match="vocabulary of 513 tokens but the reference model has 512"):
        compare([v, bigger], options=opts())


def test_bad_inputs_are_one_line_errors(fp32, tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    for args, needle in (
        ([str(tmp_path / "missing")], "no such file or folder"),
        ([str(tmp_path / "empty")], "not a model folder"),
        ([str(fp32), str(fp32)], "the same variant is given twice"),
        ([str(fp32), "--context", "2"], "context must be at least 4"),
        ([str(fp32), "--agreement-tokens", "0"], "--agreement-tokens must be an integer >= 1"),
    ):
        res = runner.invoke(cli, ["compare", *args, "--no-speed"])
        assert res.exit_code == 1, (args, res.output)
        assert needle in res.output and res.output.count("\n") == 1, (args, res.output)


# -- foreign variants ------------------------------------------------------------------------------------


VARIANT_KEYS = {"variant", "is_reference", "quality", "generation", "speed", "speed_note"}
QUALITY_KEYS = {"kl", "top1", "perplexity", "perplexity_reference", "tokens", "windows", "context", "per_window_kl",
                "text", "scoring"}
GEN_KEYS = {"prompts", "gen_tokens", "matched", "mean_matched", "min_matched", "identical", "tokens", "sample"}
SPEED_KEYS = {"prefill_tps", "decode_tps", "ttft_s", "peak_rss_mb", "size_mb", "stats"}


def test_cli_table_and_json(fp32, int4, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\n\nOnce upon a time\n", encoding="utf-8")
    text = tmp_path / "text.txt"
    text.write_text("The evaluation text is the user's own file, used whole. " * 40, encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", str(fp32), str(int4), "--no-speed", "--prompts", str(prompts),
                              "--text-file", str(text), *CLI_FAST])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for needle in ("onnx-edge compare", "model (ref)", "int4 weight_only", "perplexity", "KL vs ref", "top-1",
                   "second half of each window is scored", "2 prompts"):
        assert needle in out, needle
    res = runner.invoke(cli, ["compare", str(fp32), str(int4), "--no-speed", "--json", "--prompts", str(prompts),
                              "--text-file", str(text), *CLI_FAST])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["schema"] == "onnx-edge-compare/1" and data["text"] == str(text)
    assert data["prompts"] == ["Hello there", "Once upon a time"] and data["speed"] is None
    assert data["context"] == 32 and data["windows"] == 2 and data["scoring"] == SCORING_RULE.format(context=32)
    assert [v["variant"]["name"] for v in data["variants"]] == ["model", "int4"]
    for v in data["variants"]:
        assert set(v) == VARIANT_KEYS
        assert QUALITY_KEYS <= set(v["quality"]) and GEN_KEYS <= set(v["generation"])
        assert len(v["quality"]["per_window_kl"]) == 2 and len(v["generation"]["matched"]) == 2
        assert v["speed"] is None and "no-speed" in v["speed_note"]
        assert {"size_mb", "precision", "engine", "kind", "path"} <= set(v["variant"])


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def test_cli_with_speed_html_and_genai_worker(fp32, int4, work, tmp_path):
    genai = work / "genai" if (work / "genai").exists() else genai_folder(fp32, work / "genai")
    html_file = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["compare", str(fp32), str(int4), str(genai), "--json", "--html", str(html_file),
                                   "--prompt-tokens", "8", "--gen-tokens", "4", "--runs", "1", *CLI_FAST])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["speed"]["prompt_tokens"] == 8
    for v in data["variants"]:
        assert SPEED_KEYS <= set(v["speed"]), v["variant"]["name"]
        assert v["speed"]["decode_tps"] > 0 and v["speed"]["gen_tokens"] == 4
    assert data["variants"][2]["speed"]["precision"] == "fp32"  # measured by compare's genai worker
    # the HTML: parses, carries its charts inline, and points at nothing outside the file
    page = html_file.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(page)
    parser.close()
    # KL, perplexity, per-window KL; with speed: decode speed, TTFT and peak RSS too
    assert parser.tags.count("svg") == 6 and "table" in parser.tags
    assert "circle" in parser.tags and "polyline" in parser.tags and "rect" in parser.tags
    assert not {"script", "link", "img", "iframe"} & set(parser.tags)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert not [a for a in parser.attrs if a[0] in ("src", "href")]
    for v in data["variants"]:
        assert v["variant"]["name"] in page


def test_html_without_speed_and_log_scale(fp32, int4):
    report = compare([describe(str(fp32)), describe(str(int4))], options=opts())
    page = render_html(report)
    # no speed run, no speed cards (an empty card said nothing): the subtitle says it was skipped
    assert "speed not measured (--no-speed)" in page and page.count("<svg") == 3
    d = report.to_dict()
    d["variants"][1]["quality"]["per_window_kl"] = [1e-4, 0.5, 0.0]  # 3.7 decades: log axis, zero drawn hollow
    page = render_html(d)
    assert "log scale" in page and 'fill="#fff" stroke=' in page


def test_report_round_trips_through_json(fp32, int4):
    from onnx_edge.evaluate.report import CompareReport, format_table

    report = compare([describe(str(fp32)), describe(str(int4))], options=opts(eval_windows=1, prompts=["Hi"]))
    data = json.loads(json.dumps(report.to_dict()))
    again = CompareReport.from_dict(data)
    assert again.to_dict() == data
    assert format_table(again).row_count == 2 and render_html(again) == render_html(data)


def test_compare_cli_is_torch_free(fp32, int4):
    from tests.test_torch_free import _run

    code = f"""
import json, sys
from onnx_edge.cli import cli
cli.main(["compare", {str(fp32)!r}, {str(int4)!r}, "--no-speed", "--json", "--context", "32", "--eval-windows", "1",
          "--agreement-tokens", "2"], standalone_mode=False)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "transformers", "onnx"))
print(json.dumps({{"leaked": leaked}}))
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"leaked": []}


def test_evaluate_modules_import_no_cycle():
    """No loop among evaluate's modules (every import statement, lazy and TYPE_CHECKING ones included): the
    engine modules never import variants.py or compare.py back."""
    from tests.test_torch_free import ROOT, imported_modules

    prefix = "onnx_edge.evaluate."
    graph = {p.stem: {name[len(prefix):].split(".")[0] for _, name in imported_modules(p) if name.startswith(prefix)}
             for p in sorted((ROOT / "evaluate").glob("*.py"))}
    assert {"engine", "variants", "genai_engine", "llama_cpp_engine", "speed", "compare", "bench"} <= set(graph)
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, path + [module])
        done.add(module)

    for module in graph:
        visit(module, [])
