"""Training basics, defined in chapter 2 ("Learning from data with PyTorch").

The story, in the order the chapter tells it:

1. :func:`gradient_descent_step` -- move every parameter a little against its gradient, in place,
   then zero the gradients (what ``torch.optim.SGD`` does, written out).
2. :func:`accuracy` -- the fraction of examples whose highest logit is the right class.
3. :func:`load_digits_split` -- scikit-learn's bundled 8x8 digits, scaled to [0, 1] and split,
   class by class, into training, validation and test sets.
4. :func:`make_mlp` -- a multilayer perceptron: ``Linear -> ReLU -> ... -> Linear``.
5. :func:`train_classifier` -- the training loop with per-epoch validation; it returns a
   :class:`History` of the learning curves. :func:`evaluate` computes the loss and accuracy on
   one data set.

This is deliberately small and readable. Chapter 7 builds the full trainer for language models
(learning-rate schedules, gradient clipping, checkpoints) separately.

A data set here is a pair ``(x, y)``: features of shape (N, F) and integer class labels of shape (N,).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DigitsSplit",
    "Evaluation",
    "History",
    "accuracy",
    "evaluate",
    "gradient_descent_step",
    "load_digits_split",
    "make_mlp",
    "train_classifier",
]

Data = tuple[Tensor, Tensor]  # (features (N, F), labels (N,))

OPTIMIZERS = ("adam", "sgd")


# ------------------------------------------------------------------------- gradient descent


@torch.no_grad()
def gradient_descent_step(params: Iterable[Tensor], lr: float) -> None:
    """One step of plain gradient descent: ``p -= lr * p.grad`` for each parameter, then zero the grads.

    The update happens in place (the same tensor objects keep being the model's parameters) and
    under ``torch.no_grad()`` (the update itself must not become part of the computation graph).
    Parameters whose ``.grad`` is ``None`` (not used by the loss) are skipped. ``params`` may be
    any iterable, such as the generator ``model.parameters()``; it is walked only once.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr: expected a finite number >= 0, got {lr!r}")
    if isinstance(params, Tensor):
        params = [params]  # a single tensor, not an iterable of its rows
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}]: expected a torch.Tensor, got {type(p).__name__}")
        if p.grad is None:
            continue
        p.sub_(lr * p.grad)  # in place: p = p - lr * grad would only rebind a local name
        p.grad.zero_()  # gradients add up across backward() calls; start the next step from 0


