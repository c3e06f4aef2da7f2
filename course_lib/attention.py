"""Attention, built up the way chapter 5 ("Attention: keys, queries and values") builds it.

The story, in the order the chapter tells it:

1. :func:`attention_scores` -- how well each query matches each key (dot products).
2. :func:`attention_weights` -- scores scaled by 1/sqrt(d_k), optionally masked, then softmax-ed.
3. :func:`scaled_dot_product_attention` -- the weighted sum of values; equals
   ``torch.nn.functional.scaled_dot_product_attention``.
4. :class:`SimpleSelfAttention` -- trainable W_q, W_k, W_v, no mask.
5. :class:`CausalSelfAttention` -- one head that cannot look ahead, with dropout on the weights.
6. :class:`MultiHeadAttention` -- several heads at once (:func:`split_heads`, :func:`merge_heads`)
   and an output projection, configured by :class:`AttentionConfig`.

Shapes use B = batch, T = tokens (time), D = model width, H = heads, Dh = D / H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionConfig",
    "CausalSelfAttention",
    "MultiHeadAttention",
    "SimpleSelfAttention",
    "attention_scores",
    "attention_weights",
    "causal_mask",
    "fused_attention",
    "merge_heads",
    "scaled_dot_product_attention",
    "split_heads",
]


def _shape_error(name: str, expected: str, tensor: Tensor) -> ValueError:
    return ValueError(f"{name}: expected shape {expected}, got {tuple(tensor.shape)}")


def _check_qkv(queries: Tensor, keys: Tensor, values: Tensor | None = None) -> None:
    """Raise a ValueError that names the mismatch when q, k (and v) cannot be attended."""
    if queries.dim() < 2:
        raise _shape_error("queries", "(..., T_q, d_k)", queries)
    if keys.dim() != queries.dim():
        raise ValueError(
            f"queries and keys must have the same number of dimensions, "
            f"got queries {tuple(queries.shape)} and keys {tuple(keys.shape)}"
        )
    if keys.shape[-1] != queries.shape[-1]:
        raise ValueError(
            f"queries and keys must have the same last dimension d_k, "
            f"got queries {tuple(queries.shape)} and keys {tuple(keys.shape)}"
        )
    if values is not None and (values.dim() != keys.dim() or values.shape[-2] != keys.shape[-2]):
        raise ValueError(
            f"values must have one row per key: keys {tuple(keys.shape)}, values {tuple(values.shape)}"
        )


def attention_scores(queries: Tensor, keys: Tensor) -> Tensor:
    """Dot product of every query with every key: (..., T_q, d_k) x (..., T_k, d_k) -> (..., T_q, T_k)."""
    _check_qkv(queries, keys)
    return queries @ keys.transpose(-2, -1)


def causal_mask(n_queries: int, n_keys: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean (T_q, T_k) mask, True where a query may look: at its own position and before.

    Uses the same convention as ``torch.nn.functional.scaled_dot_product_attention``
    (True = take part). With more keys than queries (a cache of earlier tokens), the
    queries are the *last* n_queries positions.
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_queries < 1 or n_keys < n_queries:
        raise ValueError(f"causal_mask needs 1 <= n_queries <= n_keys, got {n_queries} and {n_keys}")
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=n_keys - n_queries)


def attention_weights(
    queries: Tensor,
    keys: Tensor,
    *,
    causal: bool = False,
    mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Softmax over keys of the scaled scores; each row sums to 1. Shape (..., T_q, T_k).

    ``scale`` defaults to 1/sqrt(d_k). ``mask`` is boolean (True = may attend) and
    broadcasts against the scores; ``causal=True`` adds the causal mask.
    """
    scale = 1.0 / math.sqrt(queries.shape[-1]) if scale is None else scale
    scores = attention_scores(queries, keys) * scale  # (..., T_q, T_k)
    if causal:
        scores = scores.masked_fill(~causal_mask(scores.shape[-2], scores.shape[-1], scores.device), float("-inf"))
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def scaled_dot_product_attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    causal: bool = False,
    mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    training: bool = True,
) -> Tensor:
    """Context vectors: attention weights times values, (..., T_q, d_v).

    Same result as ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)``
    (or ``is_causal=causal`` instead of a mask) when ``dropout_p == 0``, with two documented
    differences: a query row whose keys are all masked gives NaN here (torch gives zeros), and
    with fewer queries than keys the causal mask aligns the queries with the *last* keys (as
    for cached keys, see :func:`causal_mask`) where torch aligns them with the first.
    Dropout, when on, zeroes random attention weights (and rescales the rest) during training.
    """
    _check_qkv(queries, keys, values)
    weights = attention_weights(queries, keys, causal=causal, mask=mask, scale=scale)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=training)
    return weights @ values


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, T, D) -> (B, H, T, D/H): each head gets its own slice of the features."""
    if x.dim() != 3:
        raise _shape_error("split_heads input", "(batch, tokens, features)", x)
    batch, tokens, width = x.shape
    if width % n_heads != 0:
        raise ValueError(f"split_heads: {width} features cannot be split evenly into {n_heads} heads")
    # (B, T, D) -> (B, T, H, Dh) -> (B, H, T, Dh)
    return x.view(batch, tokens, n_heads, width // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, Dh) -> (B, T, H*Dh): the inverse of :func:`split_heads`."""
    if x.dim() != 4:
        raise _shape_error("merge_heads input", "(batch, heads, tokens, head_dim)", x)
    batch, heads, tokens, head_dim = x.shape
    # (B, H, T, Dh) -> (B, T, H, Dh) -> (B, T, D)
    return x.transpose(1, 2).contiguous().view(batch, tokens, heads * head_dim)


