"""Training throughput of course_lib's GPT: tokens/s and achieved FLOP/s (issue: performance and scale).

Reference configuration: 4 layers, 4 heads, width 128, context 64, batch 12, character-level Tiny
Shakespeare, no dropout. Each setting times three rounds of full training steps (forward,
backward, gradient clipping, fused AdamW) in a fresh process, so that its peak memory is its own,
and reports, for the median round:

- ``tokens_per_s``: batch x context tokens per step, over the timed steps;
- ``tflops``: achieved FLOP/s, counting the matrix-product FLOPs of one training step with
  ``torch.utils.flop_counter.FlopCounterMode`` (what the hardware must compute, whatever the kernel);
- ``of_matmul_peak``: that rate divided by the rate of one large matrix product in the same precision
  on the same threads (what this CPU can attain; fp32 uses AVX-512, bf16 uses AMX);
- ``peak_rss_mib``: the process's peak resident memory.

Settings: the chapter's readable attention and the fused ``scaled_dot_product_attention`` path,
each in float32 and under bfloat16 autocast, for two architectures: ``gpt2`` (GPT-2's tanh GELU,
biases; what the chapters train) and ``fast`` (exact GELU, no biases; the course's CPU recipe).
A larger model (6 layers, width 384, context 256, batch 8) shows whether bfloat16 pays as the
matrices grow. Prints one JSON object per setting and a one-line summary.

    python bench/train_throughput.py [--steps 30] [--threads 2] [--quick] [--save]

``--save`` writes the results to ``bench/results/train_throughput.json`` (read by the book's
performance page), replacing earlier results of the same CPU model and keeping those of others.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from machine import describe, save_rows  # bench/machine.py: this script runs as a file

SIZES = {
    "reference": dict(n_layers=4, n_heads=4, d_model=128, context_length=64, batch=12),
    "larger": dict(n_layers=6, n_heads=6, d_model=384, context_length=256, batch=8),
}
ARCHS = {"gpt2": dict(activation="gelu_tanh", bias=True), "fast": dict(activation="gelu", bias=False)}


def matmul_peak(bf16: bool, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product: the most this CPU attains in that precision."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # first call sets up the kernel
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def measure(size: str, arch: str, fused: bool, bf16: bool, steps: int, warmup: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from course_lib.data import read_text
    from course_lib.gpt import GPT, GPTConfig
    from course_lib.tokenizers import CharTokenizer
    from course_lib.trainer import adamw_with_decay_groups, language_model_loss, optimization_step
    from loss_at_budget import random_windows  # bench/ is on the path: this script runs as a file

    text = read_text("tinyshakespeare.txt")
    tok = CharTokenizer(text)
    data = torch.tensor(tok.encode(text), dtype=torch.long)
    shape = dict(SIZES[size])
    batch, ctx = shape.pop("batch"), shape["context_length"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, dropout=0.0, fused_attention=fused, **shape, **ARCHS[arch]))
    optimizer = adamw_with_decay_groups(model, lr=1e-3, weight_decay=0.1)
    precision = "bf16" if bf16 else "fp32"
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        optimization_step(model, language_model_loss, random_windows(data, batch, ctx, gen), optimizer, grad_clip=1.0, precision=precision)

    with FlopCounterMode(display=False) as counter:
        step()  # also the first warm-up step
    for _ in range(warmup - 1):
        step()
    # Three rounds; the median round is reported, so that one hiccup of a shared machine does not decide.
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rounds.append(time.perf_counter() - start)
    seconds = sorted(rounds)[1]
    flops = counter.get_total_flops() * steps / seconds
    return {
        "size": size, "arch": arch, "attention": "fused" if fused else "readable",
        "precision": "bf16-autocast" if bf16 else "fp32",
        "tokens_per_s": round(steps * batch * ctx / seconds),
        "tflops": round(flops / 1e12, 4),
        "step_gflop": round(counter.get_total_flops() / 1e9, 3),
        "steps": steps, "seconds": round(seconds, 2), "parameters": model.num_parameters(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


SETTINGS = [(size, arch, fused, bf16)
            for size, arches in (("reference", ("gpt2", "fast")), ("larger", ("fast",)))
            for arch in arches for fused in (False, True) for bf16 in (False, True)
            if size == "reference" or fused]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round at the reference size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="reference size, fast architecture only")
    parser.add_argument("--save", action="store_true", help="write bench/results/train_throughput.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting in this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        size, arch, fused, bf16 = json.loads(args.one)
        steps, warmup = (args.steps, args.warmup) if size == "reference" else (max(2, args.steps // 10), 2)
        print(json.dumps(measure(size, arch, fused, bf16, steps, warmup)))
        return

    # --quick (the test): a small product, since bfloat16 is emulated, and very slow, on CPUs without it
    peaks = {bf16: matmul_peak(bf16, n=512 if args.quick else 2048) for bf16 in (False, True)}
    settings = [s for s in SETTINGS if not args.quick or (s[0] == "reference" and s[1] == "fast")]
    results = []
    for setting in settings:
        cmd = [sys.executable, __file__, "--one", json.dumps(setting), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"setting {setting} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        peak = peaks[result["precision"] != "fp32"]
        result.update(of_matmul_peak=round(result["tflops"] * 1e12 / peak, 3), matmul_peak_tflops=round(peak / 1e12, 3),
                      threads=args.threads, **describe())
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.save:  # the results of other CPU models stay
        save_rows(Path(__file__).resolve().parent / "results" / "train_throughput.json", results)
    print("summary: " + "; ".join(
        f"{r['size']}/{r['arch']}/{r['attention']}/{r['precision']} {r['tokens_per_s']:,} tok/s "
        f"({r['tflops'] * 1000:.0f} GFLOP/s, {r['of_matmul_peak']:.0%} of matmul peak)" for r in results))


if __name__ == "__main__":
    main()
