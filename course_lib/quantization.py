"""Weight-only quantization by hand, defined in chapter 9 ("From GPT-2 to today's open models").

A trained model's weights are float32 (4 bytes) or bfloat16 (2 bytes). Stored instead as small
integers with one float scale per group of weights, they take 1 byte (int8) or half a byte (4-bit),
and the model runs on a quarter or an eighth of the memory. Local runners such as llama.cpp and
Ollama ship models this way (their GGUF files hold blocks of 4- to 8-bit integers with a scale per
block of 32 weights); this module builds the two simplest schemes:

- **int8, per output channel** (:func:`quantize_int8`): for row ``r`` of a weight matrix (the weights
  of one output feature), ``scale[r] = max|W[r]| / 127`` and ``q = round(W / scale)`` in -127..127.
  One scale per row, not per matrix: a single large weight then only coarsens its own row.
- **4-bit, per group** (:func:`quantize_int4`): every ``group_size`` consecutive weights of a row share
  a scale ``max|group| / 7``; codes -7..7 are stored two to a byte (:func:`pack_int4`).

Both round to the nearest level, so each weight is off by at most half a step: ``scale / 2``.
:class:`QuantizedLinear` replaces ``nn.Linear`` (the weight is rebuilt in float32 for each product:
the memory saving is real, a speed gain needs kernels that multiply the integers directly, which
PyTorch's CPU build does not give us for these formats) and :func:`quantize_model` swaps every linear
layer of a model. Activations stay in floating point ("weight-only" quantization).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "QuantizedLinear",
    "dequantize_int4",
    "dequantize_int8",
    "model_bytes",
    "pack_int4",
    "quantize_int4",
    "quantize_int8",
    "quantize_model",
    "unpack_int4",
]


def _check_matrix(weight: Tensor, name: str) -> None:
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"{name} expects a floating-point (out_features, in_features) matrix, "
                         f"got {weight.dtype} {tuple(weight.shape)}")


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(out, in) float weights -> (out, in) int8 codes in -127..127 and (out,) float32 scales, one per row.

    ``weight ≈ codes * scale[:, None]``; a row of zeros gets scale 1 (any scale reproduces it exactly).
    """
    _check_matrix(weight, "quantize_int8")
    absmax = weight.detach().float().abs().amax(dim=1)  # (out,): the largest weight of each row
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # (out,)
    codes = torch.round(weight.detach().float() / scale[:, None]).clamp(-127, 127)  # (out, in) / (out, 1)
    return codes.to(torch.int8), scale


def dequantize_int8(codes: Tensor, scale: Tensor) -> Tensor:
    """(out, in) int8 codes and (out,) scales -> (out, in) float32 weights."""
    return codes.float() * scale[:, None]  # (out, in) * (out, 1)


def pack_int4(codes: Tensor) -> Tensor:
    """(out, in) integer codes in -8..7, ``in`` even -> (out, in/2) uint8, two codes per byte (low nibble first)."""
    if codes.shape[-1] % 2 != 0:
        raise ValueError(f"pack_int4 needs an even number of columns, got {tuple(codes.shape)}")
    unsigned = (codes.to(torch.int16) + 8).to(torch.uint8)  # -8..7 -> 0..15
    return unsigned[..., 0::2] | (unsigned[..., 1::2] << 4)  # (out, in/2)


def unpack_int4(packed: Tensor) -> Tensor:
    """(out, in/2) uint8 -> (out, in) int8 codes in -8..7: the inverse of :func:`pack_int4`."""
    low, high = packed & 0x0F, packed >> 4  # 2 x (out, in/2)
    codes = torch.stack([low, high], dim=-1).flatten(-2)  # (out, in/2, 2) -> (out, in): low nibble first
    return codes.to(torch.int8) - 8


def quantize_int4(weight: Tensor, group_size: int = 32) -> tuple[Tensor, Tensor]:
    """(out, in) float weights -> (out, in/2) packed 4-bit codes and (out, in/group_size) float32 scales.

    Each group of ``group_size`` consecutive weights in a row shares ``scale = max|group| / 7``;
    codes are ``round(w / scale)`` in -7..7. ``in`` must be a multiple of ``group_size`` (even).
    """
    _check_matrix(weight, "quantize_int4")
    out_features, in_features = weight.shape
    if group_size < 2 or group_size % 2 != 0 or in_features % group_size != 0:
        raise ValueError(f"quantize_int4: group_size={group_size} must be even and divide in_features={in_features}")
    groups = weight.detach().float().reshape(out_features, in_features // group_size, group_size)  # (out, G, g)
    absmax = groups.abs().amax(dim=-1)  # (out, G)
    scale = torch.where(absmax > 0, absmax / 7, torch.ones_like(absmax))  # (out, G)
    codes = torch.round(groups / scale[..., None]).clamp(-7, 7)  # (out, G, g)
    return pack_int4(codes.reshape(out_features, in_features)), scale  # (out, in) -> (out, in/2)


def dequantize_int4(packed: Tensor, scale: Tensor) -> Tensor:
    """(out, in/2) packed codes and (out, G) scales -> (out, in) float32 weights."""
    codes = unpack_int4(packed).float()  # (out, in)
    out_features, in_features = codes.shape
    n_groups = scale.shape[1]
    groups = codes.reshape(out_features, n_groups, in_features // n_groups)  # (out, G, g)
    return (groups * scale[..., None]).reshape(out_features, in_features)  # (out, G, g) -> (out, in)


class QuantizedLinear(nn.Module):
    """A drop-in replacement for ``nn.Linear`` whose weight is stored as int8 or packed 4-bit codes with scales."""

    def __init__(self, codes: Tensor, scale: Tensor, bias: Tensor | None, bits: int, in_features: int):
        super().__init__()
        self.bits, self.in_features, self.out_features = bits, in_features, codes.shape[0]
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, group_size: int = 32) -> "QuantizedLinear":
        """Quantize ``linear.weight`` (int8 per output channel, or 4-bit per group of ``group_size``)."""
        if bits == 8:
            codes, scale = quantize_int8(linear.weight)
        elif bits == 4:
            codes, scale = quantize_int4(linear.weight, group_size)
        else:
            raise ValueError(f"bits must be 8 or 4, got {bits}")
        return cls(codes, scale, linear.bias, bits, linear.in_features)

    def dequantized_weight(self) -> Tensor:
        """The (out, in) float32 weight the codes stand for."""
        if self.bits == 8:
            return dequantize_int8(self.codes, self.scale)
        return dequantize_int4(self.codes, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.dequantized_weight().to(x.dtype)  # (out, in), rebuilt for this product
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


def _shared_weights(model: nn.Module) -> set[int]:
    """ids of parameters that appear under more than one name (a tied output head)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def quantize_model(model: nn.Module, bits: int = 8, group_size: int = 32) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by a :class:`QuantizedLinear`; the original is untouched.

    Embeddings and norms stay in floating point, and so does a linear layer whose weight is shared
    with another module (a tied output head): quantizing it would store a second copy, not save memory.
    With ``bits=4``, a layer whose input width is not a multiple of ``group_size`` is left as it is.
    """
    quantized = copy.deepcopy(model)
    shared = _shared_weights(quantized)
    targets = [(name, module) for name, module in quantized.named_modules()
               if isinstance(module, nn.Linear) and id(module.weight) not in shared
               and (bits == 8 or module.in_features % group_size == 0)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
    return quantized.eval()


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (a tensor shared by two modules counts once)."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())