# --------------------------------------------------------------------------------- accuracy


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction (0 to 1) of rows of ``logits`` (N, C) whose largest entry is at ``labels`` (N,).

    Ties go to the first largest class, as with ``argmax``. Returns a Python float.
    """
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            f"accuracy: expected two tensors, got {type(logits).__name__} and {type(labels).__name__}"
        )
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape (N, C), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels: expected shape ({logits.shape[0]},), one label per row of logits "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if logits.shape[0] == 0:
        raise ValueError("accuracy of an empty batch (N = 0) is undefined")
    predictions = logits.argmax(dim=1)  # (N,): the class with the largest logit, per row
    return (predictions == labels).sum().item() / labels.shape[0]  # count / N in Python: exact


# ------------------------------------------------------------------------------- the digits


@dataclass(frozen=True)
class DigitsSplit:
    """The digits in three disjoint parts; each part is ``(x, y)`` with x (N, 64) float32, y (N,) int64.

    ``indices[name]`` holds the row numbers in ``sklearn.datasets.load_digits()`` of each part's
    examples, in the same order as the part (``name`` is "train", "val" or "test").
    """

    train: Data
    val: Data
    test: Data
    indices: dict[str, Tensor] = field(repr=False)


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a fraction with 0 <= {name} < 1, got {value!r}")


def load_digits_split(val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """scikit-learn's bundled 8x8 digits (1797 images, offline) split into train, validation and test.

    Pixels (0 to 16) are divided by 16, so x is float32 in [0, 1], shape (N, 64); labels are int64.
    The split is **stratified**: the examples of each digit are shuffled with ``seed`` and cut into
    ``round(n * test_fraction)`` test and ``round(n * val_fraction)`` validation examples, the rest
    training, so every part has about the same share of every digit. Each part is then shuffled
    (again from ``seed``), so its examples are not sorted by digit. Same seed, same split.
    """
    from sklearn.datasets import load_digits  # imported here: scikit-learn is only needed for this

    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data, got {val_fraction} + {test_fraction}"
        )
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # (1797, 64), pixels 0..16 -> 0..1
    y = torch.tensor(digits.target, dtype=torch.int64)  # (1797,)

    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {"train": [], "val": [], "test": []}
    for digit in range(10):
        rows = (y == digit).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    indices = {}
    for name, pieces in parts.items():
        rows = torch.cat(pieces)
        indices[name] = rows[torch.randperm(len(rows), generator=generator)]
    return DigitsSplit(
        train=(x[indices["train"]], y[indices["train"]]),
        val=(x[indices["val"]], y[indices["val"]]),
        test=(x[indices["test"]], y[indices["test"]]),
        indices=indices,
    )


# ---------------------------------------------------------------------------------- the MLP


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def make_mlp(in_features: int, hidden_sizes: Sequence[int], n_classes: int, seed: int | None = None) -> nn.Sequential:
    """``Linear(in, h1) -> ReLU -> Linear(h1, h2) -> ReLU -> ... -> Linear(h_last, n_classes)``.

    The output is one logit per class (no softmax: ``F.cross_entropy`` takes logits). With no hidden
    sizes this is a single linear layer (multinomial logistic regression). With ``seed``, the initial
    weights come from that seed and torch's global random state is left untouched; without it, they
    come from (and advance) the global random state, as for any ``nn.Linear``.
    """
    _check_size("in_features", in_features)
    _check_size("n_classes", n_classes)
    if isinstance(hidden_sizes, int):
        raise TypeError(f"hidden_sizes: expected a sequence of sizes such as [64], got the int {hidden_sizes}")
    sizes = [in_features, *hidden_sizes, n_classes]
    for i, size in enumerate(hidden_sizes):
        _check_size(f"hidden_sizes[{i}]", size)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:  # no ReLU after the last layer: its outputs are the logits
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)


# ------------------------------------------------------------------------- training loop


class Evaluation(NamedTuple):
    """Mean cross-entropy loss and accuracy of a model on one data set."""

    loss: float
    accuracy: float


@dataclass
class History:
    """Learning curves: one entry per epoch, measured at the end of that epoch.

    ``train_loss`` is the mean of the minibatch losses seen during the epoch (weighted by batch
    size), so it describes the model *while* it changed; ``val_loss`` and ``val_accuracy`` are
    measured on the validation set after the epoch, with the model in evaluation mode.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.train_loss)


def _check_data(name: str, data: Data) -> Data:
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
        raise TypeError(f"{name}: expected a pair (x, y) of tensors, got {type(data).__name__}")
    x, y = data
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"{name}: expected x of shape (N, ...) and y of shape (N,) with N >= 1, "
            f"got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}: labels must be integer class indices, got dtype {y.dtype}")
    return x, y


@torch.no_grad()
def evaluate(model: nn.Module, data: Data) -> Evaluation:
    """Cross-entropy loss and accuracy of ``model`` on ``data = (x, y)``, in one batch.

    The model runs in evaluation mode (no dropout) and without building a graph; its previous
    mode (training or evaluation) is restored afterwards.
    """
    x, y = _check_data("data", data)
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was_training)
    return Evaluation(F.cross_entropy(logits, y).item(), accuracy(logits, y))


def train_classifier(
    model: nn.Module,
    train: Data,
    val: Data,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    optimizer: str = "adam",
) -> History:
    """Train ``model`` with cross-entropy on minibatches of ``train``; validate after every epoch.

    Each epoch visits the training examples once, in an order drawn from a generator seeded with
    ``seed`` (``torch.randperm``), ``batch_size`` at a time (the last batch may be smaller). Each
    step: forward, loss, ``zero_grad``, ``backward``, ``step``. ``optimizer`` is ``"adam"``
    (``torch.optim.Adam``) or ``"sgd"`` (plain ``torch.optim.SGD``, no momentum). The model is
    changed in place and the learning curves are returned. The same seed and the same initial
    model (see ``make_mlp(..., seed=...)``) give the same history. Nothing is printed.
    """
    x_train, y_train = _check_data("train", train)
    _check_data("val", val)
    _check_size("epochs", epochs)
    _check_size("batch_size", batch_size)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")

    generator = torch.Generator().manual_seed(seed)
    history = History()
    n = len(x_train)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            logits = model(x_train[batch])  # forward: (B, C)
            loss = F.cross_entropy(logits, y_train[batch])  # mean over the batch
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        history.train_loss.append(total / n)
        val_loss, val_accuracy = evaluate(model, val)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_accuracy)
    return history
