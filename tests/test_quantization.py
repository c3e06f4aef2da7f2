"""course_lib.quantization: int8 per channel, 4-bit per group, error bounds, memory, whole models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.gpt import GPT, GPTConfig
from course_lib.llama import Llama, LlamaConfig
from course_lib.quantization import (
    QuantizedLinear,
    dequantize_int4,
    dequantize_int8,
    model_bytes,
    pack_int4,
    quantize_int4,
    quantize_int8,
    quantize_model,
    unpack_int4,
)


def weight(out=16, inp=64, seed=0):
    w = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))
    w[3] *= 50  # one row much larger than the others: per-channel scales keep it from hurting the rest
    return w


def test_int8_per_channel_round_trip_and_bound():
    w = weight()
    codes, scale = quantize_int8(w)
    assert codes.dtype == torch.int8 and codes.shape == w.shape and scale.shape == (16,)
    assert codes.abs().max().item() == 127
    torch.testing.assert_close(scale, w.abs().amax(dim=1) / 127)
    error = (dequantize_int8(codes, scale) - w).abs()
    assert (error <= scale[:, None] / 2 + 1e-6).all()  # round to nearest: at most half a step
    # per tensor would be far worse for the ordinary rows
    tensor_scale = w.abs().max() / 127
    per_tensor_error = (torch.round(w / tensor_scale) * tensor_scale - w).abs()
    assert per_tensor_error[0].mean() > 10 * error[0].mean()


def test_int8_exact_values_and_zero_rows():
    w = torch.tensor([[1.27, -0.635, 0.0], [0.0, 0.0, 0.0]])
    codes, scale = quantize_int8(w)
    assert codes.tolist() == [[127, -64, 0], [0, 0, 0]]  # -63.5 rounds to even: -64
    assert scale[1].item() == 1.0 and dequantize_int8(codes, scale)[1].abs().sum() == 0


def test_int4_pack_round_trip():
    codes = torch.randint(-8, 8, (5, 12), generator=torch.Generator().manual_seed(1)).to(torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 6)
    assert torch.equal(unpack_int4(packed), codes)
    assert pack_int4(torch.tensor([[-8, 7]])).item() == 0xF0  # low nibble first: 0, then 15 << 4


def test_int4_groupwise_bound():
    w = weight(8, 64, seed=2)
    packed, scale = quantize_int4(w, group_size=16)
    assert packed.shape == (8, 32) and scale.shape == (8, 4)
    recon = dequantize_int4(packed, scale)
    groups_err = (recon - w).abs().reshape(8, 4, 16)
    assert (groups_err <= scale[..., None] / 2 + 1e-6).all()
    assert unpack_int4(packed).abs().max() <= 7
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(w, group_size=24)


def test_quantized_linear_close_to_linear():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(4, 64)
    reference = linear(x)
    for bits, tolerance in ((8, 0.02), (4, 0.25)):
        q = QuantizedLinear.from_linear(linear, bits=bits, group_size=32)
        relative = (q(x) - reference).norm() / reference.norm()
        assert relative < tolerance, (bits, relative)
        assert q.codes.dtype == (torch.int8 if bits == 8 else torch.uint8)
    with pytest.raises(ValueError, match="8 or 4"):
        QuantizedLinear.from_linear(linear, bits=3)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_quantize_model_memory_and_outputs(arch):
    torch.manual_seed(0)
    if arch == "gpt":
        model = GPT(GPTConfig(vocab_size=64, context_length=32, d_model=64, n_layers=2, n_heads=4)).eval()
    else:
        model = Llama(LlamaConfig(vocab_size=64, context_length=32, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                  d_ff=128)).eval()
    idx = torch.randint(64, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(idx)
    linear_numbers = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)
                         and not (arch == "gpt" and m is model.lm_head))
    full = model_bytes(model)
    for bits in (8, 4):
        quantized = quantize_model(model, bits=bits, group_size=32)
        assert isinstance(model.lm_head, nn.Linear)  # the original is untouched
        saved = full - model_bytes(quantized)
        # float32 -> 1 byte (or half a byte) per weight, plus 4 bytes of scale per row or per group
        per_weight = 4 - (1 if bits == 8 else 0.5 + 4 / 32)
        assert saved >= 0.95 * per_weight * linear_numbers
        with torch.no_grad():
            got = quantized(idx)
        relative = ((got - reference).norm() / reference.norm()).item()
        assert relative < (0.02 if bits == 8 else 0.25), (bits, relative)  # random weights: about 0.01 and 0.15
    if arch == "gpt":  # the tied head stays shared, not duplicated
        quantized = quantize_model(model, bits=8)
        assert quantized.lm_head.weight is quantized.transformer.wte.weight
