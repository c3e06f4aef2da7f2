"""The GPT model, defined in chapter 6 ("Inside the transformer").

Built from the pieces of earlier chapters (chapter 5's :class:`~course_lib.attention.MultiHeadAttention`)
plus layer normalisation, a GELU feed-forward network and residual connections, arranged as
GPT-2's pre-norm decoder. Parameter names follow GPT-2 exactly (``transformer.wte``,
``transformer.h.0.attn.c_attn``, ``transformer.ln_f``, ...) so that weights saved in Hugging
Face's GPT-2 format load with :func:`load_hf_gpt2` and can be checked logit for logit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from course_lib.attention import AttentionConfig, MultiHeadAttention, causal_mask, merge_heads, split_heads

__all__ = ["GPT", "GPTConfig", "FeedForward", "LayerNorm", "TransformerBlock", "encoder_decoder_masks", "load_hf_gpt2"]


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT. The defaults are GPT-2 small (124 M parameters)."""

    vocab_size: int = 50257
    context_length: int = 1024
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5
    fused_attention: bool = True
    # "gelu_tanh": GPT-2's tanh approximation (needed to load its weights); "gelu": the exact x * Phi(x),
    # which PyTorch 2.13 computes faster on a CPU (compare the two architectures in bench/train_throughput.py).
    activation: str = "gelu_tanh"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.activation not in ("gelu_tanh", "gelu"):
            raise ValueError(f"GPTConfig.activation must be 'gelu_tanh' (GPT-2) or 'gelu' (exact), got {self.activation!r}")

    @classmethod
    def gpt2(cls, size: str = "small", **overrides) -> GPTConfig:
        """A published GPT-2 shape, ``"small"`` (124 M), ``"medium"``, ``"large"`` or ``"xl"`` (1.5 B), as
        chapter 1's :data:`course_lib.model_size.NAMED_SHAPES` gives it; ``overrides`` set other fields."""
        from course_lib.model_size import NAMED_SHAPES  # here, not above: chapter 6's grading hides model_size

        names = {"small": "GPT-2 small", "medium": "GPT-2 medium", "large": "GPT-2 large", "xl": "GPT-2 XL"}
        if size not in names:
            raise ValueError(f"GPT-2 comes in the sizes {', '.join(map(repr, names))}; got {size!r}")
        shape = NAMED_SHAPES[names[size]]
        fields = dict(vocab_size=shape.vocab_size, context_length=shape.context_length, d_model=shape.d_model,
                      n_layers=shape.n_layers, n_heads=shape.n_heads)
        return cls(**{**fields, **overrides})

    def attention(self) -> AttentionConfig:
        return AttentionConfig(self.d_model, self.n_heads, self.context_length, dropout=self.dropout,
                               bias=self.bias, causal=True, fused=self.fused_attention)


class LayerNorm(nn.Module):
    """Normalise each token vector to mean 0 and variance 1, then scale and shift (learned).

    Chapter 6 writes the formula out as ``MyLayerNorm`` (mean, biased variance, divide, scale,
    shift). Here the same computation is one call to ``F.layer_norm``: one fused kernel forward and
    one backward instead of six elementwise passes over the activations and their gradients, which
    matters on a CPU, where small models spend much of each step outside the matrix products.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class FeedForward(nn.Module):
    """Per-token MLP: widen 4x, GELU (GPT-2's tanh approximation unless ``config.activation="gelu"``), project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.d_model, config.layer_norm_eps, config.bias)
        self.attn = MultiHeadAttention(config.attention())
        self.ln_2 = LayerNorm(config.d_model, config.layer_norm_eps, config.bias)
        self.mlp = FeedForward(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache=None, layer: int = 0) -> Tensor:
        """(B, T, D) -> (B, T, D). With a :class:`~course_lib.kv_cache.KVCache` (chapter 9), x holds only new tokens."""
        attended = self.attn(self.ln_1(x)) if cache is None else _cached_attention(self.attn, self.ln_1(x), cache, layer)
        x = x + self.resid_dropout(attended)
        return x + self.mlp(self.ln_2(x))


def _cached_attention(attn: MultiHeadAttention, x: Tensor, cache, layer: int) -> Tensor:
    """``attn(x)`` for new tokens x (B, T, D) whose earlier keys and values are in ``cache`` (chapter 9)."""
    cfg = attn.config
    q, k, v = attn.c_attn(x).split(cfg.d_model, dim=-1)  # 3 x (B, T, D)
    q, k, v = (split_heads(t, cfg.n_heads) for t in (q, k, v))  # 3 x (B, H, T, Dh)
    k, v = cache.update(layer, k, v)  # (B, H, past + T, Dh)
    mask = causal_mask(q.shape[-2], k.shape[-2], device=x.device)  # (T, past + T): the new tokens are the last
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
    return attn.c_proj(merge_heads(context))  # (B, T, D)


class GPT(nn.Module):
    """Token + position embeddings, a stack of blocks, a final norm, and an output head tied to the token embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.d_model),
            wpe=nn.Embedding(config.context_length, config.d_model),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers)),
            ln_f=LayerNorm(config.d_model, config.layer_norm_eps, config.bias),
        ))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, cache=None) -> Tensor:
        """(B, T) token ids -> (B, T, vocab_size) logits for the next token at every position.

        With a :class:`~course_lib.kv_cache.KVCache` (chapter 9), ``idx`` holds only the tokens after
        the ``cache.length`` already processed ones, and their positions continue from there.
        """
        return self.lm_head(self.hidden_states(idx, cache))  # (B, T, V)

    def hidden_states(self, idx: Tensor, cache=None) -> Tensor:
        """(B, T) token ids -> (B, T, D): the final hidden states, after ``ln_f`` and before the output
        head (chapter 8's classifier reads them); ``cache`` as in :meth:`forward`."""
        if idx.dim() != 2 or idx.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"GPT expects integer token ids of shape (batch, tokens), got {idx.dtype} {tuple(idx.shape)}")
        past = 0 if cache is None else cache.length
        tokens = idx.shape[1]
        if past + tokens > self.config.context_length:
            if past:
                raise ValueError(f"{past} cached + {tokens} new tokens is more than context_length="
                                 f"{self.config.context_length}")
            raise ValueError(f"{tokens} tokens is more than context_length={self.config.context_length}; crop the input")
        positions = torch.arange(past, past + tokens, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))  # (B, T, D)
        for i, block in enumerate(self.transformer.h):
            x = block(x) if cache is None else block(x, cache, i)
        return self.transformer.ln_f(x)  # (B, T, D)

    def num_parameters(self, include_position_embedding: bool = True) -> int:
        """Distinct parameters (the tied head counts once)."""
        total = sum(p.numel() for p in self.parameters())
        return total if include_position_embedding else total - self.transformer.wpe.weight.numel()


