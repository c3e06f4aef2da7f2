"""Unit tests for course_lib.testing: the right answers pass, each wrong one gets its message."""

import re

import pytest
import torch
from torch import nn

from course_lib.testing import (
    check_causal,
    check_finite,
    check_linear,
    check_no_lookahead,
    check_rows_sum_to_one,
    check_shape,
    check_tensor,
    default_tolerances,
    random_tensor,
    run,
    seeded,
)

NAME = "attention_weights(scores)"


def fails(pattern: str):
    """pytest.raises(AssertionError) matching ``pattern`` taken literally."""
    return pytest.raises(AssertionError, match=re.escape(pattern))


# ------------------------------------------------------------------------- check_tensor


def test_check_tensor_passes_on_equal_and_nearly_equal_values():
    x = random_tensor(2, 3, seed=0)
    check_tensor(x, x.clone(), NAME)
    check_tensor(x + 1e-7, x, NAME)
    check_tensor(x.double() + 1e-10, x.double(), NAME)
    check_tensor(torch.tensor([True, False]), torch.tensor([True, False]), NAME)
    check_tensor(torch.tensor([float("-inf"), 1.0]), torch.tensor([float("-inf"), 1.0]), NAME)
    check_tensor(x.requires_grad_(), x.detach(), NAME)  # gradients do not get in the way


def test_check_tensor_rejects_non_tensors():
    with fails(f"{NAME} returned NoneType, expected a torch.Tensor — did you forget `return`?"):
        check_tensor(None, torch.zeros(2), NAME)
    with fails(f"{NAME} returned list, expected a torch.Tensor"):
        check_tensor([0.0, 0.0], torch.zeros(2), NAME)
    with fails(f"{NAME} returned a tuple of 2 tensors, expected a single torch.Tensor"):
        check_tensor((torch.zeros(2), torch.zeros(2)), torch.zeros(2), NAME)


def test_check_tensor_reports_shapes():
    with fails(f"{NAME}: expected shape (2, 4, 8), got (2, 8, 4) (the right sizes in the wrong order"):
        check_tensor(torch.zeros(2, 8, 4), torch.zeros(2, 4, 8), NAME)
    with fails(f"{NAME}: expected shape (2, 4), got (8,) (1 dimensions instead of 2)"):
        check_tensor(torch.zeros(8), torch.zeros(2, 4), NAME)


def test_check_tensor_reports_dtype():
    with fails(f"{NAME}: expected dtype torch.float32, got torch.float64"):
        check_tensor(torch.zeros(3, dtype=torch.float64), torch.zeros(3), NAME)
    with fails("causal_mask(3): expected dtype torch.bool, got torch.float32 (make it with dtype=torch.bool"):
        check_tensor(torch.ones(3, 3), torch.ones(3, 3, dtype=torch.bool), "causal_mask(3)")
    check_tensor(torch.zeros(3, dtype=torch.float64), torch.zeros(3), NAME, check_dtype=False)


def test_check_tensor_reports_nan_and_inf():
    got = torch.tensor([[0.5, float("nan")], [float("nan"), 0.5]])
    with fails(f"{NAME}: 2 of 4 entries are NaN (the first at index (0, 1): nan); NaN usually comes from 0/0"):
        check_tensor(got, torch.full((2, 2), 0.5), NAME)
    with fails(f"{NAME}: 1 of 2 entries is infinite (the first at index (1,): inf)"):
        check_tensor(torch.tensor([0.0, float("inf")]), torch.zeros(2), NAME)
    with pytest.raises(AssertionError, match="Hint: subtract the row maximum"):
        check_tensor(got, torch.zeros(2, 2), NAME, hint="subtract the row maximum")


def test_check_tensor_reports_differing_values_with_hint():
    expected = torch.zeros(2, 3)
    got = expected.clone()
    got[0, 2] = 0.25
    got[1, 1] = -0.5
    message = (
        f"{NAME}: 2 of 6 entries differ from the expected values (atol=1e-05, rtol=0.0001); "
        "largest absolute difference 0.5; first at index (0, 2): got 0.25, expected 0"
        "\nHint: softmax over the wrong axis?"
    )
    with fails(message):
        check_tensor(got, expected, NAME, hint="softmax over the wrong axis?")
    check_tensor(got, expected, NAME, atol=0.6)  # a looser tolerance lets it through


