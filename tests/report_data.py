"""A compare report as `onnx-edge compare --json` writes it, with made-up but plausible numbers: the HTML
report's tests render it without running four models."""

from __future__ import annotations

import copy

SPEED = {"provider": "cpu", "prompt_tokens": 256, "gen_tokens": 128, "runs": 2, "warmup": 1}
VARIANTS = (  # name, precision, size MB, KL, top-1, perplexity, prefill, decode, TTFT s, RSS MB
    ("smollm2-fp32", "fp32", 538.2, 0.0, 1.0, 9.81, 412.0, 31.5, 0.62, 905.0),
    ("smollm2-int8", "int8 weight_only rtn b32 asym", 177.4, 0.0042, 0.962, 9.86, 520.0, 52.5, 0.49, 420.0),
    ("smollm2-int4-gguf", "gguf Q4_1 blocks (exact)", 118.9, 0.0, 1.0, 9.81, 301.0, 64.0, 0.85, 360.0),
    ("smollm2-int4-rtn", "int4 weight_only rtn b32 asym", 101.3, 0.0611, 0.871, 10.42, 488.0, 69.9, 0.52, 330.0),
)


def report(speed: bool = True) -> dict:
    variants = []
    for i, (name, precision, size, kl, top1, ppl, prefill, decode, ttft, rss) in enumerate(VARIANTS):
        variants.append({
            "variant": {"spec": f"out/{name}", "name": name, "kind": "onnx-edge", "engine": "onnxruntime",
                        "path": f"out/{name}", "precision": precision, "size_mb": size, "vocab_size": 49152,
                        "context_length": 8192, "tokenizer_sha256": "ab" * 32, "recorded": None,
                        "model": "smollm2-135m-instruct"},
            "is_reference": i == 0,
            "quality": {"kl": kl, "top1": top1, "perplexity": ppl, "perplexity_reference": 9.81,
                        "per_window_kl": [kl * f for f in (0.7, 1.3, 0.9, 1.1)]},
            "generation": {"prompts": 8, "gen_tokens": 32, "matched": [32] * 8, "mean_matched": 32.0 - 9 * kl,
                           "min_matched": 32 - int(100 * kl), "identical": 1.0 - 5 * kl, "tokens": [],
                           "sample": f"The capital of France is Paris. <{name}> & more"},
            "speed": ({"prefill_tps": prefill, "decode_tps": decode, "ttft_s": ttft, "peak_rss_mb": rss,
                       "threads": None, "load_s": 0.4} if speed else None),
            "speed_note": None if speed else "skipped (--no-speed)",
        })
    return copy.deepcopy({
        "reference": dict(variants[0]["variant"], weights_note="from a Q4_1 GGUF: the fp32 weights are its blocks "
                                                               "dequantized"), "variants": variants, "text": "pydoc_data.topics (evaluation half)",
        "scoring": "second half of each window", "context": 256, "windows": 4, "scored_tokens": 512,
        "prompts": ["What is the capital of France?"], "chat": True, "gen_tokens": 32,
        "speed": SPEED if speed else None, "created": "2026-12-02 01:00:00 UTC", "seconds": 120.0,
        "versions": {"onnxruntime": "1.23.0"}, "host": {"cores": 2, "loadavg": [0.31, 0.2, 0.1]},
        "machine": {"machine": "x86_64", "int8_kernel": "avx512-vnni", "features": ["AVX2", "AVX512_VNNI"]},
        "schema": "onnx-edge-compare/1"})
