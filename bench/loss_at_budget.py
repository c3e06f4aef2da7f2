"""Validation loss after a fixed wall-clock budget of training (issue: performance and scale).

The course's CPU recipe for character-level Tiny Shakespeare: course_lib's GPT with exact GELU and
no biases, fused attention, bfloat16 autocast, fused AdamW, a learning rate that warms up and then
follows a cosine *on the clock* (the schedule's progress is the fraction of the budget spent, so the
run ends at the minimum learning rate whatever the machine's speed). Training stops when the budget
is spent. The clock is paused while the validation loss is measured along the way.

The final number is the loss on the whole validation split (the last 10 % of the text, as
``course_lib.datasets.train_val_split`` cuts it), cut into non-overlapping windows of the context
length: every validation character is predicted once.

The recipe's size, batch and learning rates were chosen by comparing runs of this script (larger
widths, more layers and longer contexts learn more per step but take so much longer per step
that they end higher after 75 s). ``--recipe`` overrides any field, e.g. the settings of minimal
CPU examples elsewhere, batch 12 and learning rate 1e-3:
``--recipe '{"batch": 12, "max_lr": 1e-3, "min_lr": 1e-4}' --tag baseline``.

Prints the recipe and result as JSON and a one-line summary; ``--save`` also stores the run under
its ``--tag`` in ``bench/results/loss_at_budget.json`` and draws every stored run's loss curve in
``book/figures/loss_at_budget.png``.

    python bench/loss_at_budget.py [--budget 75] [--threads 2] [--recipe JSON] [--tag NAME] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from course_lib.data import read_text
from course_lib.datasets import random_windows, train_val_split
from course_lib.gpt import GPT, GPTConfig
from course_lib.tokenizers import CharTokenizer
from machine import describe, save_rows  # bench/machine.py: this script runs as a file
from course_lib.trainer import (adamw_with_decay_groups, autocast, language_model_loss, next_token_loss,
                                optimization_step, warmup_cosine_lr)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    context_length: int = 64
    batch: int = 24
    max_lr: float = 4e-3
    min_lr: float = 4e-4
    warmup_fraction: float = 0.02  # of the budget
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "auto"  # bf16 autocast where the CPU multiplies bf16 in hardware, else fp32 (best_precision)
    activation: str = "gelu"
    bias: bool = False
    fused_attention: bool = True
    seed: int = 0


def windows(ids: torch.Tensor, n: int, context: int, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows of ``context`` ids from random places, and the ids that follow each: (n, T) twice.

    The course's sampler on all but the last id: the committed results were drawn that way (no window
    ends at the very last id), and this keeps them reproducible with this script.
    """
    return random_windows(ids[:-1], n, context, generator)


@torch.no_grad()
def full_val_loss(model: GPT, val: torch.Tensor, context: int, precision: str, batch: int = 64) -> float:
    """Mean next-token loss over every position of ``val``, in non-overlapping windows."""
    model.eval()
    n = (len(val) - 1) // context
    x = val[: n * context].view(n, context)  # (N, T)
    y = val[1 : n * context + 1].view(n, context)  # (N, T)
    total = 0.0
    with autocast(model, precision):
        for i in range(0, n, batch):
            rows = slice(i, i + batch)
            total += next_token_loss(model(x[rows]), y[rows]).float().item() * len(x[rows])
    model.train()
    return total / n


