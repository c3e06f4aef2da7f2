"""How many parameters a GPT-style transformer has: defined in chapter 1; chapter 6 checks it against a real GPT.

A GPT is described by a handful of numbers, a :class:`TransformerShape`. From those numbers alone
:func:`parameter_count` gives the exact number of trainable parameters, and
:func:`parameter_breakdown` says where they live:

- ``token_embedding``: one vector of ``d_model`` numbers per vocabulary entry, ``V * D``;
- ``position_embedding``: one learned vector per position, ``context_length * D``;
- ``attention``: in every block, the query/key/value projection ``D -> 3D`` and the output
  projection ``D -> D`` (weights, plus biases when ``bias``);
- ``mlp``: in every block, ``D -> d_ff -> D`` (weights, plus biases when ``bias``);
- ``block_layer_norms``: two LayerNorms per block, each with a scale and (when ``bias``) a shift
  of ``D`` numbers;
- ``final_layer_norm``: the LayerNorm after the last block;
- ``output_head``: the ``D -> V`` layer that turns vectors into next-token scores. It never has a
  bias. With ``tied_embeddings`` (as in GPT-2) it reuses the token-embedding matrix and adds
  nothing, so its entry is 0.

``bias=False`` drops the biases of every linear layer and LayerNorm, as in
``nn.LayerNorm(D, bias=False)``. The number of heads changes how the attention projections are
cut up, not how many parameters they have; it is validated (``d_model`` must be divisible by it)
but does not enter the count.

The named shapes are GPT-2 small/medium/large/XL (the published checkpoints, with tied
embeddings) and GPT-3 175B.

Chapter 9 adds the LLaMA-style count: :class:`LlamaShape`, :func:`llama_parameter_breakdown` and
:func:`llama_parameter_count` (same keys, so the two architectures can be compared line by line),
with the named shapes Llama-2-7B, Llama-3-8B and SmolLM-135M in :data:`LLAMA_NAMED_SHAPES`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LLAMA2_7B",
    "LLAMA3_8B",
    "LLAMA_NAMED_SHAPES",
    "SMOLLM_135M",
    "LlamaShape",
    "llama_parameter_breakdown",
    "llama_parameter_count",
    "GPT2_LARGE",
    "GPT2_MEDIUM",
    "GPT2_SMALL",
    "GPT2_XL",
    "GPT3_175B",
    "NAMED_SHAPES",
    "TransformerShape",
    "parameter_breakdown",
    "parameter_count",
]


def _positive_int(name: str, value: object) -> None:
    # bool is a subclass of int, but True layers is certainly a mistake
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class TransformerShape:
    """The numbers that fix the size of a GPT-style transformer.

    ``vocab_size`` V, ``context_length`` (positions with a learned embedding), ``d_model`` D (the
    width of every token vector), ``n_layers`` (transformer blocks), ``n_heads`` (attention heads;
    must divide ``d_model``), ``d_ff`` (hidden width of the MLP; ``None`` means ``4 * d_model``,
    as in GPT-2 and GPT-3), ``tied_embeddings`` (the output head shares the token-embedding
    matrix) and ``bias`` (linear layers and LayerNorms have biases).
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int | None = None
    tied_embeddings: bool = True
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            _positive_int(name, getattr(self, name))
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)  # frozen: set the default this way
        _positive_int("d_ff", self.d_ff)
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}): "
                f"every head gets d_model // n_heads features"
            )
        for name in ("tied_embeddings", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        """The width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads


def parameter_breakdown(shape: TransformerShape) -> dict[str, int]:
    """Trainable parameters per kind of layer (summed over all blocks); the values add up to the total.

    Keys, always all present: ``token_embedding``, ``position_embedding``, ``attention``, ``mlp``,
    ``block_layer_norms``, ``final_layer_norm``, ``output_head`` (0 when the embeddings are tied).
    """
    if not isinstance(shape, TransformerShape):
        raise TypeError(f"shape must be a TransformerShape, got {type(shape).__name__}")
    V, C, D, L, F = shape.vocab_size, shape.context_length, shape.d_model, shape.n_layers, shape.d_ff
    b = 1 if shape.bias else 0
    attention = (D * 3 * D + b * 3 * D) + (D * D + b * D)  # qkv projection, output projection
    mlp = (D * F + b * F) + (F * D + b * D)  # D -> d_ff, d_ff -> D
    layer_norm = D + b * D  # scale and shift
    return {
        "token_embedding": V * D,
        "position_embedding": C * D,
        "attention": L * attention,
        "mlp": L * mlp,
        "block_layer_norms": L * 2 * layer_norm,
        "final_layer_norm": layer_norm,
        "output_head": 0 if shape.tied_embeddings else D * V,  # no bias
    }


def parameter_count(shape: TransformerShape) -> int:
    """The exact number of trainable parameters of ``shape`` (tied weights counted once)."""
    return sum(parameter_breakdown(shape).values())


#: GPT-2 small, 124,439,808 parameters (the "124M" model).
GPT2_SMALL = TransformerShape(vocab_size=50257, context_length=1024, d_model=768, n_layers=12, n_heads=12)
#: GPT-2 medium, 354,823,168 parameters.
GPT2_MEDIUM = TransformerShape(vocab_size=50257, context_length=1024, d_model=1024, n_layers=24, n_heads=16)
#: GPT-2 large, 774,030,080 parameters.
GPT2_LARGE = TransformerShape(vocab_size=50257, context_length=1024, d_model=1280, n_layers=36, n_heads=20)
#: GPT-2 XL, 1,557,611,200 parameters.
GPT2_XL = TransformerShape(vocab_size=50257, context_length=1024, d_model=1600, n_layers=48, n_heads=25)
#: GPT-3 175B (Brown et al., 2020): about 174.6 billion parameters by this count.
GPT3_175B = TransformerShape(vocab_size=50257, context_length=2048, d_model=12288, n_layers=96, n_heads=96)

#: The named shapes, smallest first.
NAMED_SHAPES: dict[str, TransformerShape] = {
    "GPT-2 small": GPT2_SMALL,
    "GPT-2 medium": GPT2_MEDIUM,
    "GPT-2 large": GPT2_LARGE,
    "GPT-2 XL": GPT2_XL,
    "GPT-3 175B": GPT3_175B,
}


# ------------------------------------------------------------------ LLaMA-style models (chapter 9)


@dataclass(frozen=True)
class LlamaShape:
    """The numbers that fix the size of a LLaMA-style transformer (chapter 9).

    Differences from :class:`TransformerShape`: no position table (RoPE has no parameters), so no
    ``context_length``; ``n_kv_heads`` key/value heads (grouped-query attention); a SwiGLU MLP of
    hidden width ``d_ff`` with three matrices; RMSNorm (a gain, no shift); no biases anywhere;
    ``tied_embeddings`` is usually False. ``head_dim`` defaults to ``d_model // n_heads``.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    tied_embeddings: bool = False
    head_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
            _positive_int(name, getattr(self, name))
        if self.head_dim is None:
            if self.d_model % self.n_heads != 0:
                raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}), "
                                 "or head_dim given")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        _positive_int("head_dim", self.head_dim)
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if not isinstance(self.tied_embeddings, bool):
            raise TypeError(f"tied_embeddings must be True or False, got {self.tied_embeddings!r}")

    @classmethod
    def from_config(cls, config) -> "LlamaShape":
        """The shape of a :class:`course_lib.llama.LlamaConfig`."""
        return cls(vocab_size=config.vocab_size, d_model=config.d_model, n_layers=config.n_layers,
                   n_heads=config.n_heads, n_kv_heads=config.n_kv_heads, d_ff=config.d_ff,
                   tied_embeddings=config.tie_embeddings, head_dim=config.head_dim)


