"""Fair training comparisons on Tiny Shakespeare for chapter 9: two architectures, and two tokenizers.

``--experiment arch`` (the default): chapter 7's GPT against chapter 9's LLaMA-style model.

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

``--experiment tokenizer``: chapter 7's GPT trained on characters (65 symbols) and on the course's
own byte-level BPE (chapter 4's ``BPETokenizer``, 512 tokens, trained on the training text only),
same steps, batches of 32 windows of 64 *tokens* (a BPE token covers several characters, so the
BPE model reads more text per step), same recipe. Losses per token are not comparable across
tokenizers; the report converts both to **bits per character** of the same validation text: the
summed loss over every predicted token, in bits, divided by the number of characters those tokens
cover. The text is ASCII, so characters are bytes. FLOPs per token are reported too: the BPE
model's larger embedding and output head cost a few percent more per token.

    python scripts/compare_llama_gpt.py [--experiment arch|tokenizer] [--steps 500] [--seeds 0 1 2] [--threads 1] [--save]

``--save`` writes ``bench/results/llama_vs_gpt.json`` or ``bench/results/tokenizer_bpc.json`` (read
by chapter 9), replacing earlier rows of the same CPU, model or tokenizer, seed and step count.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench/machine.py: which CPU, saving rows per CPU

from machine import describe, save_rows  # noqa: E402

from course_lib.data import read_text  # noqa: E402
from course_lib.datasets import random_windows, train_val_split  # noqa: E402
from course_lib.gpt import GPT, GPTConfig  # noqa: E402
from course_lib.llama import Llama, LlamaConfig  # noqa: E402
from course_lib.tokenizers import BPETokenizer, CharTokenizer  # noqa: E402
from course_lib.trainer import Trainer, TrainerConfig, language_model_loss, next_token_loss  # noqa: E402

CONTEXT, BATCH = 64, 32
SHAPE = dict(context_length=CONTEXT, d_model=128, n_layers=4, n_heads=4)


def build(arch: str, vocab_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "gpt":
        return GPT(GPTConfig(vocab_size=vocab_size, **SHAPE, dropout=0.0, fused_attention=True))
    return Llama(LlamaConfig(vocab_size=vocab_size, **SHAPE, n_kv_heads=4, d_ff=344, tie_embeddings=True))


def windows(ids: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random windows of CONTEXT ids and the ids one further: (n, T) twice.

    The course's sampler on all but the last id: the committed results were drawn that way (no window
    ends at the very last id), and this keeps them reproducible with this script.
    """
    return random_windows(ids[:-1], n, CONTEXT, generator)


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


@torch.no_grad()
def summed_val_nats(model: torch.nn.Module, val: torch.Tensor, batch: int = 256) -> tuple[float, torch.Tensor]:
    """Total next-token loss (nats) over the non-overlapping windows of ``val``, and the predicted ids."""
    model.eval()
    n = (len(val) - 1) // CONTEXT
    x = val[: n * CONTEXT].view(n, CONTEXT)  # (N, T)
    y = val[1 : n * CONTEXT + 1].view(n, CONTEXT)  # (N, T)
    total = sum(next_token_loss(model(x[i:i + batch]), y[i:i + batch]).item() * y[i:i + batch].numel()
                for i in range(0, n, batch))
    return total, y.reshape(-1)


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
            "eval_steps": history.eval_steps, "val_curve": [round(v, 4) for v in history.val_loss],
            "model": model}


def flops_per_token(model: torch.nn.Module) -> int:
    """Forward + backward FLOPs of one training token: 6 per weight of every matrix (the usual estimate)."""
    return 6 * sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "wpe" not in name)


def tokenizer_experiment(seeds: list[int], steps: int, text: str, threads: int) -> list[dict]:
    chars = CharTokenizer(text)
    char_ids = torch.tensor(chars.encode(text))
    train_char, val_char = train_val_split(char_ids, val_fraction=0.1)
    cut = len(train_char)  # the same validation text for both tokenizers: the last 10 % of the characters
    train_text, val_text = text[:cut], text[cut:]
    assert val_text.isascii(), "bits per character below assume one byte per character"
    bpe = BPETokenizer.train(train_text, vocab_size=512)
    data = {"char": (chars, train_char, val_char),
            "bpe": (bpe, torch.tensor(bpe.encode(train_text)), torch.tensor(bpe.encode(val_text)))}
    rows = []
    for seed in seeds:
        for name, (tok, train_ids, val_ids) in data.items():
            row = train("gpt", seed, steps, train_ids, val_ids, tok.vocab_size)
            model = row.pop("model")
            nats, predicted = summed_val_nats(model, val_ids)
            covered = len(predicted) if name == "char" else len(bpe.decode_bytes(predicted.tolist()))
            row.update(bench="tokenizer_bpc", tokenizer=name, vocab_size=tok.vocab_size,
                       chars_per_token=round(len(val_text) / len(val_ids), 3),
                       bits_per_char=round(nats / math.log(2) / covered, 4),
                       flops_per_token=flops_per_token(model), tokens_per_step=BATCH * CONTEXT)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("eval_steps", "val_curve")}), flush=True)
    for name in data:
        values = [r["bits_per_char"] for r in rows if r["tokenizer"] == name]
        print(f"summary: {name}: {statistics.mean(values):.3f} bits per character (seeds: "
              f"{', '.join(f'{v:.3f}' for v in values)}) after {steps} steps")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=["arch", "tokenizer"], default="arch")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", action="store_true", help="write bench/results/llama_vs_gpt.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = read_text("tinyshakespeare.txt")
    command = " ".join(["python scripts/compare_llama_gpt.py"] + sys.argv[1:])
    if args.experiment == "tokenizer":
        rows = [dict(row, threads=args.threads, command=command, **describe())
                for row in tokenizer_experiment(args.seeds, args.steps, text, args.threads)]
        if args.save:
            save_rows(ROOT / "bench" / "results" / "tokenizer_bpc.json", rows, key=("cpu", "tokenizer", "seed", "steps"))
        return
    tokenizer = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)), val_fraction=0.1)
    rows = []
    for seed in args.seeds:
        for arch in ("gpt", "llama"):
            row = dict(train(arch, seed, args.steps, train_ids, val_ids, tokenizer.vocab_size),
                       threads=args.threads, command=command, **describe())
            row.pop("model")
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