def encoder_decoder_masks(n_source: int, n_target: int, device: torch.device | str | None = None
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """The three boolean attention masks of an encoder-decoder transformer (T5), True = may attend.

    Returns ``(encoder, decoder, cross)``: the encoder's self-attention ``(S, S)`` is all True
    (bidirectional, as in BERT); the decoder's self-attention ``(T, T)`` is causal (as in GPT,
    :func:`course_lib.attention.causal_mask`); the cross-attention ``(T, S)`` is all True: every
    target position (query) reads the whole source (keys). S = ``n_source``, T = ``n_target``.
    """
    for name, value in (("n_source", n_source), ("n_target", n_target)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"encoder_decoder_masks: {name} must be a positive int, got {value!r}")
    encoder = torch.ones(n_source, n_source, dtype=torch.bool, device=device)
    decoder = torch.ones(n_target, n_target, dtype=torch.bool, device=device).tril()
    cross = torch.ones(n_target, n_source, dtype=torch.bool, device=device)
    return encoder, decoder, cross


# Hugging Face's GPT-2 stores these as Conv1D weights of shape (in, out): nn.Linear wants (out, in).
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load_hf_gpt2(folder: str | Path, fused_attention: bool = True) -> GPT:
    """Load a GPT-2 checkpoint saved by Hugging Face ``save_pretrained`` (config.json + weights) into :class:`GPT`."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: expected a folder written by save_pretrained()")
    hf = json.loads(config_file.read_text())
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ValueError(f"{config_file}: n_inner={hf['n_inner']}, but GPT's feed-forward width is 4 * n_embd")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{config_file}: activation_function={hf['activation_function']!r}, "
                         "but GPT uses GPT-2's tanh-approximated GELU ('gelu_new')")
    if hf.get("scale_attn_by_inverse_layer_idx", False) or not hf.get("scale_attn_weights", True):
        raise ValueError(f"{config_file}: GPT scales attention scores by 1/sqrt(head width) only, as GPT-2 does")
    config = GPTConfig(
        vocab_size=hf["vocab_size"], context_length=hf["n_positions"], d_model=hf["n_embd"],
        n_layers=hf["n_layer"], n_heads=hf["n_head"], layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        fused_attention=fused_attention,
    )
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")
    model = GPT(config)
    ours = model.state_dict()
    converted = {}
    for name, tensor in state.items():
        key = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old checkpoints store the causal mask as a buffer; ours is computed
        if key not in ours:
            raise KeyError(f"unexpected parameter {name!r} in {folder}")
        converted[key] = tensor.t() if key.endswith(_TRANSPOSED) else tensor
    embedding = converted.get("transformer.wte.weight")
    if embedding is not None:
        head = converted.setdefault("lm_head.weight", embedding)  # tied checkpoints often store it once
        if not torch.equal(head, embedding):
            raise ValueError(f"the checkpoint in {folder} has an output head that differs from its token "
                             "embedding; GPT ties the two (as GPT-2 does) and cannot load an untied head")
    missing = set(ours) - set(converted)
    if missing:
        raise KeyError(f"checkpoint in {folder} lacks parameters: {sorted(missing)[:5]}")
    model.load_state_dict(converted)
    return model.eval()