def llama_parameter_breakdown(shape: LlamaShape) -> dict[str, int]:
    """Trainable parameters per kind of layer, with the same keys as :func:`parameter_breakdown`.

    ``position_embedding`` is always 0 (rotary embeddings are computed, not learned);
    ``attention`` counts q and o (``D x H*Dh`` each) and k and v (``D x K*Dh`` each), no biases;
    ``mlp`` counts gate, up and down (``3 * D * d_ff``); the norms are RMSNorm gains of ``D``.
    """
    if not isinstance(shape, LlamaShape):
        raise TypeError(f"shape must be a LlamaShape, got {type(shape).__name__}")
    V, D, L = shape.vocab_size, shape.d_model, shape.n_layers
    q_width, kv_width = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    attention = D * q_width + 2 * D * kv_width + q_width * D  # q, k, v, o
    return {
        "token_embedding": V * D,
        "position_embedding": 0,
        "attention": L * attention,
        "mlp": L * 3 * D * shape.d_ff,
        "block_layer_norms": L * 2 * D,
        "final_layer_norm": D,
        "output_head": 0 if shape.tied_embeddings else D * V,
    }


def llama_parameter_count(shape: LlamaShape) -> int:
    """The exact number of trainable parameters of a LLaMA-style ``shape`` (tied weights counted once)."""
    return sum(llama_parameter_breakdown(shape).values())


#: Llama-2-7B (Touvron et al., 2023), 6,738,415,616 parameters.
LLAMA2_7B = LlamaShape(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008)
#: Llama-3-8B (Meta, 2024), 8,030,261,248 parameters: 8 key/value heads, a vocabulary of 128,256.
LLAMA3_8B = LlamaShape(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336)
#: SmolLM-135M (Hugging Face, 2024), 134,515,008 parameters: 3 key/value heads, tied embeddings.
SMOLLM_135M = LlamaShape(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_ff=1536,
                         tied_embeddings=True)

#: The named LLaMA-style shapes, smallest first.
LLAMA_NAMED_SHAPES: dict[str, LlamaShape] = {
    "SmolLM-135M": SMOLLM_135M,
    "Llama-2-7B": LLAMA2_7B,
    "Llama-3-8B": LLAMA3_8B,
}
