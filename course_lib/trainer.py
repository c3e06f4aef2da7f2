"""A small, general training loop, defined in chapter 7 ("Training an LLM").

The trainer knows nothing about GPT: it takes any ``nn.Module``, a ``loss_fn(model, batch)``, and
a function ``train_batch(step)`` that returns the batch for a given step. Because the batch depends
only on the step, a run stopped at a checkpoint and resumed computes exactly what an uninterrupted
run computes (model, optimizer, schedule position and random state are all saved).

It brings together what the chapter explains one at a time: the next-token loss
(:func:`next_token_loss`), one optimisation step (:func:`optimization_step`: forward, loss,
backward, clip, update, clear the gradients), AdamW with weight-decay groups, linear warm-up then
cosine decay (:func:`warmup_cosine_lr`), periodic evaluation, checkpoints, and a progress bar.

Data parallelism is not in here. :class:`course_lib.distributed.DistributedTrainer` (appendix
"Scaling up") extends this Trainer for ``torchrun`` through three small hooks that do nothing in
one process: :meth:`Trainer._my_share` (the rows of a batch this process trains on),
:meth:`Trainer._mean_over_processes` (a logged number) and :attr:`Trainer.is_main` (who shows
progress and writes checkpoints).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = [
    "Trainer",
    "TrainerConfig",
    "TrainingHistory",
    "adamw_with_decay_groups",
    "autocast",
    "best_precision",
    "cpu_flags",
    "language_model_loss",
    "next_token_loss",
    "optimization_step",
    "warmup_cosine_lr",
]


def next_token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every position of every sequence: (B, T, V) logits, (B, T) targets.

    ``targets[b, t]`` is the token that follows input position ``t`` (the targets are already
    shifted, as :class:`~course_lib.datasets.SlidingWindowDataset` makes them), so no shifting
    happens here. ``F.cross_entropy`` wants the classes on axis 1, so both are flattened to
    (B*T, V) and (B*T,) first.
    """
    if logits.dim() < 2 or logits.shape[:-1] != targets.shape:
        raise ValueError(f"expected logits (..., V) and targets (...) with the same leading shape, "
                         f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}")
    if targets.is_floating_point():
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def language_model_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """``loss_fn`` for :class:`Trainer`: the next-token loss of ``model(inputs)`` for ``(inputs, targets)``."""
    inputs, targets = batch
    return next_token_loss(model(inputs), targets)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (``avx2``, ``avx512f``, ``amx_bf16``, ...); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_precision(device: str | torch.device = "cpu") -> str:
    """The precision that trains fastest here, by a documented rule: ``"bf16"`` or ``"fp32"``.

    - CUDA: ``"bf16"`` when the GPU supports bfloat16 (Ampere and newer), else ``"fp32"``.
    - CPU: ``"bf16"`` when the CPU multiplies bfloat16 in hardware: AMX (flag ``amx_bf16``; Intel
      Xeon since Sapphire Rapids) or AVX-512 with bfloat16 dot products (flag ``avx512_bf16``; AMD
      Zen 4 and newer, some Intel). Measured on the course's reference model (performance page):
      about 1.4x as fast as float32 with AMX, 1.9x with AVX512-BF16. Without either, as on most
      laptops (AVX2 only) and on Apple Silicon, bfloat16 is emulated and slower: ``"fp32"``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "fp32"


def autocast(model: nn.Module, precision: str = "fp32") -> torch.autocast:
    """The ``torch.autocast`` context for ``precision``: ``"fp32"`` (off), ``"bf16"`` (mixed precision)
    or ``"auto"`` (:func:`best_precision` for the model's device).

    Under ``"bf16"`` matrix products run in bfloat16 while the weights, their gradients and the
    optimizer state stay float32. CPUs with AMX or AVX512-BF16 (and recent GPUs) multiply bfloat16
    matrices faster than float32 ones; elsewhere bfloat16 is emulated and slower.
    """
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    device = next(model.parameters()).device.type
    if precision == "auto":
        precision = best_precision(device)
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def optimization_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    optimizer: torch.optim.Optimizer,
    grad_clip: float | None = None,
    precision: str = "fp32",
) -> tuple[float, float]:
    """One step: loss, backward, clip the global gradient norm, update, clear the gradients.

    Returns ``(loss, grad_norm)``: the loss before the update and the gradient norm before
    clipping. With ``grad_clip=None`` nothing is clipped (the norm is still measured).
    ``precision="bf16"`` computes the loss under bfloat16 autocast (see :func:`autocast`).
    """
    with autocast(model, precision):
        loss = loss_fn(model, batch)
    loss.backward()
    max_norm = float("inf") if grad_clip is None else grad_clip  # inf: measure, scale by 1.0
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), float(grad_norm)


def warmup_cosine_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr``.

    Step 0 gets ``max_lr / warmup_steps``; steps ``warmup_steps - 1`` and ``warmup_steps`` get
    ``max_lr``; step ``total_steps`` and later get ``min_lr``.
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def adamw_with_decay_groups(model: nn.Module, lr: float, weight_decay: float,
                            betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW that decays matrices (weights, embeddings) but not biases or normalisation gains.

    PyTorch's fused AdamW updates every parameter in one kernel instead of a dozen operations per
    tensor; for small models, where those operations dominate the update, it is the faster choice.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


@dataclass
class TrainerConfig:
    max_steps: int
    max_lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    precision: str = "fp32"  # "bf16": mixed precision, see autocast(); "auto": best_precision()
    eval_interval: int = 100
    eval_batches: int = 10
    checkpoint_path: str | None = None
    checkpoint_interval: int | None = None
    progress: bool = True


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


class Trainer:
    """Runs ``config.max_steps`` optimisation steps of ``loss_fn(model, train_batch(step))``.

    ``train_batch(step)`` returns the batch of a step, ``val_batch(i)`` the ``i``-th validation batch
    (the same batches at every evaluation). ``self.model`` is the model being trained;
    ``self.train_model`` is what the training step calls, the same model here (a subclass may wrap
    it, as :class:`course_lib.distributed.DistributedTrainer` does).
    """

    #: Whether this process shows the progress bar and writes checkpoints (one process: always).
    is_main: bool = True

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Any], Tensor],
        train_batch: Callable[[int], Any],
        config: TrainerConfig,
        val_batch: Callable[[int], Any] | None = None,
    ):
        self.loss_fn, self.config = loss_fn, config
        self.train_batch, self.val_batch = train_batch, val_batch
        self.model = self.train_model = model
        self.optimizer = adamw_with_decay_groups(self.model, config.max_lr, config.weight_decay, config.betas)
        self.step = 0
        self.history = TrainingHistory()

    def lr_at(self, step: int) -> float:
        c = self.config
        return warmup_cosine_lr(step, c.max_lr, c.min_lr, c.warmup_steps, c.max_steps)

    def _my_share(self, batch: Any) -> Any:
        """The part of a batch this process trains on: all of it here (hook for data parallelism)."""
        return batch

    def _mean_over_processes(self, value: float) -> float:
        """A logged number averaged over the processes: the number itself here (hook for data parallelism)."""
        return value

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over ``eval_batches`` validation batches (the same batches every time)."""
        if self.val_batch is None:
            raise ValueError("evaluate() needs a val_batch function")
        was_training = self.model.training
        self.model.eval()
        with autocast(self.model, self.config.precision):  # self.model, not a wrapper: no gradients here
            losses = [self.loss_fn(self.model, self._my_share(self.val_batch(i))).item()
                      for i in range(self.config.eval_batches)]
        self.model.train(was_training)
        return self._mean_over_processes(sum(losses) / len(losses))

    def train_step(self) -> float:
        """One optimisation step at ``self.step``; returns the training loss."""
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_model.train()
        batch = self._my_share(self.train_batch(self.step))
        loss, grad_norm = optimization_step(self.train_model, self.loss_fn, batch, self.optimizer,
                                            self.config.grad_clip, self.config.precision)
        loss = self._mean_over_processes(loss)
        self.history.steps.append(self.step)
        self.history.train_loss.append(loss)
        self.history.lr.append(lr)
        self.history.grad_norm.append(grad_norm)
        self.step += 1
        return loss

    def fit(self, until: int | None = None) -> TrainingHistory:
        """Train up to step ``until`` (default: ``max_steps``), evaluating and checkpointing on the way."""
        from tqdm.auto import tqdm

        c = self.config
        end = c.max_steps if until is None else min(until, c.max_steps)
        bar = tqdm(total=end, initial=self.step, disable=not c.progress or not self.is_main, desc="training")
        while self.step < end:
            loss = self.train_step()
            bar.update(1)
            if self.val_batch is not None and (self.step % c.eval_interval == 0 or self.step == c.max_steps):
                self.history.eval_steps.append(self.step)
                self.history.val_loss.append(self.evaluate())
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{self.history.val_loss[-1]:.3f}")
            if c.checkpoint_path and c.checkpoint_interval and self.step % c.checkpoint_interval == 0:
                self.save_checkpoint(c.checkpoint_path)
        bar.close()
        return self.history

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Everything needed to continue exactly: weights, optimizer, step, history, random state.

        Only the main process writes (:attr:`is_main`); under data parallelism the others return.
        """
        if not self.is_main:
            return
        path = Path(path)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "history": asdict(self.history),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint behind

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Continue from :meth:`save_checkpoint`'s file (under data parallelism every process loads it)."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.history = TrainingHistory(**state["history"])
        torch.set_rng_state(state["torch_rng"])
