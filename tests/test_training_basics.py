"""Unit tests for course_lib.training_basics (chapter 2)."""

import pytest
import torch
from torch import nn

from course_lib.training_basics import (
    DigitsSplit,
    History,
    accuracy,
    evaluate,
    gradient_descent_step,
    load_digits_split,
    make_mlp,
    train_classifier,
)


@pytest.fixture(scope="module")
def digits() -> DigitsSplit:
    return load_digits_split(val_fraction=0.2, test_fraction=0.2, seed=0)


# --------------------------------------------------------------------------- gradient descent


def test_gradient_step_matches_the_formula_on_a_quadratic_and_zeros_the_grads():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    loss = ((w - 4.0) ** 2).sum() + 2.0 * b**2  # d/dw = 2 (w - 4), d/db = 4 b
    loss.backward()
    w_obj, b_obj = w, b
    gradient_descent_step([w, b], lr=0.1)
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0, 0.5]) - 0.1 * 2 * torch.tensor([-3.0, -6.0, -3.5]))
    torch.testing.assert_close(b.detach(), torch.tensor(3.0 - 0.1 * 12.0))
    assert w is w_obj and b is b_obj  # in place: the same tensors
    assert torch.equal(w.grad, torch.zeros(3)) and torch.equal(b.grad, torch.zeros(()))
    assert w.is_leaf and w.requires_grad and w.grad_fn is None  # the update left no graph behind


def test_gradient_descent_on_a_quadratic_converges_to_its_minimum():
    w = torch.zeros(4, requires_grad=True)
    target = torch.tensor([1.0, -1.0, 2.0, 0.5])
    for _ in range(200):
        ((w - target) ** 2).sum().backward()
        gradient_descent_step([w], lr=0.1)
    torch.testing.assert_close(w.detach(), target)


def test_gradient_step_takes_a_generator_and_skips_params_without_grad():
    model = nn.Linear(3, 2)
    unused = nn.Parameter(torch.ones(2))
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(5, 3)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    gradient_descent_step(model.parameters(), lr=0.5)  # a generator, walked once
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * g)
        assert torch.equal(p.grad, torch.zeros_like(p))
    gradient_descent_step([unused], lr=0.5)
    assert torch.equal(unused.detach(), torch.ones(2)) and unused.grad is None


@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_gradient_step_rejects_bad_learning_rates(lr):
    with pytest.raises(ValueError, match="lr"):
        gradient_descent_step([torch.zeros(1, requires_grad=True)], lr)


def test_gradient_step_rejects_non_tensors():
    with pytest.raises(TypeError, match=r"params\[1\]"):
        gradient_descent_step([torch.zeros(1, requires_grad=True), 3.0], 0.1)


# --------------------------------------------------------------------------------- accuracy


def test_accuracy_on_hand_examples():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 4.0]])
    assert accuracy(logits, torch.tensor([0, 1, 2, 0])) == 1.0
    assert accuracy(logits, torch.tensor([0, 1, 2, 2])) == 0.75
    assert accuracy(logits, torch.tensor([1, 0, 0, 2])) == 0.0
    result = accuracy(logits[:2], torch.tensor([0, 2]))
    assert type(result) is float and result == 0.5  # a Python float, a fraction (not a percentage)


def test_accuracy_uses_the_class_axis():
    # A square case where the argmax over rows (dim=0) gives another answer than over classes.
    logits = torch.tensor([[0.0, 9.0], [1.0, 2.0]])
    assert accuracy(logits, torch.tensor([1, 1])) == 1.0  # argmax over dim=0 would give [1, 0]


@pytest.mark.parametrize(
    ("logits", "labels", "error"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), ValueError),  # logits not (N, C)
        (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), ValueError),  # N differs
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), ValueError),  # labels (N, 1)
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), ValueError),  # empty
        (torch.zeros(4, 3), torch.zeros(4), TypeError),  # float labels
        ([[1.0, 0.0]], torch.zeros(1, dtype=torch.long), TypeError),  # not a tensor
    ],
)
def test_accuracy_rejects_wrong_inputs(logits, labels, error):
    with pytest.raises(error):
        accuracy(logits, labels)


# ------------------------------------------------------------------------------- the digits


def test_split_is_disjoint_covers_the_data_and_has_the_promised_types(digits):
    idx = digits.indices
    everything = torch.cat([idx["train"], idx["val"], idx["test"]])
    assert sorted(everything.tolist()) == list(range(1797))  # disjoint, and nothing left out
    for name in ("train", "val", "test"):
        x, y = getattr(digits, name)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(idx[name]), 64) and y.shape == (len(idx[name]),)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(digits.train[0].max()) == 1.0  # scaled by 16, not by something larger


