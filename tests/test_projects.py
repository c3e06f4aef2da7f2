"""Tests for course_lib.projects (the appendix "Projects")."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_lib.projects import (
    bits_per_character,
    boundary_windows,
    document_nats,
    sample_documents,
    small_gpt,
    summed_nats,
    train_model,
)


class TableModel(nn.Module):
    """A bigram "model" with fixed logits: logits[b, t] = table[ids[b, t]] (so every answer is known)."""

    def __init__(self, table: torch.Tensor, context_length: int = 8):
        super().__init__()
        self.table = nn.Parameter(table)

        class Config:
            pass

        self.config = Config()
        self.config.context_length = context_length

    def forward(self, ids):
        return self.table[ids]  # (B, T) -> (B, T, V)


def bigram_log_probs(table, ids):
    """log p(ids[i+1] | ids[i]) for every i, straight from the table."""
    log_probs = F.log_softmax(table, dim=-1)
    return torch.tensor([log_probs[a, b].item() for a, b in zip(ids[:-1], ids[1:])])


def test_summed_nats_counts_every_token_but_the_first_once_tail_included():
    torch.manual_seed(0)
    table = torch.randn(5, 5)
    ids = torch.randint(5, (23,))  # 22 predictions: windows of 4 (5 of them = 20) and a tail of 2
    total, count = summed_nats(TableModel(table), ids, context_length=4, batch_size=2)
    assert count == 22
    assert total == pytest.approx(-bigram_log_probs(table, ids.tolist()).sum().item(), rel=1e-5)


def test_document_nats_reads_each_document_alone_and_ignores_padding():
    torch.manual_seed(1)
    table = torch.randn(4, 4)
    docs = [[0, 1, 2, 0], [0, 3, 0], [0, 2, 2, 1, 3, 0]]
    total, count = document_nats(TableModel(table), docs, batch_size=2)
    assert count == 3 + 2 + 5
    expected = sum(-bigram_log_probs(table, doc).sum().item() for doc in docs)
    assert total == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        document_nats(TableModel(table), [[0]])


def test_bits_per_character():
    assert bits_per_character(math.log(2) * 10, 5) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="characters"):
        bits_per_character(1.0, 0)


def test_boundary_windows_start_at_the_boundary_and_shift_by_one():
    ids = torch.tensor([0, 5, 6, 0, 7, 0, 8, 9, 9, 9, 0, 1])
    x, y = boundary_windows(ids, boundary_id=0, batch_size=16, context_length=4, seed=3)
    assert x.shape == y.shape == (16, 4)
    assert (x[:, 0] == 0).all()
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = boundary_windows(ids, 0, 16, 4, seed=3)
    assert torch.equal(x, x2)  # the seed fixes the batch
    # the boundary at position 10 leaves no room for 4 + 1 tokens: never a start
    starts = {tuple(row.tolist()) for row in x}
    assert starts <= {(0, 5, 6, 0), (0, 7, 0, 8), (0, 8, 9, 9)}
    with pytest.raises(ValueError, match="no boundary"):
        boundary_windows(ids, boundary_id=4, batch_size=2, context_length=4, seed=0)


def test_sample_documents_cuts_at_the_end_token_and_is_reproducible():
    table = torch.full((3, 3), -1e9)
    table[0, 1] = 0.0  # 0 -> 1 -> 2 -> 0 always
    table[1, 2] = 0.0
    table[2, 0] = 0.0
    model = TableModel(table)
    samples = sample_documents(model, [0], end_id=0, n=3, max_new_tokens=5, seed=0)
    assert samples == [[1, 2]] * 3
    never = sample_documents(model, [0], end_id=9, n=1, max_new_tokens=4)
    assert never == [[1, 2, 0, 1]]  # no end token: the whole continuation


def test_train_model_lowers_the_loss_of_a_small_gpt():
    ids = torch.tensor([0, 1, 2, 3] * 64)  # a cycle: perfectly predictable
    model = small_gpt(vocab_size=4, context_length=8, d_model=16, n_layers=1, n_heads=2, seed=0)
    before, count = summed_nats(model, ids, 8)
    trained = train_model(model, lambda step: boundary_windows(ids, 0, 8, 8, step), steps=60, max_lr=1e-2)
    after, _ = summed_nats(trained.model, ids, 8)
    assert after / count < 0.2 < before / count  # from about ln 4 = 1.39 nats to nearly 0
    assert len(trained.history.train_loss) == 60 and trained.seconds > 0
    with pytest.raises(ValueError, match="steps"):
        train_model(model, lambda step: None, steps=0)


def test_sample_documents_with_and_without_the_cache_agree():
    model = small_gpt(vocab_size=5, context_length=12, d_model=16, n_layers=1, n_heads=2, seed=3)
    cached = sample_documents(model, [0, 1], end_id=4, n=6, max_new_tokens=10, seed=7)  # 2 + 10 fits: cache
    plain = sample_documents(model, [0, 1], end_id=4, n=6, max_new_tokens=11, seed=7)   # 2 + 11 does not
    for a, b in zip(cached, plain):
        assert b[: len(a)] == a
