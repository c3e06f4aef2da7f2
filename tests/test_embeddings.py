"""Unit tests for course_lib.embeddings (chapter 4)."""

import math

import pytest
import torch

from course_lib.embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenAndPositionEmbedding,
    sinusoidal_positional_encoding,
)


def test_sinusoidal_position_zero_is_zero_one_pairs():
    pe = sinusoidal_positional_encoding(context_length=5, d_model=8)
    assert pe.shape == (5, 8) and pe.dtype == torch.float32
    assert pe[0].tolist() == [0.0, 1.0] * 4


def test_sinusoidal_values_at_known_positions():
    d = 6
    pe = sinusoidal_positional_encoding(context_length=4, d_model=d)
    # pair i = 0 has frequency 1: sin(pos), cos(pos)
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(4.0)))
    torch.testing.assert_close(pe[:, 1], torch.cos(torch.arange(4.0)))
    # position 1, pair i: angle 1 / 10000 ** (2i / d)
    expected = []
    for i in range(d // 2):
        angle = 1 / 10000 ** (2 * i / d)
        expected += [math.sin(angle), math.cos(angle)]
    torch.testing.assert_close(pe[1], torch.tensor(expected))
    # position 3, last pair: angle 3 / 10000 ** (4 / 6)
    angle = 3 / 10000 ** (4 / 6)
    torch.testing.assert_close(pe[3, 4:], torch.tensor([math.sin(angle), math.cos(angle)]))


def test_sinusoidal_properties():
    pe = sinusoidal_positional_encoding(context_length=50, d_model=16)
    assert pe.abs().max() <= 1.0
    # each sine/cosine pair lies on the unit circle
    torch.testing.assert_close(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, torch.ones(50, 8))
    assert len({tuple(row.tolist()) for row in pe}) == 50  # every position gets its own vector


def test_sinusoidal_rejects_odd_width():
    with pytest.raises(ValueError, match="even d_model.*d_model=7"):
        sinusoidal_positional_encoding(4, 7)
    with pytest.raises(ValueError, match="context_length must be at least 1"):
        sinusoidal_positional_encoding(0, 4)


def test_positional_modules():
    learned = LearnedPositionalEmbedding(context_length=6, d_model=4)
    assert learned(3).shape == (3, 4)
    torch.testing.assert_close(learned(6), learned.embedding.weight)
    fixed = SinusoidalPositionalEncoding(context_length=6, d_model=4)
    torch.testing.assert_close(fixed(2), sinusoidal_positional_encoding(6, 4)[:2])
    assert list(fixed.parameters()) == [] and "table" not in fixed.state_dict()
    with pytest.raises(ValueError, match="7 tokens, more than context_length=6"):
        learned(7)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_token_and_position_embedding_shapes_and_sum(positional):
    torch.manual_seed(0)
    emb = TokenAndPositionEmbedding(vocab_size=10, d_model=8, context_length=5, positional=positional)
    ids = torch.tensor([[1, 2, 3], [3, 2, 1]])
    out = emb(ids)
    assert out.shape == (2, 3, 8)
    positions = emb.position_embedding(3)
    torch.testing.assert_close(out, emb.token_embedding(ids) + positions)
    # same token at different positions -> different vectors; position 1 is shared by both rows
    assert not torch.allclose(out[0, 0], out[1, 2])
    torch.testing.assert_close(out[0, 1], out[1, 1])
    assert emb(torch.tensor([[4] * 5])).shape == (1, 5, 8)  # the full context is allowed


def test_learned_positions_are_trained_sinusoidal_are_not():
    learned = TokenAndPositionEmbedding(10, 8, 5, positional="learned")
    fixed = TokenAndPositionEmbedding(10, 8, 5, positional="sinusoidal")
    n_tok = 10 * 8
    assert sum(p.numel() for p in learned.parameters()) == n_tok + 5 * 8
    assert sum(p.numel() for p in fixed.parameters()) == n_tok


def test_token_and_position_embedding_errors():
    emb = TokenAndPositionEmbedding(vocab_size=10, d_model=4, context_length=3)
    with pytest.raises(ValueError, match="4 tokens, more than context_length=3"):
        emb(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="must be integers.*torch.float32"):
        emb(torch.zeros(1, 2))
    with pytest.raises(TypeError, match="tensor of integers, got list"):
        emb([[1, 2]])
    with pytest.raises(ValueError, match=r"\(batch, tokens\), got \(3,\)"):
        emb(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="token id 10 is outside the vocabulary 0 .. 9"):
        emb(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="token id -1"):
        emb(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="'learned' or 'sinusoidal', got 'rotary'"):
        TokenAndPositionEmbedding(10, 4, 3, positional="rotary")
    with pytest.raises(ValueError, match="even d_model"):
        TokenAndPositionEmbedding(10, 5, 3, positional="sinusoidal")
