"""Sampling: greedy, seeded reproducibility, top-k/top-p/min-p filters, repetition penalty, validation."""

import ast
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_edge.errors import GenerationError
from onnx_edge.runtime.sampling import SamplingParams, apply_repetition_penalty, filtered_probs, make_sampler


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture
def logits():
    return np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32)


# Probabilities 0.5, 0.3, 0.15, 0.05 for tokens 0..3.
PROBS = np.array([0.5, 0.3, 0.15, 0.05])
LOG4 = np.log(PROBS)[None, :].astype(np.float32)


def test_greedy_is_argmax(logits):
    ids = make_sampler(SamplingParams())(logits)
    assert ids.dtype == np.int64 and ids.shape == (4,)
    np.testing.assert_array_equal(ids, logits.argmax(axis=-1))


def test_same_seed_same_samples_different_seed_differs():
    flat = np.zeros((8, 1000), dtype=np.float32)  # uniform: any two streams agreeing would be chance
    a, b, c = (make_sampler(SamplingParams(temperature=1.0, seed=s)) for s in (7, 7, 8))
    runs = [np.concatenate([f(flat) for _ in range(5)]) for f in (a, b, c)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("seed", range(5))
def test_top_k_1_is_argmax(logits, seed):
    ids = make_sampler(SamplingParams(temperature=1.5, top_k=1, seed=seed))(logits)
    np.testing.assert_array_equal(ids, logits.argmax(axis=-1))


@pytest.mark.parametrize("seed", range(5))
def test_tiny_top_p_is_argmax(logits, seed):
    ids = make_sampler(SamplingParams(temperature=2.0, top_p=1e-9, seed=seed))(logits)
    np.testing.assert_array_equal(ids, logits.argmax(axis=-1))


def test_top_k_keeps_k_best():
    p = filtered_probs(LOG4, SamplingParams(temperature=1.0, top_k=2))
    np.testing.assert_allclose(p, [[0.625, 0.375, 0.0, 0.0]])


@pytest.mark.parametrize("top_p, kept", [(0.4, 1), (0.7, 2), (0.85, 3), (1.0, 4)])
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    p = filtered_probs(LOG4, SamplingParams(temperature=1.0, top_p=top_p))
    assert np.count_nonzero(p) == kept
    np.testing.assert_allclose(p[0, :kept], PROBS[:kept] / PROBS[:kept].sum())


def test_min_p_drops_tokens_below_fraction_of_best():
    # 0.5 * max prob (0.5) = 0.25: tokens 0 and 1 survive.
    params = SamplingParams(temperature=1.0, min_p=0.5, seed=3)
    np.testing.assert_allclose(filtered_probs(LOG4, params), [[0.625, 0.375, 0.0, 0.0]])
    draws = _draw_many(params, LOG4, 2000)
    assert set(np.unique(draws)) == {0, 1}


def test_temperature_scales_logits(logits):
    p = filtered_probs(logits, SamplingParams(temperature=0.5))
    np.testing.assert_allclose(p, _softmax(logits.astype(np.float64) * 2), rtol=1e-10)


def _draw_many(params: SamplingParams, row: np.ndarray, n: int) -> np.ndarray:
    """n draws for one (1, vocab) row, one step after another: the rows of one seeded batch each replay the
    seed's stream (a row equals its batch-1 run), so a batch of copies would draw the same token n times."""
    sampler = make_sampler(params)
    return np.concatenate([sampler(row) for _ in range(n)])


def test_seeded_batch_rows_replay_their_own_stream():
    params = SamplingParams(temperature=1.0, seed=5)
    batch = np.concatenate([LOG4, LOG4[:, ::-1]])
    together = make_sampler(params)(batch)
    alone = [make_sampler(params)(LOG4)[0], make_sampler(params)(LOG4[:, ::-1])[0]]
    assert together.tolist() == alone


def test_distribution_matches_softmax():
    row = np.array([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2]], dtype=np.float32)
    n = 40_000
    draws = _draw_many(SamplingParams(temperature=1.0, seed=1234), row, n)
    observed = np.bincount(draws, minlength=row.shape[1])
    expected = _softmax(row.astype(np.float64))[0] * n
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 30  # 7 degrees of freedom: p ~ 1e-4 at 30


def test_sampler_never_picks_masked_tokens():
    row = np.full((1, 10), -np.inf, dtype=np.float32)
    row[0, [3, 7]] = [0.0, 1.0]
    draws = _draw_many(SamplingParams(temperature=1.0, seed=0), row, 1000)
    assert set(np.unique(draws)) == {3, 7}


