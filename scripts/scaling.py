"""Scaling and "emergence", measured: chapter 11's data.

Several GPTs of growing size (chapter 6's model, characters of Tiny Shakespeare, chapter 7's data)
are trained with the same recipe, the same batches and the same number of steps, from a few seeds.
Measured for every model:

- ``val_loss``: the next-character loss (nats) on 100 fixed windows of the validation text (the
  last 10 %), the smooth quantity a scaling law fits; also at a few points during training, for
  loss against compute (training FLOPs taken as 6 x weights in matrices x tokens seen, the usual
  estimate; the position table is not multiplied by anything and is left out);
- a **word-completion task** on 500 places of the validation text where a word of at least
  ``COMPLETE + PREFIX`` letters starts: the model reads the text before it and the word's first
  ``PREFIX`` letters and must write the next ``COMPLETE`` letters. Three scores of the same
  predictions (one forward pass, the right letters fed in, "teacher forcing"):

  * ``exact_match``: the fraction of words whose ``COMPLETE`` letters are all the model's top
    choice. With the right letters fed in this equals greedy decoding's exact match: greedy
    decoding gets all letters right exactly when each is the top choice after the right ones before;
  * ``char_accuracy``: the fraction of the letters that are the top choice;
  * ``completion_logprob``: the mean log-probability (nats) of the whole right completion;
  * ``char_accuracy_by_position`` and ``exact_match_by_length`` (``k`` = 1 .. ``COMPLETE``: all of the
    first ``k`` letters right), to see how exact match depends on the answer's length.

    python scripts/scaling.py --out bench/results/scaling.json [--seeds 0 1] [--steps 1200] [--sizes 0 1 2 3 4 5]
    python scripts/scaling.py --out /tmp/s.json --tiny     # seconds: a schema check (tests/test_scaling_script.py)
    python scripts/scaling.py --merge a.json b.json --out bench/results/scaling.json   # one process per seed
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench/machine.py: which CPU

from machine import describe  # noqa: E402

from course_lib.data import read_text  # noqa: E402
from course_lib.datasets import random_windows, train_val_split  # noqa: E402
from course_lib.gpt import GPT, GPTConfig  # noqa: E402
from course_lib.tokenizers import CharTokenizer  # noqa: E402
from course_lib.trainer import Trainer, TrainerConfig, language_model_loss, next_token_loss  # noqa: E402

# (n_layers, d_model, n_heads): widths and depths grow together, about 12 * L * d^2 weights in the blocks
SIZES = [(1, 16, 2), (2, 24, 2), (2, 32, 4), (3, 48, 4), (3, 64, 4), (4, 96, 4)]
CONTEXT, BATCH, MAX_LR, MIN_LR = 48, 24, 5e-3, 5e-4
PREFIX, COMPLETE, READ = 5, 4, 40  # word-completion task: letters given, letters to write, characters read before


def completion_items(text: str, n: int, seed: int = 0) -> list[int]:
    """Positions in ``text`` where a word of at least PREFIX + COMPLETE letters starts, with READ characters
    before it: ``n`` of them, drawn at random (the same ones for every model)."""
    starts = [m.start() for m in re.finditer(r"(?<![A-Za-z])[A-Za-z]{%d,}" % (PREFIX + COMPLETE), text)
              if m.start() >= READ]
    if len(starts) < n:
        raise ValueError(f"only {len(starts)} long words in the text, {n} asked for")
    g = torch.Generator().manual_seed(seed)
    return [starts[i] for i in torch.randperm(len(starts), generator=g)[:n].tolist()]


@torch.no_grad()
def completion_metrics(model: torch.nn.Module, ids: torch.Tensor, items: list[int]) -> dict:
    """Teacher-forced scores of the word-completion task (see the module docstring)."""
    model.eval()
    # each row: READ characters, the word's first PREFIX letters, its next COMPLETE letters (the last one only a target)
    rows = torch.stack([ids[p - READ:p + PREFIX + COMPLETE] for p in items])  # (P, READ + PREFIX + COMPLETE)
    logits = model(rows[:, :-1])  # (P, L - 1, V): position t predicts rows[:, t + 1]
    logp = torch.log_softmax(logits[:, -COMPLETE:, :].float(), dim=-1)  # (P, COMPLETE, V)
    target = rows[:, -COMPLETE:]  # (P, COMPLETE)
    right = logp.gather(-1, target[..., None]).squeeze(-1)  # (P, COMPLETE): log-probability of each right letter
    top = logp.argmax(-1) == target  # (P, COMPLETE)
    model.train()
    first_k_right = top.long().cumprod(dim=1)  # (P, COMPLETE): 1 while every letter so far was the top choice
    return {"char_accuracy": round(float(top.float().mean()), 5),
            "completion_logprob": round(float(right.sum(1).mean()), 5),
            "exact_match": round(float(top.all(1).float().mean()), 5),
            "char_accuracy_by_position": [round(float(v), 5) for v in top.float().mean(0)],
            "exact_match_by_length": [round(float(v), 5) for v in first_k_right.float().mean(0)]}


@torch.no_grad()
def val_loss(model: torch.nn.Module, val_ids: torch.Tensor, windows: int = 100) -> float:
    """Mean next-character loss over ``windows`` fixed windows of the validation text."""
    model.eval()
    x, y = random_windows(val_ids, windows, CONTEXT, seed=12345)  # (W, T) twice, the same for every model
    loss = float(next_token_loss(model(x), y))
    model.train()
    return round(loss, 5)


def matrix_weights(model: torch.nn.Module) -> int:
    """Weights in matrices (the position table excluded): what a token's forward pass multiplies by."""
    return sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "wpe" not in name)


