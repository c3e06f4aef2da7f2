"""Training examples from a stream of token ids: defined in chapter 4 (from text to vectors).

The story, in the order the chapter tells it:

1. :class:`SlidingWindowDataset` -- slide a window of ``context_length`` tokens along the text;
   each window is an input, and the same window moved one token to the right is its target
   (at every position the model must predict the token that comes next).
2. :func:`train_val_split` -- keep the last part of the text aside, in one piece, to check the
   model on text it was not trained on.
3. :func:`make_dataloader` -- batches of windows, shuffled reproducibly from a seed.
4. :func:`random_windows` -- the batch sampler chapters 7 to 9 train with: windows at random places,
   fixed by the step number, so a run can stop and resume (or be split over processes) and still
   see the same batches.

Shapes use B = batch and T = tokens (``context_length``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "SlidingWindowDataset",
    "make_dataloader",
    "random_windows",
    "train_val_split",
]


def _as_id_tensor(token_ids: Sequence[int] | Tensor, name: str = "token_ids") -> Tensor:
    """A 1-D int64 tensor of the ids; a ValueError/TypeError that says what is wrong otherwise."""
    if isinstance(token_ids, Tensor):
        if token_ids.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D sequence of token ids, got shape {tuple(token_ids.shape)}")
        if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
            raise TypeError(f"{name}: token ids must be integers, got dtype {token_ids.dtype}")
        return token_ids.long()
    if isinstance(token_ids, str):
        raise TypeError(f"{name}: expected token ids, got a string; encode it with a tokenizer first")
    ids = list(token_ids)
    bad = next((i for i, t in enumerate(ids) if isinstance(t, bool) or not isinstance(t, int)), None)
    if bad is not None:
        raise TypeError(f"{name}: token ids must be integers, got {ids[bad]!r} at position {bad}")
    return torch.tensor(ids, dtype=torch.long)


class SlidingWindowDataset(Dataset):
    """(input, target) pairs of ``context_length`` tokens each, cut from one long list of ids.

    Window ``i`` starts at token ``i * stride``::

        input  = token_ids[i*stride     : i*stride + context_length]
        target = token_ids[i*stride + 1 : i*stride + context_length + 1]

    so ``target[t]`` is the token that follows ``input[t]``. A window needs ``context_length + 1``
    tokens (the last target token included), and only full windows are used, so with N tokens
    there are::

        len(dataset) = (N - context_length - 1) // stride + 1      (N >= context_length + 1)

    windows; the up to ``stride - 1`` tokens left over at the end are not used. Fewer than
    ``context_length + 1`` tokens raise a ValueError. ``stride == context_length`` gives windows
    that do not overlap; ``stride == 1`` gives every possible window.
    """

    def __init__(self, token_ids: Sequence[int] | Tensor, context_length: int, stride: int):
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, got {context_length}")
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.token_ids = _as_id_tensor(token_ids)  # (N,)
        self.context_length = context_length
        self.stride = stride
        n = len(self.token_ids)
        if n < context_length + 1:
            raise ValueError(
                f"a window of context_length={context_length} needs at least {context_length + 1} tokens "
                f"(the inputs plus one more for the last target), but the text has only {n}"
            )
        self.n_windows = (n - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """The pair ``(input, target)``, two (T,) int64 tensors; negative indices count from the end."""
        if not -self.n_windows <= index < self.n_windows:
            raise IndexError(f"window {index} is out of range for a dataset of {self.n_windows} windows")
        start = (index % self.n_windows) * self.stride
        window = self.token_ids[start : start + self.context_length + 1]  # (T + 1,)
        return window[:-1], window[1:]

    def __repr__(self) -> str:
        return (
            f"SlidingWindowDataset(tokens={len(self.token_ids)}, context_length={self.context_length}, "
            f"stride={self.stride}, windows={self.n_windows})"
        )


def train_val_split(token_ids: Sequence[int] | Tensor, val_fraction: float = 0.1) -> tuple:
    """Split the ids into ``(train, val)``: the first part, then the last ``val_fraction`` of it.

    The split is contiguous, NOT shuffled, on purpose. Windows cut from neighbouring positions
    share most of their tokens (with ``stride < context_length`` they literally overlap), so
    shuffling tokens or windows into the two sets would put almost every validation window in the
    training set as well, and the validation loss would say nothing about unseen text. Keeping
    the end of the text aside imitates what the model faces later: text that continues, but that
    it has never read.

    ``len(val) == round(len(token_ids) * val_fraction)``; both parts must be non-empty. The parts
    are slices of the input, so a list gives lists and a tensor gives tensors (views, no copy).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    n = len(token_ids)
    n_val = round(n * val_fraction)
    if n_val == 0 or n_val == n:
        raise ValueError(
            f"val_fraction={val_fraction} of {n} tokens leaves an empty "
            f"{'validation' if n_val == 0 else 'training'} set; use more text or another fraction"
        )
    return token_ids[: n - n_val], token_ids[n - n_val :]


def make_dataloader(
    token_ids: Sequence[int] | Tensor,
    context_length: int,
    batch_size: int,
    stride: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """Batches of sliding windows: each batch is ``(inputs, targets)``, two (B, T) int64 tensors.

    ``stride`` defaults to ``context_length`` (windows that do not overlap). With ``shuffle``, the
    order of the windows comes from a ``torch.Generator`` seeded with ``seed``: the same seed gives
    the same batches, whatever else used the global random state. Each new pass over the loader
    (each epoch) continues that generator, so epochs differ from one another but the whole run is
    reproducible. ``drop_last`` leaves out a last batch smaller than ``batch_size`` (so every step
    sees the same number of examples); with ``drop_last=False`` it is kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dataset = SlidingWindowDataset(token_ids, context_length, context_length if stride is None else stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"only {len(dataset)} windows but batch_size={batch_size} with drop_last=True: "
            f"every batch would be dropped; use a smaller batch_size, a smaller stride or drop_last=False"
        )
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=num_workers,
    )


def random_windows(token_ids: Tensor, batch_size: int, context_length: int,
                   seed: int | torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch_size`` windows of ``context_length`` tokens from random places, and their targets.

    Returns ``(inputs, targets)``, two (B, T) int64 tensors with ``targets[b, t] ==
    inputs[b, t + 1]`` (the next token), cut from the 1-D ``token_ids`` exactly like
    :class:`SlidingWindowDataset` with ``stride=1`` cuts window ``start``, with every one of its
    ``N - T`` windows equally likely. ``seed`` is an int (the same int gives the same batch:
    ``random_windows(train_ids, 32, 64, seed=step)`` makes step ``k``'s batch a function of ``k``
    alone) or a ``torch.Generator`` whose state it advances (for a stream of batches). Nothing else
    touches the global random state. Defined for chapter 7; chapters 8 and 9, ``scripts/`` and
    ``bench/`` sample their training batches with it.
    """
    ids = _as_id_tensor(token_ids)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a positive integer, got {context_length!r}")
    if len(ids) < context_length + 1:
        raise ValueError(f"a window of context_length={context_length} needs at least {context_length + 1} tokens, "
                         f"but token_ids has only {len(ids)}")
    if isinstance(seed, torch.Generator):
        generator = seed
    elif isinstance(seed, int) and not isinstance(seed, bool):
        generator = torch.Generator().manual_seed(seed)
    else:
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    starts = torch.randint(len(ids) - context_length, (batch_size, 1), generator=generator)  # (B, 1)
    rows = ids[starts + torch.arange(context_length + 1)]  # (B, T + 1): each window and one token more
    return rows[:, :-1], rows[:, 1:]