def test_check_tensor_compares_bool_and_integers_exactly():
    with fails("causal_mask(2): 1 of 4 entries differ from the expected values; first at index (0, 1): got True, expected False"):
        check_tensor(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool).tril(), "causal_mask(2)")
    with fails("1 of 3 entries differ"):
        check_tensor(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]))
    assert default_tolerances(torch.int64) == (0.0, 0.0)
    assert default_tolerances(torch.float32) == (1e-5, 1e-4)


# ------------------------------------------------------------------------- other checks


def test_check_shape():
    check_shape(torch.zeros(2, 3), (2, 3), NAME)
    check_shape(torch.zeros(2, 3), torch.Size([2, 3]), NAME)
    with fails(f"{NAME}: expected shape (2, 3), got (3, 2)"):
        check_shape(torch.zeros(3, 2), (2, 3), NAME)
    with fails(f"{NAME} returned NoneType"):
        check_shape(None, (2, 3), NAME)
    with fails("Hint: did you transpose the keys?"):
        check_shape(torch.zeros(4), (2, 3), NAME, hint="did you transpose the keys?")


def test_check_finite():
    check_finite(torch.zeros(3), NAME)
    check_finite(torch.tensor([1, 2]), NAME)  # integers cannot be NaN
    with fails(f"{NAME}: 1 of 3 entries is NaN (the first at index (2,): nan)"):
        check_finite(torch.tensor([0.0, 1.0, float("nan")]), NAME)


def test_check_rows_sum_to_one():
    weights = torch.softmax(random_tensor(2, 4, 5, seed=3), dim=-1)
    check_rows_sum_to_one(weights, NAME)
    check_rows_sum_to_one(weights.transpose(-1, -2), NAME, dim=-2)
    with fails(f"{NAME}: the entries along dim -1 should sum to 1, but 8 of 8 sums do not"):
        check_rows_sum_to_one(torch.softmax(random_tensor(2, 4, 5, seed=3), dim=-2), NAME)
    with pytest.raises(AssertionError, match="softmax .* over the wrong axis, or left out"):
        check_rows_sum_to_one(torch.ones(2, 2), NAME)
    with fails(f"{NAME}: weights must not be negative, but index (0, 1) is -0.5"):
        check_rows_sum_to_one(torch.tensor([[1.5, -0.5]]), NAME)
    with fails(f"{NAME}: 1 of 2 entries is NaN"):
        check_rows_sum_to_one(torch.tensor([[1.0, float("nan")]]), NAME)
    with fails(f"{NAME}: expected floating-point weights, got dtype torch.int64"):
        check_rows_sum_to_one(torch.tensor([[1, 0]]), NAME)


def test_check_causal():
    check_causal(torch.ones(3, 3).tril(), NAME)
    check_causal(torch.ones(2, 4, 4).tril(), NAME)
    with fails(f"{NAME}: query 0 gives weight 1 to key 1, which comes after it (index (0, 0, 1))"):
        check_causal(torch.ones(2, 3, 3).tril(diagonal=1), NAME)
    with fails(f"{NAME}: expected square weights of shape (..., T, T), got (2, 3)"):
        check_causal(torch.zeros(2, 3), NAME)


def test_check_no_lookahead():
    x = random_tensor(2, 5, 3, seed=0)
    check_no_lookahead(lambda t: t.cumsum(dim=1), x, "running sum")
    check_no_lookahead(lambda t: t.cumsum(dim=0), x.transpose(0, 1), "running sum", token_dim=0)
    with fails("reversed sum: the output at token 0 changed when only tokens 1 to 4 of the input changed"):
        check_no_lookahead(lambda t: t.flip(1).cumsum(dim=1).flip(1), x, "reversed sum")
    with fails("peek: the output at token 3 changed when only token 4 of the input changed"):
        check_no_lookahead(lambda t: t + t.roll(-1, dims=1) * (torch.arange(5) == 3).view(1, 5, 1), x, "peek")
    first_token_nan = torch.arange(5).view(1, 5, 1) == 0
    with fails("broken: 6 of 30 entries are NaN (the first at index (0, 0, 0): nan)"):
        check_no_lookahead(lambda t: torch.where(first_token_nan, float("nan"), t), x, "broken")


