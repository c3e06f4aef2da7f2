"""A fair training comparison: chapter 7's GPT against chapter 9's LLaMA-style model on Tiny Shakespeare.

Both models are trained by the course's :class:`~course_lib.trainer.Trainer` with chapter 7's recipe
(AdamW with decay groups, betas (0.9, 0.95), peak learning rate 5e-3, 5 % warm-up, cosine decay to
5e-4, clipping at 1, batches of 32 windows of 64 characters drawn from a generator seeded with the
step, so both models see exactly the same batches), for the same number of steps, from several seeds.

The shapes: 4 layers, width 128, 4 heads, context 64, 65 characters, tied embeddings for both.
The GPT has learned positions, LayerNorm, a GELU MLP of width 512 and biases (chapter 7's model);
the LLaMA-style model has RoPE, RMSNorm, a SwiGLU MLP of width 344 (the 2/3 rule) and no biases,
and ordinary multi-head attention (``n_kv_heads = n_heads``: at this size grouped-query attention
would only remove parameters). Their parameter counts differ by about 2 %.

Reported per run: the validation loss over the whole validation text (the last 10 %, every
position, in non-overlapping windows of 64), training seconds, parameters, and the loss curve.

    python scripts/compare_llama_gpt.py [--steps 500] [--seeds 0 1 2] [--threads 1] [--save]

``--save`` writes ``bench/results/llama_vs_gpt.json`` (read by chapter 9), replacing earlier rows
of the same CPU, architecture, seed and step count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench/machine.py: which CPU, saving rows per CPU

from machine import describe, save_rows  # noqa: E402

from course_lib.data import read_text  # noqa: E402
from course_lib.datasets import train_val_split  # noqa: E402
from course_lib.gpt import GPT, GPTConfig  # noqa: E402
from course_lib.llama import Llama, LlamaConfig  # noqa: E402
from course_lib.tokenizers import CharTokenizer  # noqa: E402
from course_lib.trainer import Trainer, TrainerConfig, language_model_loss, next_token_loss  # noqa: E402

CONTEXT, BATCH = 64, 32
SHAPE = dict(context_length=CONTEXT, d_model=128, n_layers=4, n_heads=4)


def build(arch: str, vocab_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "gpt":
        return GPT(GPTConfig(vocab_size=vocab_size, **SHAPE, dropout=0.0, fused_attention=True))
    return Llama(LlamaConfig(vocab_size=vocab_size, **SHAPE, n_kv_heads=4, d_ff=344, tie_embeddings=True))


def windows(ids: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random windows of CONTEXT ids and the ids one further: (n, T) twice."""
    starts = torch.randint(0, len(ids) - CONTEXT - 1, (n,), generator=generator)
    x = torch.stack([ids[s:s + CONTEXT] for s in starts])  # (n, T)
    y = torch.stack([ids[s + 1:s + CONTEXT + 1] for s in starts])  # (n, T)
    return x, y


@torch.no_grad()
def full_val_loss(model: torch.nn.Module, val: torch.Tensor, batch: int = 256) -> float:
    """Mean next-token loss over every position of ``val``, in non-overlapping windows of CONTEXT."""
    model.eval()
    n = (len(val) - 1) // CONTEXT
    x = val[: n * CONTEXT].view(n, CONTEXT)  # (N, T)
    y = val[1 : n * CONTEXT + 1].view(n, CONTEXT)  # (N, T)
    total = sum(next_token_loss(model(x[i:i + batch]), y[i:i + batch]).item() * len(x[i:i + batch])
                for i in range(0, n, batch))
    return total / n


def train(arch: str, seed: int, steps: int, train_ids, val_ids, vocab_size: int) -> dict:
    model = build(arch, vocab_size, seed)
    config = TrainerConfig(max_steps=steps, max_lr=5e-3, min_lr=5e-4, warmup_steps=steps // 20, weight_decay=0.1,
                           betas=(0.9, 0.95), grad_clip=1.0, eval_interval=max(1, steps // 10), eval_batches=8,
                           progress=False)
    trainer = Trainer(model, language_model_loss,
                      lambda step: windows(train_ids, BATCH, torch.Generator().manual_seed(step)), config,
                      val_batch=lambda i: windows(val_ids, BATCH, torch.Generator().manual_seed(1_000_000 + i)))
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    return {"bench": "llama_vs_gpt", "arch": arch, "seed": seed, "steps": steps,
            "parameters": sum(p.numel() for p in model.parameters()),
            "val_loss": round(full_val_loss(model, val_ids), 4), "train_seconds": round(seconds, 1),
            "eval_steps": history.eval_steps, "val_curve": [round(v, 4) for v in history.val_loss]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", action="store_true", help="write bench/results/llama_vs_gpt.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = read_text("tinyshakespeare.txt")
    tokenizer = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)), val_fraction=0.1)
    rows = []
    for seed in args.seeds:
        for arch in ("gpt", "llama"):
            row = dict(train(arch, seed, args.steps, train_ids, val_ids, tokenizer.vocab_size),
                       threads=args.threads, command=" ".join(["python scripts/compare_llama_gpt.py"] + sys.argv[1:]),
                       **describe())
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("eval_steps", "val_curve")}), flush=True)
    for arch in ("gpt", "llama"):
        losses = [r["val_loss"] for r in rows if r["arch"] == arch]
        print(f"summary: {arch}: validation loss {statistics.mean(losses):.3f} (seeds: "
              f"{', '.join(f'{v:.3f}' for v in losses)}) after {args.steps} steps on {rows[0]['cpu']}")
    if args.save:
        save_rows(ROOT / "bench" / "results" / "llama_vs_gpt.json", rows, key=("cpu", "arch", "seed", "steps"))


if __name__ == "__main__":
    main()