def train(recipe: Recipe, budget_s: float, eval_every_s: float = 5.0, steps: int | None = None) -> dict:
    """Train until ``budget_s`` seconds are spent (or, with ``steps``, for that many steps, the
    schedule then running on steps: a machine-independent way to compare recipes)."""
    text = read_text("tinyshakespeare.txt")
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tok.encode(text), dtype=torch.long), 0.1)
    torch.manual_seed(recipe.seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=recipe.context_length, d_model=recipe.d_model,
                          n_layers=recipe.n_layers, n_heads=recipe.n_heads, dropout=0.0, bias=recipe.bias,
                          activation=recipe.activation, fused_attention=recipe.fused_attention))
    optimizer = adamw_with_decay_groups(model, recipe.max_lr, recipe.weight_decay, betas=(0.9, recipe.beta2))
    gen = torch.Generator().manual_seed(recipe.seed)
    ctx, ticks = recipe.context_length, 10_000  # the clock's progress, in ticks of the schedule
    # A fixed sample of validation windows for the curve (the final number uses the whole split).
    curve_x, curve_y = windows(val_ids, 8 * recipe.batch, ctx, torch.Generator().manual_seed(1))

    def curve_loss() -> float:
        model.eval()
        with torch.no_grad(), autocast(model, recipe.precision):
            loss = next_token_loss(model(curve_x), curve_y).float().item()
        model.train()
        return loss

    history = {"seconds": [0.0], "val_loss": [curve_loss()], "train_seconds": [], "train_loss": []}
    spent, step, next_eval = 0.0, 0, eval_every_s
    while (spent < budget_s) if steps is None else (step < steps):
        start = time.perf_counter()
        progress = spent / budget_s if steps is None else step / steps
        tick = min(ticks, int(progress * ticks))
        lr = warmup_cosine_lr(tick, recipe.max_lr, recipe.min_lr, int(recipe.warmup_fraction * ticks), ticks)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = windows(train_ids, recipe.batch, ctx, gen)
        loss, _ = optimization_step(model, language_model_loss, batch, optimizer, recipe.grad_clip, recipe.precision)
        spent += time.perf_counter() - start
        step += 1
        if step % 10 == 0:
            history["train_seconds"].append(round(spent, 2))
            history["train_loss"].append(round(loss, 4))
        if spent >= next_eval or (step == steps if steps else spent >= budget_s):
            history["seconds"].append(round(spent, 2))
            history["val_loss"].append(round(curve_loss(), 4))
            next_eval += eval_every_s
    val = full_val_loss(model, val_ids, ctx, recipe.precision)
    return {
        "val_loss": round(val, 4), "budget_s": budget_s, "train_seconds": round(spent, 2), "steps": step,
        "tokens_seen": step * recipe.batch * ctx, "tokens_per_s": round(step * recipe.batch * ctx / spent),
        "parameters": model.num_parameters(), "recipe": asdict(recipe), "history": history,
    }


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (tag, result) in enumerate(sorted(runs.items(), key=lambda item: item[0] != "recipe")):
        h, r = result["history"], result["recipe"]
        label = f"{tag}: batch {r['batch']}, lr {r['max_lr']:g}"
        ax.plot(h["train_seconds"], h["train_loss"], color=f"C{i}", alpha=0.25, lw=0.7)
        ax.plot(h["seconds"], h["val_loss"], color=f"C{i}", marker="o", ms=3,
                label=f"{label}; final validation loss {result['val_loss']:.3f}")
    ax.axhline(1.70, color="0.3", ls=":", lw=1, label="goal: 1.70")
    first = next(iter(runs.values()))
    ax.set(xlabel="training time (s)", ylabel="loss (nats per character)", ylim=(1.3, 3.5),
           title=f"Tiny Shakespeare, {first['budget_s']:.0f} s of training on {first['threads']} CPU threads")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=75.0, help="seconds of training")
    parser.add_argument("--steps", type=int, help="train for this many steps instead (to compare recipes)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--recipe", default="{}", help="JSON overrides of the Recipe fields")
    parser.add_argument("--tag", default="recipe", help="the name this run is saved under")
    parser.add_argument("--save", action="store_true", help="write bench/results/ and book/figures/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = Recipe(**json.loads(args.recipe))
    started = time.time()
    result = train(recipe, args.budget, steps=args.steps)
    result.update(tag=args.tag, threads=args.threads, **describe(), wall_s=round(time.time() - started, 1),
                  peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  load_average_at_end=round(os.getloadavg()[0], 2))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.save:
        out = ROOT / "bench" / "results" / "loss_at_budget.json"
        save_rows(out, [result], key=("cpu", "tag"))  # one run per CPU model and tag
        runs = {row["tag"]: row for row in json.loads(out.read_text()) if row["cpu"] == result["cpu"]}
        plot(runs, ROOT / "book" / "figures" / "loss_at_budget.png")
    print(f"summary: validation loss {result['val_loss']:.3f} after {result['train_seconds']:.0f} s of training "
          f"({result['steps']} steps, {result['tokens_per_s']:,} tok/s, {result['parameters']:,} parameters)")


if __name__ == "__main__":
    main()
