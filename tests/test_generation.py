"""course_lib.generation (chapter 7): decoding filters, boundary cases, and seeded generation."""

import math

import pytest
import torch

from course_lib.generation import apply_temperature, generate, greedy, sample_next, top_k_filter, top_p_filter


def test_top_k_keeps_exactly_k_and_ties():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0], [2.0, 2.0, 2.0, 0.0]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True], [True, True, True, False]]
    assert torch.isfinite(top_k_filter(logits, 10)).all()


def test_top_p_keeps_the_token_that_crosses_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]  # 0.5 already reaches p
    assert kept(0.6) == [True, True, False, False]  # 0.5 < 0.6, so the 0.3 token is needed too
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]  # never empty


def test_top_p_works_in_vocabulary_order():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    probs = torch.softmax(logits, -1)[0]
    p = float(probs[1] + probs[3]) - 1e-4
    assert torch.isfinite(top_p_filter(logits, p)).tolist() == [[False, True, False, True]]


def test_temperature_and_greedy():
    logits = torch.tensor([1.0, 2.0, 4.0])
    sharp = torch.softmax(apply_temperature(logits, 0.5), -1)
    flat = torch.softmax(apply_temperature(logits, 2.0), -1)
    assert sharp.max() > torch.softmax(logits, -1).max() > flat.max()
    assert greedy(logits.unsqueeze(0)).tolist() == [2]
    assert sample_next(logits.unsqueeze(0), temperature=0).tolist() == [2]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(logits, -1.0)
    with pytest.raises(ValueError, match="top-p needs"):
        top_p_filter(logits, 0.0)


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    ids = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=4).float() / ids.numel()
    assert freq[2:].sum() == 0
    assert math.isclose(freq[0].item(), 0.5 / 0.8, abs_tol=0.015)


def test_generate_is_seeded_and_crops_the_context():
    seen = []

    def model(idx):
        seen.append(idx.shape[1])
        return torch.zeros(idx.shape[0], idx.shape[1], 7)  # uniform over 7 tokens

    start = torch.zeros(2, 1, dtype=torch.long)
    a = generate(model, start, 10, context_length=4, generator=torch.Generator().manual_seed(1))
    b = generate(model, start, 10, context_length=4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 11) and torch.equal(a, b)
    assert max(seen) == 4


def test_top_p_of_one_keeps_every_token_despite_rounding():
    # In float32 the running total of many probabilities reaches 1.0 before the last token; p = 1
    # must still keep every token (the task promises it), for small and large vocabularies.
    for seed, shape in enumerate([(2000, 7), (64, 1000)]):
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(shape, generator=generator) * 3.0
        assert torch.equal(top_p_filter(logits, 1.0), logits)
