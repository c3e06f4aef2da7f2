"""Checks for the exercise notebooks: every failure says what is wrong and what to try.

Chapter 5 (attention) defines this module; the exercises of every chapter use it.
Each ``check_*`` function returns ``None`` when the answer is right and raises an
``AssertionError`` whose message names the thing being checked (``name``), what was
expected, what came back and, where we can guess it, the likely mistake. A test
cell in an exercise is then a few readable lines::

    weights = run(attention_weights, scores, name="attention_weights(scores)")
    check_shape(weights, (2, 4, 4), name="attention_weights(scores)")
    check_rows_sum_to_one(weights, name="attention_weights(scores)")

:func:`run` calls a learner's function and turns the ``NotImplementedError`` of an
unfinished stub into a plain "not implemented yet" message; :func:`random_tensor`
and :func:`seeded` make inputs and freshly built modules the same on every run, so
a test that passes once passes always.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import torch
from torch import Tensor

__all__ = [
    "check_causal",
    "check_finite",
    "check_ids",
    "check_linear",
    "check_no_lookahead",
    "check_pair",
    "check_rows_sum_to_one",
    "check_shape",
    "check_tensor",
    "default_tolerances",
    "random_tensor",
    "run",
    "seeded",
]

NOT_IMPLEMENTED = "part not implemented yet: replace `raise NotImplementedError()` with your code"

# (atol, rtol) per dtype: a little looser than torch.testing, because a correct answer
# written another way (softmax by hand, a different order of operations) rounds differently.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-2),
    torch.bfloat16: (1e-2, 2e-2),
    torch.float32: (1e-5, 1e-4),
    torch.float64: (1e-8, 1e-6),
}


# --------------------------------------------------------------------------- helpers


def _fail(message: str, hint: str | None = None) -> NoReturn:
    """Raise the AssertionError a learner sees, with the hint (if any) on its own line."""
    if hint:
        message = f"{message}\nHint: {hint}"
    raise AssertionError(message)


def _shape(shape: Sequence[int] | torch.Size) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def _index(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    """Turn a position in the flattened tensor into an index tuple, e.g. 5 in (2, 3) -> (1, 2)."""
    index = []
    for size in reversed(shape):
        flat, rest = divmod(flat, size)
        index.append(rest)
    return tuple(reversed(index))


def _value(x: Tensor) -> str:
    """One entry, printed short: 0.731059, True, 3, nan."""
    item = x.item()
    return f"{item:.6g}" if isinstance(item, float) else str(item)


def _first(where: Tensor) -> tuple[int, ...]:
    """Index of the first True entry of a bool tensor (there must be one)."""
    flat = int(where.reshape(-1).nonzero()[0, 0])
    return _index(flat, where.shape)


def _require_tensor(got: Any, name: str) -> Tensor:
    """Fail unless ``got`` is a tensor; the message says what came back instead."""
    if isinstance(got, Tensor):
        return got
    kind = type(got).__name__
    if got is None:
        _fail(f"{name} returned NoneType, expected a torch.Tensor — did you forget `return`?")
    if isinstance(got, (tuple, list)) and got and isinstance(got[0], Tensor):
        _fail(f"{name} returned a {kind} of {len(got)} tensors, expected a single torch.Tensor")
    _fail(f"{name} returned {kind}, expected a torch.Tensor")


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """The (atol, rtol) that :func:`check_tensor` uses for ``dtype``; (0, 0) for bool and integers."""
    return _TOLERANCES.get(dtype, (0.0, 0.0))


# ------------------------------------------------------------------ calling the learner


def run(fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` and return the result, failing with a clear message.

    An unfinished stub (``raise NotImplementedError()``) becomes an AssertionError that
    says the part is not done yet. Any other exception becomes an AssertionError naming
    the call; the original error, with the line of your code that raised it, is shown
    just above it in the traceback. Pass a class to build an object the same way.
    """
    name = name or f"{getattr(fn, '__name__', type(fn).__name__)}(...)"
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{name}: {NOT_IMPLEMENTED}") from None
    except Exception as err:  # noqa: BLE001 - re-raised with context, never swallowed
        raise AssertionError(
            f"{name} raised {type(err).__name__}: {err}\n(the traceback above shows where in your code)"
        ) from err


# ------------------------------------------------------------------- reproducible inputs


def random_tensor(
    *shape: int | Sequence[int],
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
) -> Tensor:
    """Standard-normal values times ``scale``, the same for the same shape and seed.

    ``random_tensor(2, 3, seed=1)`` and ``random_tensor((2, 3), seed=1)`` are equal.
    Uses its own generator, so it neither reads nor changes torch's global random state.
    """
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(_shape(shape), generator=generator, dtype=torch.float64) * scale
    return values.to(dtype)


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Run a block with torch's global random state seeded, then restore the state.

    Use it to build a module whose random initial weights are the same on every run::

        with seeded(0):
            layer = CausalSelfAttention(4, 3, context_length=6)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------ checks


