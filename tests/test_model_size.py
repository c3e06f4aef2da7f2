"""Unit tests for course_lib.model_size (chapter 1)."""

import dataclasses

import pytest
from torch import nn

from course_lib.model_size import (
    GPT2_LARGE,
    GPT2_MEDIUM,
    GPT2_SMALL,
    GPT2_XL,
    GPT3_175B,
    NAMED_SHAPES,
    TransformerShape,
    parameter_breakdown,
    parameter_count,
)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [(GPT2_SMALL, 124_439_808), (GPT2_MEDIUM, 354_823_168), (GPT2_LARGE, 774_030_080), (GPT2_XL, 1_557_611_200)],
)
def test_gpt2_checkpoint_counts(shape, expected):
    assert parameter_count(shape) == expected


def test_gpt3_is_about_175_billion():
    assert abs(parameter_count(GPT3_175B) - 175e9) / 175e9 < 0.01
    assert (GPT3_175B.n_layers, GPT3_175B.d_model, GPT3_175B.n_heads) == (96, 12288, 96)
    assert (GPT3_175B.context_length, GPT3_175B.vocab_size) == (2048, 50257)


def test_named_shapes_grow():
    counts = [parameter_count(s) for s in NAMED_SHAPES.values()]
    assert counts == sorted(counts)
    assert list(NAMED_SHAPES.values())[0] is GPT2_SMALL


@pytest.mark.parametrize("shape", list(NAMED_SHAPES.values()))
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_breakdown_sums_to_total(shape, tied, bias):
    shape = dataclasses.replace(shape, tied_embeddings=tied, bias=bias)
    parts = parameter_breakdown(shape)
    assert set(parts) == {"token_embedding", "position_embedding", "attention", "mlp",
                          "block_layer_norms", "final_layer_norm", "output_head"}
    assert all(isinstance(v, int) and v >= 0 for v in parts.values())
    assert sum(parts.values()) == parameter_count(shape)
    assert (parts["output_head"] == 0) == tied


def test_untying_adds_vocab_times_width():
    untied = dataclasses.replace(GPT2_SMALL, tied_embeddings=False)
    assert parameter_count(untied) - parameter_count(GPT2_SMALL) == 50257 * 768
    assert parameter_breakdown(untied)["output_head"] == 50257 * 768


def test_bias_false_removes_every_bias():
    s = TransformerShape(vocab_size=11, context_length=5, d_model=8, n_layers=3, n_heads=2, d_ff=12)
    no_bias = dataclasses.replace(s, bias=False)
    biases = 3 * (3 * 8 + 8 + 12 + 8 + 2 * 8) + 8  # qkv, proj, fc, fc-out, two LayerNorms; final LayerNorm
    assert parameter_count(s) - parameter_count(no_bias) == biases


def test_d_ff_defaults_to_four_times_width_and_head_dim():
    s = TransformerShape(vocab_size=10, context_length=4, d_model=6, n_layers=1, n_heads=3)
    assert s.d_ff == 24
    assert s.head_dim == 2
    assert TransformerShape(10, 4, 6, 1, 3, d_ff=7).d_ff == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.d_model = 8  # type: ignore[misc]


class _Block(nn.Module):
    def __init__(self, s: TransformerShape):
        super().__init__()
        self.ln_1 = nn.LayerNorm(s.d_model, bias=s.bias)
        self.c_attn = nn.Linear(s.d_model, 3 * s.d_model, bias=s.bias)
        self.c_proj = nn.Linear(s.d_model, s.d_model, bias=s.bias)
        self.ln_2 = nn.LayerNorm(s.d_model, bias=s.bias)
        self.c_fc = nn.Linear(s.d_model, s.d_ff, bias=s.bias)
        self.mlp_proj = nn.Linear(s.d_ff, s.d_model, bias=s.bias)


class _TinyGPT(nn.Module):
    """Only the layers of a GPT (no forward): enough to count its parameters."""

    def __init__(self, s: TransformerShape):
        super().__init__()
        self.wte = nn.Embedding(s.vocab_size, s.d_model)
        self.wpe = nn.Embedding(s.context_length, s.d_model)
        self.blocks = nn.ModuleList(_Block(s) for _ in range(s.n_layers))
        self.ln_f = nn.LayerNorm(s.d_model, bias=s.bias)
        self.lm_head = nn.Linear(s.d_model, s.vocab_size, bias=False)
        if s.tied_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix, two uses


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dims", [(13, 7, 8, 2, 2, None), (5, 3, 6, 1, 3, 10), (29, 16, 12, 3, 4, 20)])
def test_matches_real_torch_modules(dims, tied, bias):
    vocab, context, width, layers, heads, d_ff = dims
    s = TransformerShape(vocab, context, width, layers, heads, d_ff=d_ff, tied_embeddings=tied, bias=bias)
    model = _TinyGPT(s)
    real = sum(p.numel() for p in model.parameters())  # parameters() lists a shared tensor once
    assert parameter_count(s) == real
    parts = parameter_breakdown(s)
    assert parts["token_embedding"] == model.wte.weight.numel()
    assert parts["position_embedding"] == model.wpe.weight.numel()
    attn = sum(p.numel() for b in model.blocks for m in (b.c_attn, b.c_proj) for p in m.parameters())
    mlp = sum(p.numel() for b in model.blocks for m in (b.c_fc, b.mlp_proj) for p in m.parameters())
    norms = sum(p.numel() for b in model.blocks for m in (b.ln_1, b.ln_2) for p in m.parameters())
    assert (parts["attention"], parts["mlp"], parts["block_layer_norms"]) == (attn, mlp, norms)
    assert parts["final_layer_norm"] == sum(p.numel() for p in model.ln_f.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"vocab_size": 0}, ValueError, "vocab_size"),
        ({"n_layers": -1}, ValueError, "n_layers"),
        ({"d_model": 7.0}, TypeError, "d_model"),
        ({"context_length": True}, TypeError, "context_length"),
        ({"n_heads": 5}, ValueError, "divisible"),
        ({"d_ff": 0}, ValueError, "d_ff"),
        ({"tied_embeddings": 1}, TypeError, "tied_embeddings"),
        ({"bias": "yes"}, TypeError, "bias"),
    ],
)
def test_validation(kwargs, error, match):
    args = {"vocab_size": 10, "context_length": 4, "d_model": 8, "n_layers": 2, "n_heads": 2} | kwargs
    with pytest.raises(error, match=match):
        TransformerShape(**args)


def test_rejects_non_shape():
    with pytest.raises(TypeError, match="TransformerShape"):
        parameter_count({"d_model": 768})  # type: ignore[arg-type]


@pytest.mark.parametrize("bias", [True, False])
def test_matches_course_gpt(bias):
    gpt = pytest.importorskip("course_lib.gpt")  # chapter 6's model; the count must describe it exactly
    config = gpt.GPTConfig(vocab_size=29, context_length=16, d_model=12, n_layers=2, n_heads=3, bias=bias)
    real = sum(p.numel() for p in gpt.GPT(config).parameters())
    assert real == parameter_count(TransformerShape(29, 16, 12, 2, 3, bias=bias))
