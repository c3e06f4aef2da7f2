"""Train course_lib's GPT on character-level Tiny Shakespeare, alone or data-parallel under torchrun.

    python scripts/train_ddp.py --steps 200                                    # one process
    torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py --steps 200  # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node=4 scripts/train_ddp.py --precision bf16 \\
        --layers 6 --heads 6 --width 384 --context 256 --batch-size 64          # 4 GPUs (nccl)

``--batch-size`` is the *global* batch: every step trains on the same sequences whatever the number
of processes, and each process takes its share of them, so the loss curve does not depend on the
process count (up to rounding; tests/test_distributed.py checks this). It must divide by the
number of processes. The appendix "Scaling up" explains the rest, multi-machine runs included.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from course_lib import distributed
from course_lib.data import read_text
from course_lib.datasets import random_windows, train_val_split
from course_lib.generation import generate
from course_lib.gpt import GPT, GPTConfig
from course_lib.tokenizers import CharTokenizer
from course_lib.trainer import TrainerConfig, language_model_loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=32,
                   help="global batch: sequences per step, all processes together")
    p.add_argument("--context", type=int, default=64, help="tokens (characters) per sequence")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=128, help="d_model")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warm-up, then cosine to a tenth)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--checkpoint", type=Path, default=None, help="write a checkpoint here every --eval-interval steps")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, default=300, help="characters to generate at the end (0: none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ctx = distributed.setup()  # rank 0 of 1 without torchrun
    try:
        train(args, ctx)
    finally:
        distributed.cleanup()


def train(args: argparse.Namespace, ctx: distributed.DistributedContext) -> None:
    if args.batch_size % ctx.world_size:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of the number of processes, "
                         f"{ctx.world_size}")
    if args.resume and (args.checkpoint is None or not args.checkpoint.is_file()):
        raise SystemExit(f"--resume needs an existing --checkpoint, got {args.checkpoint}")

    text = read_text("tinyshakespeare.txt")  # every process reads it (downloads are atomic)
    tokenizer = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)), val_fraction=0.1)
    ids = {"train": train_ids, "val": val_ids}

    def global_batch(split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The same seed gives the same batch in every process: the DistributedTrainer keeps this process's rows.
        inputs, targets = random_windows(ids[split], args.batch_size, args.context, seed)
        return inputs.to(ctx.device), targets.to(ctx.device)

    torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP copies rank 0's anyway)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=args.context, d_model=args.width,
                          n_layers=args.layers, n_heads=args.heads, dropout=args.dropout)).to(ctx.device)
    config = TrainerConfig(max_steps=args.steps, max_lr=args.lr, min_lr=args.lr / 10,
                           warmup_steps=min(100, args.steps // 10), precision=args.precision,
                           eval_interval=args.eval_interval, eval_batches=8,
                           checkpoint_path=str(args.checkpoint) if args.checkpoint else None,
                           checkpoint_interval=args.eval_interval)
    trainer = distributed.DistributedTrainer(model, language_model_loss, lambda step: global_batch("train", step), config,
                      val_batch=lambda i: global_batch("val", 1_000_000 + i))
    if args.resume:
        trainer.load_checkpoint(args.checkpoint)
    first_step = trainer.step
    if ctx.is_main:
        print(f"{ctx.world_size} process(es), backend {ctx.backend or 'none'}, device {ctx.device}; "
              f"{model.num_parameters():,} parameters; global batch {args.batch_size} x {args.context} tokens, "
              f"{args.batch_size // ctx.world_size} sequences per process")

    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start

    if ctx.is_main:
        steps = trainer.step - first_step
        recent = history.train_loss[-10:]
        print(f"{steps} steps in {seconds:.1f} s ({steps * args.batch_size * args.context / max(seconds, 1e-9):,.0f} "
              f"tokens/s, all processes together, evaluation included)")
        print(f"training loss (mean of the last {len(recent)} steps) {sum(recent) / max(len(recent), 1):.3f}; "
              f"validation loss {history.val_loss[-1] if history.val_loss else float('nan'):.3f}")
        if args.sample:
            prompt = torch.tensor([tokenizer.encode("ROMEO:\n")], device=ctx.device)
            out = generate(trainer.model.eval(), prompt, args.sample, args.context, temperature=0.8, top_k=20,
                           generator=torch.Generator(ctx.device).manual_seed(args.seed))
            print(tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    main()