def check_shape(got: Any, expected_shape: Sequence[int], name: str = "result", hint: str | None = None) -> None:
    """Fail unless ``got`` is a tensor of exactly ``expected_shape``."""
    got = _require_tensor(got, name)
    expected = _shape(expected_shape)
    actual = _shape(got.shape)
    if actual == expected:
        return
    message = f"{name}: expected shape {expected}, got {actual}"
    if sorted(actual) == sorted(expected):
        message += " (the right sizes in the wrong order: a transpose or view in the wrong place?)"
    elif len(actual) != len(expected):
        message += f" ({len(actual)} dimensions instead of {len(expected)})"
    _fail(message, hint)


def check_finite(got: Any, name: str = "result", hint: str | None = None) -> None:
    """Fail if ``got`` holds NaN or infinite values; the message counts them and shows the first."""
    got = _require_tensor(got, name)
    if not (got.is_floating_point() or got.is_complex()):
        return
    _check_nonfinite(got, None, name, hint)


def _check_nonfinite(got: Tensor, expected: Tensor | None, name: str, hint: str | None) -> None:
    """NaN/inf in ``got`` that ``expected`` does not have at the same place."""
    got = got.detach()
    for label, bad, cause in (
        ("NaN", torch.isnan(got), "NaN usually comes from 0/0 or inf - inf, e.g. after exp() overflowed"),
        ("infinite", torch.isinf(got), "inf usually comes from exp() of a large number or a division by 0"),
    ):
        if expected is not None:
            same = torch.isnan(expected) if label == "NaN" else (got == expected)
            bad = bad & ~same
        count = int(bad.sum())
        if count:
            where = _first(bad)
            verb = "is" if count == 1 else "are"
            _fail(
                f"{name}: {count} of {got.numel()} entries {verb} {label} (the first at index {where}: "
                f"{_value(got[where])}); {cause}",
                hint,
            )


