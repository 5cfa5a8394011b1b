#!/usr/bin/env python3
"""Soak one loaded model: many requests in a row, RSS after each, to show the runtime does not leak.

    .venv/bin/python scripts/soak.py PATH [--requests 100] [--max-new-tokens 120] [--provider cpu]
        [--threads N] [--stop-at-eos] [--json]

PATH is an exported folder. The requests cycle through varied prompts and the ways an app calls the
model: plain and chat (when the model has a template), generate and stream, greedy and seeded sampling,
repeated prompts (prefix-cache reuse) and new ones. eos is ignored unless --stop-at-eos, so every request
generates --max-new-tokens (capped by the context window) and the token total is known in advance.

Prints one line per request (tokens, cumulative tokens, RSS MB, seconds) and a summary: RSS after the
warm-up (request 10), at the end, the peak, and the growth between the two. --json prints the summary as
one JSON object on the last line instead of the human summary.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

WARMUP = 10
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a hash function is, in two sentences.",
    "List three fruits and their colours.",
    "Translate 'good morning' into German, Spanish and Japanese.",
    "def fibonacci(n):",
    "Once upon a time, in a village by the mountains,",
    "Summarize the plot of a detective story in one paragraph.",
    "日本の首都はどこですか？",
    "Why is the sky blue?",
    "Give me a recipe for pancakes.",
    "What is 17 times 23?",
]


def rss_mb() -> float:
    """Resident set size now (not the peak) in MB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak only: KB on Linux, bytes on macOS
        return peak / (1e6 if sys.platform == "darwin" else 1e3)


def request(model, n: int, max_new_tokens: int) -> int:
    """Request number n: the mix of prompt, chat, streaming and sampling it uses. Returns tokens generated."""
    prompt = PROMPTS[n % len(PROMPTS)]
    if n % 5 == 4:  # a fresh prompt now and then, not only the cycled ones
        prompt = f"{prompt} (variant {n})"
    chat = model.chat_template is not None and n % 2 == 1
    sampling = dict(temperature=0.8, top_p=0.95, seed=n) if n % 3 == 2 else {}
    context = model.shape.context_length
    prompt_len = len(model.encode(prompt, chat=chat))
    budget = max(1, min(max_new_tokens, context - prompt_len))
    if n % 4 == 0:
        chunks = list(model.stream(prompt, chat=chat, max_new_tokens=budget, **sampling))
        return chunks[-1].response.generated_tokens
    return model.generate(prompt, chat=chat, max_new_tokens=budget, **sampling).generated_tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=120)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--stop-at-eos", action="store_true", help="Stop at eos (default: ignore it).")
    ap.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")
    args = ap.parse_args()
    if args.requests < 1 or args.max_new_tokens < 1:
        ap.error("--requests and --max-new-tokens must be >= 1")

    from onnx_edge.errors import EdgeError
    from onnx_edge.runtime import load

    start_rss = rss_mb()
    t0 = time.perf_counter()
    try:
        model = load(args.path, provider=args.provider, threads=args.threads)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    load_s = time.perf_counter() - t0
    if not args.stop_at_eos:
        model.eos_ids = set()
    gc.collect()
    loaded_rss = rss_mb()
    print(f"# {args.path}: loaded in {load_s:.2f} s, RSS {start_rss:.1f} MB before, {loaded_rss:.1f} MB after load",
          file=sys.stderr if args.json else sys.stdout)
    curve, total, t_start = [], 0, time.perf_counter()
    out = sys.stderr if args.json else sys.stdout
    print(f"{'req':>4} {'tokens':>6} {'total':>7} {'rss_mb':>8} {'s':>6}", file=out)
    for n in range(args.requests):
        t = time.perf_counter()
        tokens = request(model, n, args.max_new_tokens)
        total += tokens
        gc.collect()
        rss = rss_mb()
        curve.append(rss)
        print(f"{n + 1:>4} {tokens:>6} {total:>7} {rss:>8.1f} {time.perf_counter() - t:>6.2f}", file=out, flush=True)
    elapsed = time.perf_counter() - t_start
    warm = curve[min(WARMUP, len(curve)) - 1]
    summary = {
        "path": str(args.path), "requests": args.requests, "tokens": total, "seconds": round(elapsed, 2),
        "tokens_per_s": round(total / elapsed, 1), "load_s": round(load_s, 2),
        "rss_loaded_mb": round(loaded_rss, 1), "rss_first_mb": round(curve[0], 1),
        "rss_after_warmup_mb": round(warm, 1), "rss_end_mb": round(curve[-1], 1), "rss_peak_mb": round(max(curve), 1),
        "growth_after_warmup_mb": round(curve[-1] - warm, 1),
        "max_growth_after_warmup_mb": round(max(curve[min(WARMUP, len(curve)) - 1:]) - warm, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"# {total} tokens in {elapsed:.1f} s ({summary['tokens_per_s']} tok/s); RSS after load "
              f"{loaded_rss:.1f} MB, after request {min(WARMUP, len(curve))} {warm:.1f} MB, end {curve[-1]:.1f} MB, "
              f"peak {max(curve):.1f} MB; growth after warm-up {summary['growth_after_warmup_mb']:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
