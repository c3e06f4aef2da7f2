"""Token and position embeddings: defined in chapter 4 (from text to vectors).

The story, in the order the chapter tells it:

1. A token embedding (``torch.nn.Embedding``) turns each token id into a trainable vector.
   It does not know *where* the token is: "dog bites man" and "man bites dog" get the same
   vectors, only in another order, and attention (chapter 5) ignores order.
2. :func:`sinusoidal_positional_encoding` -- the fixed position vectors of Vaswani et al. (2017),
   sines and cosines of the position at geometrically spaced frequencies.
3. :class:`LearnedPositionalEmbedding` -- one trainable vector per position instead (what GPT-2
   does); :class:`SinusoidalPositionalEncoding` is the fixed table with the same interface.
4. :class:`TokenAndPositionEmbedding` -- token vector + position vector: the input of the
   transformer.

Shapes use B = batch, T = tokens (time), D = model width (``d_model``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "TokenAndPositionEmbedding",
    "sinusoidal_positional_encoding",
]


def sinusoidal_positional_encoding(context_length: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The (context_length, d_model) table of Vaswani et al. (2017), section 3.5.

    For position ``pos`` and pair index ``i = 0 .. d_model/2 - 1``::

        PE[pos, 2i]     = sin(pos / base ** (2i / d_model))
        PE[pos, 2i + 1] = cos(pos / base ** (2i / d_model))

    Column pairs (2i, 2i+1) are a sine and a cosine of the same frequency, from one full turn
    every 2*pi positions (i = 0) down to very slow ones, so position 0 is ``[0, 1, 0, 1, ...]``.
    The columns come in pairs, so ``d_model`` must be even: an odd width raises a ValueError
    rather than silently dropping or padding a column.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be at least 1, got {context_length}")
    if d_model < 2 or d_model % 2 != 0:
        raise ValueError(
            f"sinusoidal positional encoding needs an even d_model >= 2 (its columns are sine/cosine "
            f"pairs), got d_model={d_model}; use an even width or a learned positional embedding"
        )
    positions = torch.arange(context_length, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    pair_index = torch.arange(0, d_model, 2, dtype=torch.float64)  # (D/2,) the values 2i
    frequencies = torch.exp(-math.log(base) * pair_index / d_model)  # (D/2,) = base ** (-2i / D)
    angles = positions * frequencies  # (T, D/2)
    table = torch.empty(context_length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.to(torch.get_default_dtype())


def _check_n_tokens(n_tokens: int, context_length: int) -> None:
    if n_tokens < 1:
        raise ValueError(f"need at least 1 token, got {n_tokens}")
    if n_tokens > context_length:
        raise ValueError(
            f"input has {n_tokens} tokens, more than context_length={context_length}: there is no "
            f"position vector for position {context_length} and beyond; crop the input to its last "
            f"{context_length} tokens"
        )


class LearnedPositionalEmbedding(nn.Module):
    """One trainable D-vector per position 0 .. context_length - 1 (GPT-2's choice)."""

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        self.context_length = context_length
        self.embedding = nn.Embedding(context_length, d_model)

    def forward(self, n_tokens: int) -> Tensor:
        """The (n_tokens, D) vectors of positions 0 .. n_tokens - 1."""
        _check_n_tokens(n_tokens, self.context_length)
        positions = torch.arange(n_tokens, device=self.embedding.weight.device)  # (T,)
        return self.embedding(positions)


class SinusoidalPositionalEncoding(nn.Module):
    """The fixed table of :func:`sinusoidal_positional_encoding`, with nothing to train.

    The table is a buffer: it moves with ``.to(device)`` but is not a parameter and is not saved in
    the ``state_dict`` (it is recomputed from the two sizes).
    """

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        self.context_length = context_length
        self.register_buffer("table", sinusoidal_positional_encoding(context_length, d_model), persistent=False)

    def forward(self, n_tokens: int) -> Tensor:
        """The (n_tokens, D) vectors of positions 0 .. n_tokens - 1."""
        _check_n_tokens(n_tokens, self.context_length)
        return self.table[:n_tokens]


class TokenAndPositionEmbedding(nn.Module):
    """(B, T) token ids -> (B, T, D): each token's vector plus its position's vector.

    ``positional="learned"`` (default) trains one vector per position;
    ``positional="sinusoidal"`` uses the fixed sines and cosines (``d_model`` must then be even).
    """

    def __init__(self, vocab_size: int, d_model: int, context_length: int, positional: str = "learned"):
        super().__init__()
        if vocab_size < 1 or d_model < 1 or context_length < 1:
            raise ValueError(
                f"vocab_size, d_model and context_length must be at least 1, "
                f"got {vocab_size}, {d_model} and {context_length}"
            )
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.positional = positional
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        if positional == "learned":
            self.position_embedding: nn.Module = LearnedPositionalEmbedding(context_length, d_model)
        elif positional == "sinusoidal":
            self.position_embedding = SinusoidalPositionalEncoding(context_length, d_model)
        else:
            raise ValueError(f"positional must be 'learned' or 'sinusoidal', got {positional!r}")

    def forward(self, token_ids: Tensor) -> Tensor:
        """(B, T) integer ids -> (B, T, D); T may be anything from 1 to ``context_length``."""
        if not isinstance(token_ids, Tensor):
            raise TypeError(f"token ids must be a tensor of integers, got {type(token_ids).__name__}")
        if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
            raise TypeError(f"token ids must be integers (e.g. torch.long), got dtype {token_ids.dtype}")
        if token_ids.dim() != 2:
            raise ValueError(f"token ids: expected shape (batch, tokens), got {tuple(token_ids.shape)}")
        _check_n_tokens(token_ids.shape[1], self.context_length)
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= self.vocab_size):
            bad = token_ids[(token_ids < 0) | (token_ids >= self.vocab_size)][0].item()
            raise ValueError(f"token id {bad} is outside the vocabulary 0 .. {self.vocab_size - 1}")
        tokens = self.token_embedding(token_ids)  # (B, T, D)
        positions = self.position_embedding(token_ids.shape[1])  # (T, D), broadcast over the batch
        return tokens + positions
