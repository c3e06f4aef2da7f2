"""Incremental decoding with a key/value cache, defined in chapter 9 ("From GPT-2 to today's open models").

Chapter 7's :func:`~course_lib.generation.generate` runs the model on the whole context for every new
token, although the keys and values of the earlier tokens never change: a causal model's layer ``l``
at position ``t`` depends only on positions ``0..t``. A :class:`KVCache` keeps them, one pair of
tensors per layer, so each step feeds only the newest token through the model: the cost of a step
stops growing with the position (apart from attention itself, which reads all cached keys).

Both :class:`~course_lib.gpt.GPT` and :class:`~course_lib.llama.Llama` take ``cache=`` in
``forward``; :func:`generate_cached` is :func:`~course_lib.generation.generate` with a cache, and
gives exactly the same tokens for greedy decoding and for seeded sampling (``tests/test_kv_cache.py``).

The cache is allocated once, for ``max_tokens`` positions, and filled in place: no tensor is copied
as it grows. Shapes: B = batch, K = key/value heads, T = tokens, Dh = head width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.generation import sample_next

__all__ = ["KVCache", "generate_cached", "kv_cache_bytes"]


class KVCache:
    """Keys and values of every layer for the tokens processed so far, (B, K, max_tokens, Dh) each.

    A model calls :meth:`update` once per layer with the new tokens' keys and values and attends over
    what it returns. ``length`` is the number of positions stored; a model reads it *before* its
    forward pass to number the new positions (the cache advances when the last layer is updated).
    """

    def __init__(self, n_layers: int, max_tokens: int):
        if n_layers < 1 or max_tokens < 1:
            raise ValueError(f"KVCache needs n_layers >= 1 and max_tokens >= 1, got {n_layers} and {max_tokens}")
        self.n_layers, self.max_tokens = n_layers, max_tokens
        self.keys: list[Tensor | None] = [None] * n_layers
        self.values: list[Tensor | None] = [None] * n_layers
        self.length = 0

    @classmethod
    def for_model(cls, model: nn.Module) -> "KVCache":
        """An empty cache for a GPT or Llama: one slot per layer, ``context_length`` positions."""
        config = model.config
        return cls(config.n_layers, config.context_length)

    def update(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, K, T, Dh) new keys/values at positions length..length+T-1; return all (B, K, length+T, Dh)."""
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range for a cache of {self.n_layers} layers")
        if keys.dim() != 4 or keys.shape != values.shape:
            raise ValueError(f"keys and values must both be (batch, heads, tokens, head_dim), "
                             f"got {tuple(keys.shape)} and {tuple(values.shape)}")
        start, new = self.length, keys.shape[2]
        if start + new > self.max_tokens:
            raise ValueError(f"the cache holds {self.max_tokens} positions; {start} stored + {new} new is too many")
        if self.keys[layer] is None:
            batch, heads, _, head_dim = keys.shape
            self.keys[layer] = keys.new_zeros(batch, heads, self.max_tokens, head_dim)  # (B, K, max_tokens, Dh)
            self.values[layer] = values.new_zeros(batch, heads, self.max_tokens, head_dim)
        elif self.keys[layer].shape[:2] != keys.shape[:2] or self.keys[layer].shape[3] != keys.shape[3]:
            raise ValueError(f"layer {layer}: new keys {tuple(keys.shape)} do not match the cache "
                             f"{tuple(self.keys[layer].shape)} in batch, heads or head width")
        self.keys[layer][:, :, start:start + new] = keys
        self.values[layer][:, :, start:start + new] = values
        if layer == self.n_layers - 1:
            self.length = start + new  # the last layer is done: the new positions are stored everywhere
        return self.keys[layer][:, :, :start + new], self.values[layer][:, :, :start + new]

    def nbytes(self) -> int:
        """Bytes allocated for keys and values (all layers, all ``max_tokens`` positions)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, tokens: int, batch: int = 1,
                   bytes_per_number: int = 2) -> int:
    """Memory of a KV cache: keys and values (2) x layers x key/value heads x head width x tokens x batch.

    ``bytes_per_number`` is 2 for float16/bfloat16 (how large models are usually run), 4 for float32.
    """
    return 2 * n_layers * n_kv_heads * head_dim * tokens * batch * bytes_per_number


@torch.no_grad()
def generate_cached(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Extend (B, T) token ids by ``max_new_tokens`` with a KV cache: the prompt once, then one token per step.

    Samples exactly as :func:`~course_lib.generation.generate` does (same ``sample_next``, same
    order of random draws), so both return the same tokens. The prompt plus the new tokens must fit
    into the model's ``context_length``: a cache cannot slide a window over learned positions.
    """
    if idx.dim() != 2:
        raise ValueError(f"generate_cached expects token ids of shape (batch, tokens), got {tuple(idx.shape)}")
    limit = model.config.context_length
    if idx.shape[1] + max_new_tokens > limit:
        raise ValueError(f"{idx.shape[1]} prompt + {max_new_tokens} new tokens is more than context_length={limit}; "
                         "use course_lib.generation.generate, which crops the context, for longer texts")
    if max_new_tokens < 1:
        return idx
    cache = KVCache.for_model(model)
    logits = model(idx, cache=cache)[:, -1, :]  # (B, V): the whole prompt in one pass fills the cache
    for step in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        idx = torch.cat([idx, next_id[:, None]], dim=1)  # (B, T+1)
        if step + 1 < max_new_tokens:
            logits = model(next_id[:, None], cache=cache)[:, -1, :]  # only the new token goes through the model
    return idx
