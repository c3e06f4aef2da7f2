"""Data-parallel training across processes started by ``torchrun`` (appendix "Scaling up").

``torchrun --nproc_per_node=N script.py`` starts N copies of the script and tells each one who it
is through environment variables: ``RANK`` (0 .. WORLD_SIZE-1, unique across all machines),
``LOCAL_RANK`` (the index on this machine, which picks the GPU), ``WORLD_SIZE``, and
``MASTER_ADDR``/``MASTER_PORT`` (where the processes meet). :func:`setup` reads them and joins the
process group; a script started without torchrun gets a one-process context and nothing is
initialised, so the same script runs alone too.

:class:`DistributedTrainer` is chapter 7's :class:`~course_lib.trainer.Trainer` for a group of
processes: :func:`wrap` puts the model in ``DistributedDataParallel``, :func:`shard` gives each
process its rows of the global batch, and :func:`mean_across_processes` averages a logged number.
The Trainer itself knows nothing of this; the subclass fills in its three hooks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from course_lib.trainer import Trainer, TrainerConfig

__all__ = [
    "DistributedContext",
    "DistributedTrainer",
    "cleanup",
    "is_main_process",
    "launched_by_torchrun",
    "mean_across_processes",
    "rank",
    "setup",
    "shard",
    "world_size",
    "wrap",
]

# What torchrun sets for every process it starts; init_process_group("env://") needs all of them.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is. ``backend`` is None when torch.distributed was not initialised."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when any of torchrun's variables is set (then :func:`setup` requires all of them)."""
    return any(name in os.environ for name in TORCHRUN_VARIABLES[:3])


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def setup(backend: str | None = None) -> DistributedContext:
    """Join the process group that torchrun prepared; return this process's rank, world size and device.

    ``backend`` defaults to ``"nccl"`` when CUDA is available (one GPU per process, chosen by
    ``LOCAL_RANK``) and ``"gloo"`` (CPU) otherwise. Without torchrun's variables nothing is
    initialised and the context is rank 0 of 1, on the first GPU if there is one, else the CPU.
    """
    if _initialised():  # a second call: describe the group that exists
        local = int(os.environ.get("LOCAL_RANK", 0))
        active = dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if active == "nccl" else torch.device("cpu")
        return DistributedContext(dist.get_rank(), local, dist.get_world_size(), device, active)
    if not launched_by_torchrun():
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return DistributedContext(0, 0, 1, device, None)

    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"some of torchrun's environment variables are set but {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} missing; start the script with "
                           "torchrun (python -m torch.distributed.run), or unset RANK/LOCAL_RANK/WORLD_SIZE")
    rank, local_rank, size = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    if not 0 <= rank < size:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={size})")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise RuntimeError("backend 'nccl' needs CUDA GPUs, and none is visible; use backend='gloo' on CPUs")
        if local_rank >= gpus:
            raise RuntimeError(f"LOCAL_RANK={local_rank}, but this machine shows only {gpus} GPU(s): "
                               f"start at most {gpus} processes per machine (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # before init: NCCL binds each process to its own GPU
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, rank=rank, world_size=size)
    return DistributedContext(rank, local_rank, size, device, backend)


def cleanup() -> None:
    """Leave the process group (if any); call once at the end of a torchrun script."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 in a single process."""
    return dist.get_rank() if _initialised() else 0


def world_size() -> int:
    """The number of processes, 1 in a single process."""
    return dist.get_world_size() if _initialised() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that prints and writes files."""
    return rank() == 0


def wrap(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` when torch.distributed is initialised, else ``model`` itself.

    DDP copies rank 0's weights to every process when it is created, and during ``backward()``
    averages each gradient across processes, so every process then takes the same optimizer step.
    The model must already be on this process's device. Every trainable parameter must get a
    gradient at every step; for a model where some do not, wrap it yourself with
    ``DistributedDataParallel(model, find_unused_parameters=True)`` and hand that to the Trainer.
    """
    if not _initialised():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(batch: Any, rank: int, world_size: int) -> Any:
    """This process's rows of the global ``batch``: the ``rank``-th of ``world_size`` equal, contiguous chunks.

    Every tensor in ``batch`` (a tensor, or tuples, lists and dicts of them) is cut along its first
    axis, which must divide evenly by ``world_size``; other values (numbers, strings, 0-d tensors)
    are passed on unchanged. The chunks are views: nothing is copied. Rank 0 of 2 gets the first
    half of the rows, rank 1 the second, so together the processes see exactly the global batch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    if isinstance(batch, Tensor):
        if batch.dim() == 0:
            return batch
        rows = batch.shape[0]
        if rows % world_size:
            raise ValueError(f"a batch of {rows} rows does not split evenly across {world_size} processes; "
                             f"make the global batch size a multiple of {world_size}")
        size = rows // world_size
        return batch[rank * size:(rank + 1) * size]
    if isinstance(batch, Mapping):
        return type(batch)((key, shard(value, rank, world_size)) for key, value in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(shard(value, rank, world_size) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(value, rank, world_size) for value in batch)
    return batch


def mean_across_processes(value: float) -> float:
    """The mean of ``value`` over all processes (every process gets it); ``value`` itself in a single process.

    Summed in float64 and divided here: gloo has no averaging all-reduce, and float64 keeps the
    mean of float64 losses from being rounded to float32.
    """
    if not _initialised():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.item() / dist.get_world_size()


class DistributedTrainer(Trainer):
    """Chapter 7's :class:`~course_lib.trainer.Trainer`, run by every process that torchrun starts.

    Built with the same arguments, in every process, after :func:`setup`. Started without torchrun
    (``torch.distributed`` not initialised) it is exactly the Trainer. In a group of processes:

    - ``train_batch(step)`` and ``val_batch(i)`` return the *global* batch, the same in every
      process; each process keeps its contiguous share of the rows (:func:`shard`), so the first
      axis of every tensor in a batch must divide by the number of processes.
    - ``model`` is wrapped in ``DistributedDataParallel`` (or passed already wrapped), which
      averages the gradients over the processes during ``backward()``, so the clipping norm and
      the update are the same everywhere. The averaged gradient is the gradient of the global batch
      when ``loss_fn`` is a mean over rows that weigh the same, as
      :func:`~course_lib.trainer.language_model_loss` is (every row has T positions). A loss that
      averages over a varying number of positions per row (padding, ``ignore_index``) weighs the
      shares slightly differently than one process would. During training ``loss_fn`` receives the
      wrapper: it may call it, but its attributes are on ``wrapper.module``.
    - ``self.model`` is always the plain model: checkpoints hold its usual parameter names.
    - The logged training loss and the validation loss are means over all processes (the same
      number everywhere); the gradient norm is that of the averaged gradient. Every process must
      call :meth:`evaluate` (it is a collective step).
    - Only rank 0 shows the progress bar and writes checkpoints. Every process loads them; the
      random state saved is rank 0's and every process restores it.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Any], Tensor],
        train_batch: Callable[[int], Any],
        config: TrainerConfig,
        val_batch: Callable[[int], Any] | None = None,
    ):
        wrapped = model if isinstance(model, DistributedDataParallel) else wrap(model)
        plain = wrapped.module if isinstance(wrapped, DistributedDataParallel) else wrapped
        super().__init__(plain, loss_fn, train_batch, config, val_batch)
        self.train_model = wrapped
        self.rank, self.world_size = rank(), world_size()
        self.is_main = self.rank == 0

    def _my_share(self, batch: Any) -> Any:
        return shard(batch, self.rank, self.world_size) if _initialised() else batch

    def _mean_over_processes(self, value: float) -> float:
        return mean_across_processes(value)
