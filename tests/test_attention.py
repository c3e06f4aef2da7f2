"""Unit tests for course_lib.attention (chapter 5)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import (
    AttentionConfig,
    CausalSelfAttention,
    MultiHeadAttention,
    SimpleSelfAttention,
    attention_weights,
    causal_mask,
    fused_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)

SHAPES = [(1, 1, 1, 4), (1, 2, 5, 8), (3, 4, 7, 16), (2, 1, 1, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_torch(shape, causal):
    gen = torch.Generator().manual_seed(sum(shape))
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    ours = scaled_dot_product_attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ours, ref)


def test_sdpa_matches_torch_with_mask_and_scale():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 4, 8, generator=gen)
    k, v = torch.randn(2, 3, 6, 8, generator=gen), torch.randn(2, 3, 6, 5, generator=gen)
    mask = torch.rand(4, 6, generator=gen) > 0.3
    mask[:, 0] = True  # every query must see at least one key, or softmax is NaN in both
    ours = scaled_dot_product_attention(q, k, v, mask=mask, scale=0.5)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5)
    torch.testing.assert_close(ours, ref)


def test_weights_are_distributions_and_causal():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 6, 4, generator=gen), torch.randn(2, 6, 4, generator=gen)
    w = attention_weights(q, k, causal=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 6))
    assert torch.all(w.triu(diagonal=1) == 0)


def test_causal_mask_with_cached_keys():
    mask = causal_mask(2, 4)
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError, match="n_queries <= n_keys"):
        causal_mask(3, 2)


def test_split_merge_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 2)
    # head h holds features 2h, 2h+1 of every token
    torch.testing.assert_close(heads[1, 2, 0], x[1, 0, 4:6])
    torch.testing.assert_close(merge_heads(heads), x)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        split_heads(x, 3)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_multihead_matches_nn_multiheadattention(fused, causal):
    torch.manual_seed(0)
    cfg = AttentionConfig(d_model=16, n_heads=4, context_length=10, causal=causal, fused=fused)
    ours = MultiHeadAttention(cfg).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.c_attn.weight)
        ref.in_proj_bias.copy_(ours.c_attn.bias)
        ref.out_proj.weight.copy_(ours.c_proj.weight)
        ref.out_proj.bias.copy_(ours.c_proj.bias)
    x = torch.randn(3, 7, 16)
    mask = nn.Transformer.generate_square_subsequent_mask(7) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_readable_and_fused_paths_agree_and_weights_returned():
    torch.manual_seed(0)
    cfg = AttentionConfig(d_model=12, n_heads=3, context_length=8)
    slow = MultiHeadAttention(cfg).eval()
    fast = MultiHeadAttention(AttentionConfig(12, 3, 8, fused=True)).eval()
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(2, 8, 12)
    out, weights = slow(x, return_weights=True)
    assert weights.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, fast(x), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, slow(x))


@pytest.mark.parametrize(
    "module",
    [
        lambda: CausalSelfAttention(8, 6, context_length=12),
        lambda: MultiHeadAttention(AttentionConfig(8, 2, 12)),
        lambda: MultiHeadAttention(AttentionConfig(8, 2, 12, fused=True)),
    ],
)
def test_causality_future_tokens_do_not_change_the_past(module):
    torch.manual_seed(3)
    m = module().eval()
    x = torch.randn(2, 12, 8)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 7, 8)
    torch.testing.assert_close(m(x)[:, :5], m(changed)[:, :5])
    assert not torch.allclose(m(x)[:, 5:], m(changed)[:, 5:])


def test_simple_self_attention_sees_the_future():
    torch.manual_seed(3)
    m = SimpleSelfAttention(8, 4)
    x = torch.randn(1, 5, 8)
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(m(x)[:, 0], m(changed)[:, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes_are_preserved(dtype):
    m = MultiHeadAttention(AttentionConfig(8, 2, 4)).to(dtype)
    out = m(torch.randn(2, 4, 8, dtype=dtype))
    assert out.dtype == dtype and out.shape == (2, 4, 8)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = CausalSelfAttention(8, 8, context_length=6, dropout=0.5)
    x = torch.randn(2, 6, 8)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    assert not torch.allclose(m(x), m(x))


def test_clear_errors_for_wrong_shapes():
    m = MultiHeadAttention(AttentionConfig(8, 2, 4))
    with pytest.raises(ValueError, match=r"expected shape \(batch, tokens, 8\), got \(2, 4, 6\)"):
        m(torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="more than context_length=4"):
        m(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="same last dimension"):
        scaled_dot_product_attention(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="one row per key"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="divisible"):
        AttentionConfig(d_model=10, n_heads=4, context_length=4)
    with pytest.raises(ValueError, match="must be positive"):
        AttentionConfig(d_model=8, n_heads=0, context_length=4)
    with pytest.raises(TypeError, match="bool"):
        attention_weights(torch.randn(2, 4), torch.randn(2, 4), mask=torch.ones(2, 2))


def test_fused_attention_runs_bfloat16_inputs_in_float32_on_cpu():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    low = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_attention(*low, causal=True)
    assert out.dtype == torch.bfloat16
    # Only the inputs' and the output's rounding to bfloat16 (8 bits of mantissa) separate the two.
    torch.testing.assert_close(out.float(), exact, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in low)
