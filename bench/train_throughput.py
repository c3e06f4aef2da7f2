"""Training throughput of course_lib's GPT on the reference configuration (issue: performance and scale).

Reference: 4 layers, 4 heads, width 128, context 64, batch 12, character-level Tiny Shakespeare,
no dropout. Measures tokens/s of full training steps (forward, backward, AdamW) for the chapter's
readable attention and for the fused scaled_dot_product_attention path, in fp32 and with bf16
autocast. Prints one JSON object per setting and a one-line summary.

    python bench/train_throughput.py [--steps 60] [--warmup 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from course_lib.data import read_text
from course_lib.gpt import GPT, GPTConfig
from course_lib.tokenizers import CharTokenizer
from course_lib.trainer import adamw_with_decay_groups, next_token_loss


def measure(fused: bool, bf16: bool, steps: int, warmup: int, data: torch.Tensor, vocab: int) -> dict:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab, context_length=64, d_model=128, n_layers=4, n_heads=4,
                       dropout=0.0, fused_attention=fused)
    model = GPT(config)
    optimizer = adamw_with_decay_groups(model, lr=1e-3, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    batch, ctx = 12, 64

    def step() -> None:
        starts = torch.randint(0, len(data) - ctx - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + ctx] for s in starts])  # (B, T)
        y = torch.stack([data[s + 1:s + ctx + 1] for s in starts])  # (B, T)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = next_token_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {
        "attention": "fused" if fused else "readable",
        "precision": "bf16-autocast" if bf16 else "fp32",
        "tokens_per_s": round(steps * batch * ctx / seconds),
        "steps": steps,
        "seconds": round(seconds, 2),
        "parameters": model.num_parameters(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = read_text("tinyshakespeare.txt")
    tok = CharTokenizer(text)
    data = torch.tensor(tok.encode(text), dtype=torch.long)
    results = []
    for fused in (False, True):
        for bf16 in (False, True):
            result = measure(fused, bf16, args.steps, args.warmup, data, tok.vocab_size)
            result.update(machine=platform.processor() or platform.machine(), threads=args.threads,
                          torch=torch.__version__)
            print(json.dumps(result))
            results.append(result)
    print("summary: " + ", ".join(f"{r['attention']}/{r['precision']} {r['tokens_per_s']:,} tok/s" for r in results))


if __name__ == "__main__":
    main()