def _check_input(x: Tensor, width: int, max_tokens: int | None = None) -> None:
    if x.dim() != 3 or x.shape[-1] != width:
        raise _shape_error("attention input", f"(batch, tokens, {width})", x)
    if max_tokens is not None and x.shape[1] > max_tokens:
        raise ValueError(f"attention input has {x.shape[1]} tokens, more than context_length={max_tokens}")


class SimpleSelfAttention(nn.Module):
    """Self-attention with trainable query, key and value projections; every token sees every token."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.d_in = d_in
        self.W_query = nn.Linear(d_in, d_out, bias=bias)
        self.W_key = nn.Linear(d_in, d_out, bias=bias)
        self.W_value = nn.Linear(d_in, d_out, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_in) -> (B, T, d_out)."""
        _check_input(x, self.d_in)
        return scaled_dot_product_attention(self.W_query(x), self.W_key(x), self.W_value(x))


class CausalSelfAttention(SimpleSelfAttention):
    """One attention head that only looks backwards, with dropout on the attention weights."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, bias: bool = False):
        super().__init__(d_in, d_out, bias=bias)
        self.context_length = context_length
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_in) -> (B, T, d_out); output t depends only on inputs 0..t."""
        _check_input(x, self.d_in, self.context_length)
        return scaled_dot_product_attention(
            self.W_query(x), self.W_key(x), self.W_value(x),
            causal=True, dropout_p=self.dropout, training=self.training,
        )


@dataclass(frozen=True)
class AttentionConfig:
    """Everything a multi-head attention layer needs to know.

    d_model: width of each token vector (D); n_heads: heads (H), must divide d_model;
    context_length: most tokens per sequence; dropout: probability on the attention
    weights; bias: biases in the projections; causal: mask out future tokens;
    fused: use ``torch.nn.functional.scaled_dot_product_attention`` instead of the
    chapter's readable version (same numbers, less memory, faster).
    """

    d_model: int
    n_heads: int
    context_length: int
    dropout: float = 0.0
    bias: bool = True
    causal: bool = True
    fused: bool = False

    def __post_init__(self) -> None:
        if self.n_heads < 1 or self.d_model < 1 or self.context_length < 1:
            raise ValueError(
                f"d_model, n_heads and context_length must be positive, got "
                f"{self.d_model}, {self.n_heads} and {self.context_length}"
            )
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def fused_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, causal: bool = True) -> Tensor:
    """``F.scaled_dot_product_attention``, kept in float32 on a CPU when the inputs are bfloat16/float16.

    Under ``torch.autocast("cpu", torch.bfloat16)`` the projections arrive in bfloat16. PyTorch 2.13's
    CPU flash-attention backward is then several times slower than in float32 at the course's small
    head widths (we profiled it while writing bench/train_throughput.py), so the attention itself runs
    in float32 and its result is cast back; the matrix products around it keep the bfloat16 speed-up.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p, is_causal=causal)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)


class MultiHeadAttention(nn.Module):
    """H heads of scaled dot-product attention in parallel, then an output projection.

    The three projections W_q, W_k, W_v are stored stacked in one linear layer
    ``c_attn`` (rows: queries, then keys, then values) and the output projection is
    ``c_proj``: the names GPT-2 uses, so its weights load later (chapter 6).
    """

    def __init__(self, config: AttentionConfig):
        super().__init__()
        self.config = config
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, T, D) -> (B, T, D). With ``return_weights``, also the (B, H, T, T) weights."""
        cfg = self.config
        _check_input(x, cfg.d_model, cfg.context_length)
        q, k, v = self.c_attn(x).split(cfg.d_model, dim=-1)  # 3 x (B, T, D)
        q, k, v = (split_heads(t, cfg.n_heads) for t in (q, k, v))  # 3 x (B, H, T, Dh)
        dropout_p = cfg.dropout if self.training else 0.0
        if return_weights:
            weights = attention_weights(q, k, causal=cfg.causal)  # (B, H, T, T)
            context = F.dropout(weights, dropout_p, self.training) @ v  # (B, H, T, Dh)
        elif cfg.fused:
            context = fused_attention(q, k, v, dropout_p=dropout_p, causal=cfg.causal)
        else:
            context = scaled_dot_product_attention(q, k, v, causal=cfg.causal, dropout_p=dropout_p)
        out = self.c_proj(merge_heads(context))  # (B, T, D)
        return (out, weights) if return_weights else out