def train_one(size: tuple[int, int, int], seed: int, steps: int, train_ids: torch.Tensor, val_ids: torch.Tensor,
              items: list[int], vocab_size: int, n_curve: int) -> dict:
    n_layers, d_model, n_heads = size
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=CONTEXT, d_model=d_model, n_layers=n_layers,
                          n_heads=n_heads, bias=False, activation="gelu"))
    config = TrainerConfig(max_steps=steps, max_lr=MAX_LR, min_lr=MIN_LR, warmup_steps=max(1, steps // 20),
                           weight_decay=0.1, grad_clip=1.0, progress=False)
    # the same batches for every size: batch k depends on k and the seed only
    trainer = Trainer(model, language_model_loss,
                      lambda step: random_windows(train_ids, BATCH, CONTEXT, seed=seed * 1_000_003 + step), config)
    checkpoints = sorted({max(1, round(steps * (i + 1) / n_curve)) for i in range(n_curve)})
    weights = matrix_weights(model)
    curve = []
    start = time.perf_counter()
    for until in checkpoints:
        trainer.fit(until=until)
        tokens = until * BATCH * CONTEXT
        curve.append({"step": until, "tokens": tokens, "flops": 6 * weights * tokens,
                      "val_loss": val_loss(model, val_ids)})
    seconds = time.perf_counter() - start
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "seed": seed, "steps": steps,
            "parameters": sum(p.numel() for p in model.parameters()), "matrix_weights": weights,
            "tokens": steps * BATCH * CONTEXT, "flops": 6 * weights * steps * BATCH * CONTEXT,
            "train_seconds": round(seconds, 1), "val_loss": curve[-1]["val_loss"],
            **completion_metrics(model, val_ids, items), "curve": curve}


def merge(paths: list[str], out: Path) -> dict:
    """One result from several runs of this script (e.g. one process per seed): their runs, each part's command."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for part in parts[1:]:
        if part["recipe"] != parts[0]["recipe"] or part["task"] != parts[0]["task"]:
            raise SystemExit(f"cannot merge results with different recipes or tasks: {paths}")
    result = {k: v for k, v in parts[0].items() if k not in ("command", "machine", "total_seconds", "runs")}
    command = " ".join(["python scripts/scaling.py"] + sys.argv[1:])
    result.update(command=command, parts=[{"command": p["command"], "machine": p["machine"],
                                           "total_seconds": p["total_seconds"]} for p in parts],
                  machine=parts[0]["machine"], runs=[run for p in parts for run in p["runs"]])
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}: {len(result['runs'])} runs from {len(parts)} parts")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where to write the JSON result (rewritten after every run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(range(len(SIZES))),
                        help=f"indices into SIZES = {SIZES}, run in the order given")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (1: tiny models gain nothing from more, and lose a lot on a shared machine)")
    parser.add_argument("--tiny", action="store_true", help="two tiny models, 20 steps, one seed: a schema check")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine these results of the script into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.tiny:
        args.seeds, args.steps, args.sizes = [0], 10, [0, 1]
    if any(not 0 <= i < len(SIZES) for i in args.sizes):
        raise SystemExit(f"--sizes are indices 0..{len(SIZES) - 1} into {SIZES}")
    torch.set_num_threads(args.threads)
    text = read_text("tinyshakespeare.txt")
    tokenizer = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)), val_fraction=0.1)
    val_text = text[len(train_ids):]
    items = completion_items(val_text, n=100 if args.tiny else 500)
    command = " ".join(["python scripts/scaling.py"] + (sys.argv[1:] if argv is None else argv))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    p = items[0]
    result = {"experiment": "scaling", "data": "tinyshakespeare.txt, characters",
              "task": f"complete {COMPLETE} letters of a word of at least {PREFIX + COMPLETE} letters, "
                      f"given {READ} characters before it and its first {PREFIX}",
              "example": {"read": val_text[p - READ:p + PREFIX], "complete": val_text[p + PREFIX:p + PREFIX + COMPLETE]},
              "command": command, "machine": describe(), "threads": args.threads, "total_seconds": 0.0,
              "recipe": {"batch": BATCH, "context_length": CONTEXT, "max_lr": MAX_LR, "min_lr": MIN_LR,
                         "warmup_fraction": 0.05, "weight_decay": 0.1, "grad_clip": 1.0, "vocab_size": tokenizer.vocab_size,
                         "completion_items": len(items), "prefix": PREFIX, "complete": COMPLETE, "read": READ},
              "runs": []}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for i in args.sizes:
            run = train_one(SIZES[i], seed, args.steps, train_ids, val_ids, items, tokenizer.vocab_size, n_curve=5)
            result["runs"].append(run)
            result["total_seconds"] = round(time.perf_counter() - t0, 1)
            out.write_text(json.dumps(result, indent=1) + "\n")  # after every run: a long run can be stopped
            print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
    print(f"wrote {out}: {len(result['runs'])} runs in {result['total_seconds']} s on {result['machine']['cpu']}")
    return result


if __name__ == "__main__":
    main()