def test_check_linear():
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_query = nn.Linear(4, 3, bias=False)
            self.W_key = nn.Linear(4, 3, bias=True)
            self.W_value = nn.Linear(3, 4, bias=False)
            self.proj = nn.Conv1d(4, 3, 1)

    layer = Layer()
    check_linear(layer, "W_query", 4, 3)
    check_linear(layer, "W_key", 4, 3, bias=True)
    with fails("Layer.W_key: expected bias=False, got bias=True"):
        check_linear(layer, "W_key", 4, 3)
    with fails("Layer.W_value: expected nn.Linear(4, 3), got nn.Linear(3, 4)"):
        check_linear(layer, "W_value", 4, 3)
    with fails("attn.proj is a Conv1d, expected a torch.nn.Linear"):
        check_linear(layer, "proj", 4, 3, name="attn")
    with fails("Layer has no attribute `W_out`; create it in __init__ as `self.W_out = nn.Linear(...)`"):
        check_linear(layer, "W_out", 4, 3)


# ------------------------------------------------------------------- run and random inputs


def test_run_returns_the_result_and_explains_failures():
    assert run(lambda a, b=0: a + b, 1, b=2, name="add") == 3

    def attention_weights(scores):
        raise NotImplementedError()

    with fails(f"{NAME}: part not implemented yet: replace `raise NotImplementedError()` with your code"):
        run(attention_weights, torch.zeros(2, 2), name=NAME)
    with fails("attention_weights(...): part not implemented yet"):
        run(attention_weights, torch.zeros(2, 2))

    def broken(x):
        return x @ x.T[:1]

    with fails("broken(x) raised RuntimeError: "):
        run(broken, torch.zeros(2, 3), name="broken(x)")
    try:
        run(broken, torch.zeros(2, 3), name="broken(x)")
    except AssertionError as err:
        assert isinstance(err.__cause__, RuntimeError)  # the learner's own traceback is kept

    class Stub(nn.Module):
        def __init__(self, d):
            super().__init__()
            raise NotImplementedError()

    with fails("Stub(4): part not implemented yet"):
        run(Stub, 4, name="Stub(4)")

    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("too many tokens")

    assert run(nn.Identity(), 5) == 5
    with fails("Boom(...) raised ValueError: too many tokens"):
        run(Boom(), torch.zeros(1))


def test_random_tensor_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = random_tensor(2, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, random_tensor((2, 3), seed=7))
    assert not torch.equal(a, random_tensor(2, 3, seed=8))
    assert a.shape == (2, 3) and a.dtype == torch.float32
    b = random_tensor(4, seed=1, dtype=torch.float64, scale=1000.0)
    assert b.dtype == torch.float64 and b.abs().max() > 10


def test_seeded_builds_the_same_module_and_restores_the_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with seeded(3):
        first = nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(torch.get_rng_state(), state)
    with seeded(3):
        second = nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(first, second)


def test_check_ids_and_check_pair_messages():
    from course_lib.testing import check_ids, check_pair

    check_ids([1, 2, 3], [1, 2, 3], "encode(text)")
    check_ids((1, 2), [1, 2], "encode(text)")
    with pytest.raises(AssertionError, match="did you forget `return`"):
        check_ids(None, [1], "encode(text)")
    with pytest.raises(AssertionError, match="expected 3 ids, got 2"):
        check_ids([1, 2], [1, 2, 3], "encode(text)")
    with pytest.raises(AssertionError, match=r"first at index 1: got 5, expected 2(.|\n)*Hint: merge order"):
        check_ids([1, 5, 3], [1, 2, 3], "encode(text)", hint="merge order")
    check_pair([3, 4], (3, 4), "most_frequent_pair(ids)")
    check_pair(None, None, "most_frequent_pair([])")
    with pytest.raises(AssertionError, match=r"expected \(3, 4\), got \(4, 3\)"):
        check_pair((4, 3), (3, 4), "most_frequent_pair(ids)")
