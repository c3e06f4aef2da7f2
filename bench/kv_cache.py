"""Milliseconds per generated token against position, with and without a KV cache (chapter 9).

Generates ``--new`` tokens (default 512) after a one-token prompt, batch 1, greedy, with
``course_lib.generation.generate`` (the whole context through the model at every step) and with
``course_lib.kv_cache.generate_cached`` (only the newest token), and times every step. Both runs
must produce the same tokens. Two models of the same size: chapter 6's GPT and chapter 9's
LLaMA-style model (4 layers, width 256, 4 heads, 2 key/value heads for the LLaMA, context 1024,
65 characters), random weights (speed does not depend on what the weights learned).

Reports for each model: ms per token at positions 1, 64, 128, 256, 384, 512 (median of the steps
in a window of 16 around each), the whole per-step curve (every step, for the chapter's figure),
and ``speedup``: the time for all new tokens without the cache over the time with it.

    python bench/kv_cache.py [--new 512] [--threads 1] [--save]

``--save`` writes ``bench/results/kv_cache.json``, replacing earlier rows of the same CPU and model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from machine import describe, save_rows  # bench/machine.py: this script runs as a file

from course_lib.generation import sample_next
from course_lib.gpt import GPT, GPTConfig
from course_lib.kv_cache import KVCache
from course_lib.llama import Llama, LlamaConfig

SHAPE = dict(vocab_size=65, context_length=1024, d_model=256, n_layers=4, n_heads=4)
POSITIONS = (1, 64, 128, 256, 384, 512)


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt":
        return GPT(GPTConfig(**SHAPE)).eval()
    return Llama(LlamaConfig(**SHAPE, n_kv_heads=2, d_ff=None)).eval()


@torch.no_grad()
def timed_generation(model: torch.nn.Module, new: int, cached: bool) -> tuple[list[float], torch.Tensor]:
    """Seconds for each new token (greedy, one-token prompt) and the tokens."""
    idx = torch.zeros(1, 1, dtype=torch.long)
    cache = KVCache.for_model(model) if cached else None
    times = []
    step_input = idx
    for _ in range(new):
        start = time.perf_counter()
        logits = model(step_input, cache=cache)[:, -1] if cached else model(idx)[:, -1]
        next_id = sample_next(logits, temperature=0)  # (1,)
        idx = torch.cat([idx, next_id[:, None]], dim=1)
        step_input = next_id[:, None]
        times.append(time.perf_counter() - start)
    return times, idx


def around(times: list[float], position: int, half: int = 8) -> float:
    """Median ms per token of the steps near ``position`` (step s generates the token at position s + 1)."""
    lo, hi = max(0, position - 1 - half), min(len(times), position - 1 + half)
    return round(1000 * statistics.median(times[lo:hi]), 3)


def measure(arch: str, new: int) -> dict:
    model = build(arch)
    timed_generation(model, 8, cached=True)  # warm-up of the kernels, not timed
    timed_generation(model, 8, cached=False)
    cached, tokens_cached = timed_generation(model, new, cached=True)
    uncached, tokens_uncached = timed_generation(model, new, cached=False)
    if not torch.equal(tokens_cached, tokens_uncached):
        raise AssertionError(f"{arch}: the cached and the uncached run generated different tokens")
    positions = [p for p in POSITIONS if p <= new]
    return {
        "bench": "kv_cache", "model": arch, "new_tokens": new, "shape": SHAPE,
        "parameters": sum(p.numel() for p in model.parameters()),
        "positions": positions,
        "ms_cached": [around(cached, p) for p in positions],
        "ms_uncached": [around(uncached, p) for p in positions],
        "curve_ms_cached": [round(1000 * t, 3) for t in cached],
        "curve_ms_uncached": [round(1000 * t, 3) for t in uncached],
        "seconds_cached": round(sum(cached), 3), "seconds_uncached": round(sum(uncached), 3),
        "speedup": round(sum(uncached) / sum(cached), 2),
        "same_tokens": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new", type=int, default=512, help="tokens to generate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", action="store_true", help="write bench/results/kv_cache.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for arch in ("gpt", "llama"):
        row = dict(measure(arch, args.new), threads=args.threads, **describe())
        rows.append(row)
        shown = {k: v for k, v in row.items() if not k.startswith("curve")}
        print(json.dumps(shown))
    for row in rows:
        print(f"summary: {row['model']}: {row['new_tokens']} new tokens in {row['seconds_uncached']:.1f} s without "
              f"the cache, {row['seconds_cached']:.1f} s with it ({row['speedup']:.1f}x); ms per token at position "
              f"{row['positions'][-1]}: {row['ms_uncached'][-1]:.1f} vs {row['ms_cached'][-1]:.1f} on {row['cpu']}")
    if args.save:
        save_rows(Path(__file__).resolve().parent / "results" / "kv_cache.json", rows, key=("cpu", "model"))


if __name__ == "__main__":
    main()