def test_split_sizes_are_stratified(digits):
    n = 1797
    assert abs(len(digits.indices["val"]) - 0.2 * n) <= 10 and abs(len(digits.indices["test"]) - 0.2 * n) <= 10
    for name in ("train", "val", "test"):
        counts = torch.bincount(getattr(digits, name)[1], minlength=10).float()
        shares = counts / counts.sum()
        assert float((shares - 0.1).abs().max()) < 0.02, f"{name}: class shares {shares.tolist()}"
    # each part is shuffled, not sorted by digit
    assert not torch.equal(digits.train[1], digits.train[1].sort().values)


def test_split_rows_match_sklearn_and_the_same_seed_gives_the_same_split(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    rows = digits.indices["val"][:20]
    torch.testing.assert_close(digits.val[0][:20], torch.tensor(raw.data[rows.numpy()], dtype=torch.float32) / 16)
    assert digits.val[1][:20].tolist() == raw.target[rows.numpy()].tolist()
    again = load_digits_split(0.2, 0.2, seed=0)
    other = load_digits_split(0.2, 0.2, seed=1)
    assert all(torch.equal(digits.indices[k], again.indices[k]) for k in ("train", "val", "test"))
    assert not torch.equal(digits.indices["train"], other.indices["train"])


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (-0.1, 0.2), (0.2, 1.0), ("0.2", 0.2)])
def test_split_rejects_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        load_digits_split(val, test)


# ---------------------------------------------------------------------------------- the MLP


def test_make_mlp_layers_and_shapes():
    mlp = make_mlp(64, [32, 16], 10)
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [(64, 32), (32, 16), (16, 10)]
    assert mlp(torch.zeros(7, 64)).shape == (7, 10)
    linear = make_mlp(64, [], 10)
    assert len(linear) == 1 and isinstance(linear[0], nn.Linear)


def test_make_mlp_seed_fixes_the_weights_and_keeps_the_global_state():
    state = torch.get_rng_state()
    a, b = make_mlp(8, [4], 3, seed=5), make_mlp(8, [4], 3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = make_mlp(8, [4], 3, seed=6)
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("args", [(0, [4], 3), (8, [0], 3), (8, 4, 3), (8, [4], 1.5)])
def test_make_mlp_rejects_bad_sizes(args):
    with pytest.raises((ValueError, TypeError)):
        make_mlp(*args)


# ---------------------------------------------------------------------------- training loop


def test_training_on_digits_reaches_90_percent_and_the_loss_falls(digits):
    model = make_mlp(64, [64], 10, seed=0)
    history = train_classifier(model, digits.train, digits.val, epochs=5, lr=0.01, batch_size=32, seed=0)
    assert isinstance(history, History) and len(history) == 5
    assert len(history.val_loss) == len(history.val_accuracy) == 5
    assert history.val_accuracy[-1] > 0.9
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_loss[-1] < history.val_loss[0]
    loss, acc = evaluate(model, digits.val)
    assert acc == history.val_accuracy[-1] and loss == pytest.approx(history.val_loss[-1])
    assert model.training  # evaluate restores the mode


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_is_deterministic_for_a_seed(digits, optimizer):
    lr = 0.01 if optimizer == "adam" else 0.3
    runs = []
    for seed in (0, 0, 1):
        model = make_mlp(64, [16], 10, seed=0)
        history = train_classifier(model, digits.train, digits.val, epochs=2, lr=lr, batch_size=64, seed=seed,
                                   optimizer=optimizer)
        runs.append((history, [p.detach().clone() for p in model.parameters()]))
    (h0, p0), (h1, p1), (h2, p2) = runs
    assert h0 == h1 and all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert h0.train_loss != h2.train_loss  # another seed visits the batches in another order


def test_sgd_training_equals_the_loop_written_out(digits):
    """One epoch of train_classifier(optimizer="sgd") is gradient_descent_step on shuffled minibatches."""
    x, y = digits.train
    model = make_mlp(64, [8], 10, seed=3)
    by_hand = make_mlp(64, [8], 10, seed=3)
    train_classifier(model, digits.train, digits.val, epochs=1, lr=0.2, batch_size=100, seed=7, optimizer="sgd")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(7))
    for start in range(0, len(x), 100):
        batch = order[start : start + 100]
        nn.functional.cross_entropy(by_hand(x[batch]), y[batch]).backward()
        gradient_descent_step(by_hand.parameters(), lr=0.2)
    for p, q in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(p, q)


def test_train_classifier_rejects_bad_arguments(digits):
    model = make_mlp(64, [4], 10)
    with pytest.raises(ValueError, match="optimizer"):
        train_classifier(model, digits.train, digits.val, 1, 0.01, 32, 0, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        train_classifier(model, digits.train, digits.val, 1, 0.0, 32, 0)
    with pytest.raises(ValueError, match="batch_size"):
        train_classifier(model, digits.train, digits.val, 1, 0.01, 0, 0)
    with pytest.raises(TypeError, match="train"):
        train_classifier(model, digits.train[0], digits.val, 1, 0.01, 32, 0)
    with pytest.raises(ValueError, match="val"):
        train_classifier(model, digits.train, (digits.val[0], digits.val[1][:5]), 1, 0.01, 32, 0)
