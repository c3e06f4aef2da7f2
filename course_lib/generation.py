"""Turning next-token logits into text, defined in chapter 7 ("Training an LLM").

Decoding strategies, each a small function on a (..., vocab) tensor of logits:
greedy (:func:`greedy`), temperature (:func:`apply_temperature`), top-k (:func:`top_k_filter`),
top-p / nucleus (:func:`top_p_filter`), and :func:`generate`, which runs any model that maps
(B, T) token ids to (B, T, V) logits -- it knows nothing about GPT.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from course_lib.language_models import sample_with_temperature

__all__ = ["apply_temperature", "generate", "greedy", "sample_next", "top_k_filter", "top_p_filter"]


def greedy(logits: Tensor) -> Tensor:
    """The most likely token of each row: (..., V) -> (...)."""
    return logits.argmax(dim=-1)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide logits by the temperature: < 1 sharpens the distribution, > 1 flattens it."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy() for temperature 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row and set the rest to -inf (ties with the k-th are kept)."""
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the most likely tokens until their probabilities add up to at least p.

    The token that carries the total past p is kept, so at least one token always survives, and
    ``p = 1`` keeps every token (a float32 running total can reach 1 before the last token, so
    that case does not go through the running total at all).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top-p needs 0 < p <= 1, got {p}")
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of (B, V) logits; temperature 0 means greedy."""
    if temperature == 0:
        return greedy(logits)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    # Chapter 3's sampler draws from softmax(logits); the temperature is already applied.
    return sample_with_temperature(logits, 1.0, generator)


@torch.no_grad()
def generate(
    model: Callable[[Tensor], Tensor],
    idx: Tensor,
    max_new_tokens: int,
    context_length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Extend (B, T) token ids by ``max_new_tokens``, feeding the model at most ``context_length`` ids."""
    if idx.dim() != 2:
        raise ValueError(f"generate expects token ids of shape (batch, tokens), got {tuple(idx.shape)}")
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_length:])[:, -1, :]  # (B, V): the prediction after the last token
        next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        idx = torch.cat([idx, next_id[:, None]], dim=1)  # (B, T+1)
    return idx
