"""Every family added after the first five, against transformers on its tiny random model (tests/fixtures.py):
greedy tokens equal `generate` on both graphs, and a 60-token prompt's logits match at every position through
forward() and the shared-buffer step(). Each family's own features are tested in its file (test_qwen3.py,
test_gemma.py, test_llama_variants.py)."""

from __future__ import annotations

import pytest

from tests.family_checks import (assert_greedy_equals_generate, assert_long_prompt_logits_match, export_variants,
                                 load_without_eos)

pytest.importorskip("torch")

FAMILIES = ["qwen3", "gemma", "gemma2", "gemma3_text", "granite", "smollm3", "olmo2", "gpt_neox"]
PROMPT = "The quick brown fox jumps over the lazy dog because"  # 40+ tokens with the tiny tokenizer


@pytest.fixture(scope="module")
def folders(tiny_models, exported_models, tmp_path_factory):
    return export_variants(tiny_models, exported_models, tmp_path_factory)




@pytest.mark.parametrize("variant", ["fused", "reference"])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_transformers_generate(family, variant, tiny_models, folders):
    assert_greedy_equals_generate(tiny_models(family), load_without_eos(folders(family, variant)), PROMPT)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_pytorch_on_a_long_prompt(family, tiny_models, folders):
    assert_long_prompt_logits_match(tiny_models(family), load_without_eos(folders(family, "fused")).session)