def check_tensor(
    got: Any,
    expected: Tensor,
    name: str = "result",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    hint: str | None = None,
    check_dtype: bool = True,
) -> None:
    """Fail unless ``got`` matches ``expected`` in type, shape, dtype and values.

    Floats match when ``|got - expected| <= atol + rtol * |expected|`` (defaults from
    :func:`default_tolerances`); bool and integer tensors must be equal. On a mismatch
    the message says how many entries differ, the largest difference and the first
    differing index with both values; ``hint`` (your guess at the likely mistake) is
    added to messages about wrong values.
    """
    got = _require_tensor(got, name)
    expected = expected.detach()
    check_shape(got, expected.shape, name)
    if got.dtype != expected.dtype:
        if check_dtype:
            message = f"{name}: expected dtype {expected.dtype}, got {got.dtype}"
            if expected.dtype == torch.bool:
                message += " (make it with dtype=torch.bool, or with a comparison such as `>=`)"
            _fail(message)
        got = got.to(expected.dtype)
    got = got.detach().to(expected.device)
    default_atol, default_rtol = default_tolerances(expected.dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol

    exact = not (expected.is_floating_point() or expected.is_complex())
    if exact:
        wrong = got != expected
    else:
        _check_nonfinite(got, expected, name, hint)
        wrong = ~torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    count = int(wrong.sum())
    if count == 0:
        return
    where = _first(wrong)
    message = f"{name}: {count} of {expected.numel()} entries differ from the expected values"
    if not exact:
        both_finite = torch.isfinite(got) & torch.isfinite(expected)
        diff = (got.to(torch.float64) - expected.to(torch.float64)).abs()[both_finite & wrong]
        largest = f"{diff.max().item():.3g}" if diff.numel() else "inf"
        message += f" (atol={atol:g}, rtol={rtol:g}); largest absolute difference {largest}"
    message += f"; first at index {where}: got {_value(got[where])}, expected {_value(expected[where])}"
    _fail(message, hint)


def check_rows_sum_to_one(
    weights: Any,
    name: str = "weights",
    dim: int = -1,
    atol: float = 1e-5,
    hint: str | None = None,
) -> None:
    """Fail unless ``weights`` sums to 1 along ``dim`` everywhere (each row is a distribution)."""
    weights = _require_tensor(weights, name)
    if not weights.is_floating_point():
        _fail(f"{name}: expected floating-point weights, got dtype {weights.dtype}")
    check_finite(weights, name, hint)
    if weights.dim() == 0:
        _fail(f"{name}: expected a tensor with at least one dimension, got a single number")
    if bool((weights < 0).any()):
        where = _first(weights < 0)
        _fail(f"{name}: weights must not be negative, but index {where} is {_value(weights[where])}", hint)
    sums = weights.detach().to(torch.float64).sum(dim=dim)
    wrong = (sums - 1.0).abs() > atol
    count = int(wrong.sum())
    if count == 0:
        return
    where = _first(wrong)
    _fail(
        f"{name}: the entries along dim {dim} should sum to 1, but {count} of {sums.numel()} sums "
        f"do not (the sum at index {where} is {_value(sums[where])}) — is the softmax (or the "
        f"normalisation) taken over the wrong axis, or left out?",
        hint,
    )


def check_causal(weights: Any, name: str = "weights", hint: str | None = None) -> None:
    """Fail unless the (..., T, T) ``weights`` are 0 above the diagonal: no query looks ahead.

    Entry ``[..., i, j]`` is how much query ``i`` looks at key ``j``; with ``j > i`` that
    key is in the future, so its weight must be exactly 0.
    """
    weights = _require_tensor(weights, name)
    if weights.dim() < 2 or weights.shape[-1] != weights.shape[-2]:
        _fail(f"{name}: expected square weights of shape (..., T, T), got {_shape(weights.shape)}")
    future = torch.ones(weights.shape[-2:], dtype=torch.bool, device=weights.device).triu(diagonal=1)
    leaks = (weights.detach() != 0) & future
    if not bool(leaks.any()):
        return
    where = _first(leaks)
    query, key = where[-2], where[-1]
    _fail(
        f"{name}: query {query} gives weight {_value(weights[where])} to key {key}, which comes after it "
        f"(index {where}); every weight above the diagonal must be 0",
        hint or "is the mask applied before the softmax, and True on and below the diagonal?",
    )


def check_no_lookahead(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    name: str = "model",
    token_dim: int = 1,
    atol: float = 1e-5,
    seed: int = 1234,
    hint: str | None = "mask the scores so that each query only sees its own and earlier positions",
) -> None:
    """Fail if the output of ``fn`` at some token changes when only later tokens of ``x`` change.

    For every position t, tokens after t are replaced with other random values and the
    outputs up to t are compared. ``fn`` must be deterministic (call ``model.eval()`` first
    if it has dropout). ``token_dim`` is the axis of ``x`` and of the output that indexes
    tokens.
    """
    x = x.detach()
    with torch.no_grad():
        before = _require_tensor(run(fn, x, name=name), name)
        check_finite(before, name)
        tokens = x.shape[token_dim]
        for t in range(tokens - 1):
            changed = x.clone()
            future = changed.narrow(token_dim, t + 1, tokens - t - 1)
            future.copy_(random_tensor(future.shape, seed=seed + t, dtype=x.dtype))
            after = _require_tensor(run(fn, changed, name=name), name)
            check_shape(after, before.shape, name)
            for s in range(t + 1):
                out_before, out_after = before.select(token_dim, s), after.select(token_dim, s)
                if not torch.allclose(out_before, out_after, atol=atol, rtol=0.0, equal_nan=True):
                    which = f"token {t + 1}" if t + 1 == tokens - 1 else f"tokens {t + 1} to {tokens - 1}"
                    _fail(
                        f"{name}: the output at token {s} changed when only {which} of the input "
                        f"changed, so token {s} sees the future",
                        hint,
                    )


def check_linear(
    module: Any,
    attribute: str,
    in_features: int,
    out_features: int,
    bias: bool = False,
    name: str | None = None,
) -> None:
    """Fail unless ``module.<attribute>`` is an ``nn.Linear(in_features, out_features, bias=bias)``."""
    name = name or type(module).__name__
    layer = getattr(module, attribute, None)
    if layer is None:
        _fail(f"{name} has no attribute `{attribute}`; create it in __init__ as `self.{attribute} = nn.Linear(...)`")
    if not isinstance(layer, torch.nn.Linear):
        _fail(f"{name}.{attribute} is a {type(layer).__name__}, expected a torch.nn.Linear")
    if (layer.in_features, layer.out_features) != (in_features, out_features):
        _fail(
            f"{name}.{attribute}: expected nn.Linear({in_features}, {out_features}), "
            f"got nn.Linear({layer.in_features}, {layer.out_features})"
        )
    if (layer.bias is not None) != bias:
        _fail(f"{name}.{attribute}: expected bias={bias}, got bias={layer.bias is not None}")


def check_ids(got: Any, expected: Sequence[int], name: str = "result", hint: str | None = None) -> None:
    """Fail unless ``got`` is a list (or tuple) of ints equal to ``expected``; say where it differs.

    Defined for chapter 4's tokenizer exercises.
    """
    if got is None:
        _fail(f"{name} returned None, expected a list of ids; did you forget `return`?")
    if not isinstance(got, (list, tuple)):
        _fail(f"{name} returned {type(got).__name__}, expected a list of ints")
    got, expected = list(got), list(expected)
    if got == expected:
        return
    shown = f"\n  got      {got}\n  expected {expected}" if len(expected) <= 30 and len(got) <= 30 else ""
    if len(got) != len(expected):
        _fail(f"{name}: expected {len(expected)} ids, got {len(got)}{shown}", hint)
    where = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
    _fail(f"{name}: the ids differ, first at index {where}: got {got[where]!r}, expected {expected[where]!r}{shown}", hint)


def check_pair(got: Any, expected: tuple[int, int] | None, name: str = "result", hint: str | None = None) -> None:
    """Fail unless ``got`` is the pair ``expected`` (a list of two is accepted), or both are None."""
    if isinstance(got, list):
        got = tuple(got)
    if got != expected:
        _fail(f"{name}: expected {expected!r}, got {got!r}", hint)