def test_bad_logits_shape_or_values():
    sampler = make_sampler(SamplingParams(temperature=1.0, seed=0))
    with pytest.raises(ValueError):
        sampler(np.zeros(5, dtype=np.float32))
    with pytest.raises(GenerationError, match="NaN"):  # broken weights, named as such
        sampler(np.array([[0.0, np.nan]], dtype=np.float32))


def test_repetition_penalty_matches_hand_computation():
    logits = np.array([[1.0, -2.0, 3.0, 0.5], [4.0, -1.0, 0.0, -3.0]], dtype=np.float32)
    before = logits.copy()
    out = apply_repetition_penalty(logits, [[0, 1, 1], [3, 2]], 2.0)
    expected = np.array([[0.5, -4.0, 3.0, 0.5], [4.0, -1.0, 0.0, -6.0]], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(logits, before)  # input untouched
    # A 2-D int array of history works the same way.
    out2 = apply_repetition_penalty(logits, np.array([[0, 1, 1], [3, 2, 3]]), 2.0)
    np.testing.assert_array_equal(out2, expected)


def test_repetition_penalty_one_and_empty_history_copy():
    logits = np.ones((2, 3), dtype=np.float32)
    out = apply_repetition_penalty(logits, [[], []], 1.3)
    np.testing.assert_array_equal(out, logits)
    assert out is not logits


def test_repetition_penalty_bad_input():
    logits = np.ones((1, 3), dtype=np.float32)
    with pytest.raises(GenerationError):  # the penalty is checked where it enters, not per token
        SamplingParams(repetition_penalty=0.0)
    with pytest.raises(ValueError):
        apply_repetition_penalty(logits, [[0], [1]], 1.2)  # 2 histories, 1 row
    with pytest.raises(ValueError):
        apply_repetition_penalty(logits, [[3]], 1.2)  # id outside the vocab


BAD = [
    ("temperature", -0.1),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", True),
    ("temperature", "0.7"),
    ("top_k", -1),
    ("top_k", 2.0),
    ("top_k", True),
    ("top_p", 0.0),
    ("top_p", 1.01),
    ("top_p", -0.5),
    ("top_p", math.nan),
    ("top_p", None),
    ("min_p", -0.1),
    ("min_p", 1.0),
    ("min_p", math.nan),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", -1.0),
    ("repetition_penalty", math.nan),
    ("repetition_penalty", math.inf),
    ("repetition_penalty", False),
    ("seed", 1.5),
    ("seed", "42"),
    ("seed", True),
    ("seed", -1),
]


@pytest.mark.parametrize("field, value", BAD)
def test_invalid_values_raise(field, value):
    with pytest.raises(GenerationError, match="--" + field.replace("_", "-")):  # named as the flag
        SamplingParams(**{field: value})


def test_params_are_checked_once_and_frozen():
    params = SamplingParams(temperature=0.8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.top_p = 0.0
    with pytest.raises(GenerationError, match="--top-p"):  # a changed copy is built, so checked, anew
        dataclasses.replace(params, top_p=0.0)


def test_errors_name_the_keyword_and_the_flag():
    with pytest.raises(GenerationError, match=r"^--top-p must be a number in \(0, 1\], got 0\.0$"):
        SamplingParams(top_p=0.0)
    with pytest.raises(GenerationError, match=r"--repetition-penalty"):
        SamplingParams(repetition_penalty=0.0)


def test_numpy_scalars_are_accepted():
    params = SamplingParams(temperature=np.float32(0.7), top_k=np.int64(5), seed=np.int64(3))
    assert make_sampler(params)(np.zeros((1, 10), dtype=np.float32)).shape == (1,)
    assert [type(v) for v in (params.temperature, params.top_k, params.seed)] == [float, int, int]


@pytest.mark.parametrize("module", ["sampling.py", "streaming.py", "chat.py"])
def test_runtime_modules_stay_torch_free(module):
    # The runtime must install without torch: only numpy, tokenizers, jinja2, stdlib, onnx_edge.errors and
    # onnx_edge.textfile.
    source = (Path(__file__).parents[1] / "runtime" / module).read_text(encoding="utf-8")
    allowed = {"numpy", "tokenizers", "jinja2", "onnx_edge"}
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            assert top in allowed or top in sys.stdlib_module_names, name
            if top == "onnx_edge":
                assert name in ("onnx_edge.errors", "onnx_edge.textfile"), name
