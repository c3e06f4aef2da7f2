"""A LLaMA-style model, defined in chapter 9 ("From GPT-2 to today's open models").

The same decoder-only transformer as chapter 6's :class:`~course_lib.gpt.GPT`, with the four changes
that almost every open model since LLaMA (Touvron et al., 2023) shares:

- :class:`RMSNorm` instead of LayerNorm: scale by the root mean square, no mean, no shift
  (Zhang & Sennrich, 2019);
- rotary position embeddings instead of a learned position table: queries and keys are rotated
  by an angle proportional to their position (:func:`rope_cos_sin`, :func:`apply_rope`; Su et al.,
  2021, "RoFormer"), so attention scores depend on the offset between two tokens only;
- a SwiGLU feed-forward network (:class:`SwiGLU`; Shazeer, 2020) whose hidden width follows the
  2/3 rule (:func:`swiglu_hidden_size`), so it has about as many parameters as GPT's 4x MLP;
- grouped-query attention (:class:`GroupedQueryAttention`; Ainslie et al., 2023): ``n_kv_heads``
  key/value heads shared by ``n_heads`` query heads (:func:`repeat_kv`); ``n_kv_heads=1`` is
  multi-query attention, ``n_kv_heads=n_heads`` ordinary multi-head attention;

plus no biases anywhere and, usually, an output head that is *not* tied to the token embedding.

Parameter names follow Hugging Face's ``LlamaForCausalLM`` (``model.embed_tokens.weight``,
``model.layers.0.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight``), so a
checkpoint in that format loads with :func:`load_hf_checkpoint` and is checked logit for logit
against ``transformers`` in ``tests/test_llama.py``. RoPE pairs feature ``i`` of a head with feature
``i + head_dim/2`` (the "rotate half" convention of the Hugging Face code), not neighbours ``2i`` and
``2i + 1`` as in the RoFormer paper: the two are the same rotation applied to permuted features, and a
checkpoint only works with the convention it was saved for.

Both :class:`Llama` and :class:`~course_lib.gpt.GPT` accept a :class:`~course_lib.kv_cache.KVCache`
in ``forward`` for incremental decoding (:func:`course_lib.kv_cache.generate_cached`).

Shapes: B = batch, T = tokens, D = d_model, H = query heads, K = key/value heads, Dh = head_dim.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from course_lib.attention import causal_mask

__all__ = [
    "GroupedQueryAttention",
    "Llama",
    "LlamaBlock",
    "LlamaConfig",
    "RMSNorm",
    "SwiGLU",
    "apply_rope",
    "load_hf_checkpoint",
    "repeat_kv",
    "rope_cos_sin",
    "rotate_half",
    "swiglu_hidden_size",
]


def swiglu_hidden_size(d_model: int, multiple_of: int = 256) -> int:
    """The hidden width of a SwiGLU MLP with as many parameters as a GELU MLP of width ``4 * d_model``.

    A GELU MLP has two matrices of ``D x 4D``; SwiGLU has three (gate, up, down), so each gets
    ``2/3 * 4D = 8D/3`` columns. LLaMA then rounds up to a multiple of ``multiple_of`` (256) for fast
    matrix kernels: ``swiglu_hidden_size(4096) == 11008``, Llama-2-7B's width.
    """
    if d_model < 1 or multiple_of < 1:
        raise ValueError(f"d_model and multiple_of must be positive, got {d_model} and {multiple_of}")
    hidden = int(2 * (4 * d_model) / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a LLaMA-style model. The defaults are Llama-2-7B (6.74 billion parameters).

    ``n_kv_heads``: key/value heads, ``None`` means ``n_heads`` (no sharing); must divide ``n_heads``.
    ``d_ff``: SwiGLU hidden width, ``None`` means :func:`swiglu_hidden_size` of ``d_model``.
    ``head_dim``: width of one head, ``None`` means ``d_model // n_heads``.
    ``context_length``: the most tokens the model is run on (RoPE itself has no table to outgrow,
    but a model is only trained up to a length). ``rope_theta``: the RoPE base.
    """

    vocab_size: int = 32000
    context_length: int = 4096
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    d_ff: int | None = 11008
    head_dim: int | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    fused_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)  # frozen: set the default this way
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", swiglu_hidden_size(self.d_model))
        if self.head_dim is None:
            if self.d_model % self.n_heads != 0:
                raise ValueError(f"LlamaConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                                 "give head_dim explicitly or change one of them")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        for name in ("n_kv_heads", "d_ff", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"LlamaConfig: n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} "
                             "(every key/value head serves the same number of query heads)")
        if self.head_dim % 2 != 0:
            raise ValueError(f"LlamaConfig: head_dim={self.head_dim} must be even: RoPE rotates pairs of features")
        if not self.rope_theta > 1:
            raise ValueError(f"LlamaConfig.rope_theta must be > 1, got {self.rope_theta}")
        if not self.norm_eps > 0:
            raise ValueError(f"LlamaConfig.norm_eps must be > 0, got {self.norm_eps}")

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.n_kv_heads

    # Published shapes, from each model's config.json on the Hugging Face Hub.
    @classmethod
    def llama2_7b(cls) -> "LlamaConfig":
        """Llama-2-7B: 32 layers, width 4096, 32 heads, no key/value sharing, untied, 6,738,415,616 parameters."""
        return cls(vocab_size=32000, context_length=4096, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                   d_ff=11008, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False)

    @classmethod
    def llama3_8b(cls) -> "LlamaConfig":
        """Llama-3-8B: 32 layers, width 4096, 32 query heads sharing 8 key/value heads, 8,030,261,248 parameters."""
        return cls(vocab_size=128256, context_length=8192, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                   d_ff=14336, rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=False)

    @classmethod
    def smollm_135m(cls) -> "LlamaConfig":
        """SmolLM-135M (Hugging Face, 2024): 30 layers, width 576, 9 query / 3 key-value heads, tied, 134,515,008 parameters."""
        return cls(vocab_size=49152, context_length=2048, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
                   d_ff=1536, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True)


class RMSNorm(nn.Module):
    """Divide each token vector by its root mean square, then multiply by a learned gain (no mean, no bias).

    ``x / sqrt(mean(x**2) + eps) * weight``, with ``eps`` inside the root. The statistic is computed in
    float32 even for bfloat16 inputs, as the reference LLaMA code does, and the result is cast back.
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., D) / (..., 1)
        return self.weight * x.to(dtype)


def rope_cos_sin(head_dim: int, positions: Tensor | int, theta: float = 10000.0,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The cosines and sines that rotate a head's features at each position: two (T, head_dim) tensors.

    Feature pair ``(i, i + head_dim/2)`` turns at the angular frequency ``theta ** (-2i / head_dim)``
    (radians per position): the first pairs turn fast, the last ones very slowly. ``positions`` is
    an int T (positions 0..T-1) or a 1-D tensor of positions (for a KV cache: past..past+T-1).
    """
    if head_dim < 2 or head_dim % 2 != 0:
        raise ValueError(f"rope_cos_sin: head_dim must be even and at least 2, got {head_dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions)
    if positions.dim() != 1:
        raise ValueError(f"rope_cos_sin: positions must be an int or a 1-D tensor, got shape {tuple(positions.shape)}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # (Dh/2,)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, 1) * (1, Dh/2) -> (T, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, Dh): pair i and i + Dh/2 share an angle
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(..., Dh) -> (..., Dh): the pair (a, b) = (x[i], x[i + Dh/2]) becomes (-b, a), a 90-degree turn."""
    first, second = x.chunk(2, dim=-1)  # 2 x (..., Dh/2)
    return torch.cat([-second, first], dim=-1)  # (..., Dh)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate every feature pair of ``x`` (..., T, Dh) by its position's angle; cos, sin: (T, Dh).

    For a pair (a, b) at angle phi: (a cos phi - b sin phi, b cos phi + a sin phi).
    """
    if x.shape[-1] != cos.shape[-1] or x.shape[-2] != cos.shape[-2] or cos.shape != sin.shape:
        raise ValueError(f"apply_rope: x {tuple(x.shape)} needs cos and sin of shape (T, Dh) = "
                         f"{tuple(x.shape[-2:])}, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, K, T, Dh) -> (B, K * n_rep, T, Dh): each key/value head repeated for the n_rep query heads it serves.

    Query head h uses key/value head ``h // n_rep``: heads 0..n_rep-1 share the first one.
    """
    if x.dim() != 4:
        raise ValueError(f"repeat_kv expects (batch, kv_heads, tokens, head_dim), got {tuple(x.shape)}")
    if n_rep == 1:
        return x
    batch, kv_heads, tokens, head_dim = x.shape
    x = x[:, :, None, :, :].expand(batch, kv_heads, n_rep, tokens, head_dim)  # (B, K, n_rep, T, Dh)
    return x.reshape(batch, kv_heads * n_rep, tokens, head_dim)  # (B, K * n_rep, T, Dh)


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with RoPE and ``n_kv_heads`` key/value heads shared by ``n_heads`` query heads."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        H, K, Dh = config.n_heads, config.n_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.d_model, H * Dh, bias=False)
        self.k_proj = nn.Linear(config.d_model, K * Dh, bias=False)
        self.v_proj = nn.Linear(config.d_model, K * Dh, bias=False)
        self.o_proj = nn.Linear(H * Dh, config.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache=None, layer: int = 0) -> Tensor:
        """(B, T, D) -> (B, T, D). With a :class:`~course_lib.kv_cache.KVCache`, x holds only the new tokens."""
        cfg = self.config
        batch, tokens, _ = x.shape
        q = self.q_proj(x).view(batch, tokens, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(batch, tokens, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)  # (B, K, T, Dh)
        v = self.v_proj(x).view(batch, tokens, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)  # (B, K, T, Dh)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # rotated by their absolute positions
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, K, past + T, Dh): the cache stores K heads, not H
        k, v = repeat_kv(k, cfg.n_rep), repeat_kv(v, cfg.n_rep)  # (B, H, T_k, Dh)
        if cache is None and cfg.fused_attention:
            context = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
        else:  # new queries are the last `tokens` positions of the T_k keys
            mask = causal_mask(tokens, k.shape[-2], device=x.device)  # (T, T_k)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
        context = context.transpose(1, 2).reshape(batch, tokens, cfg.n_heads * cfg.head_dim)  # (B, T, H * Dh)
        return self.o_proj(context)  # (B, T, D)


class SwiGLU(nn.Module):
    """Feed-forward network: ``down(silu(gate(x)) * up(x))``, hidden width ``d_ff``, no biases."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, d_ff) -> (B, T, D)


class LlamaBlock(nn.Module):
    """Pre-norm block: x + attention(rmsnorm(x)), then x + swiglu(rmsnorm(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = GroupedQueryAttention(config)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache=None, layer: int = 0) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class _LlamaBody(nn.Module):
    """Holds the parameters under ``model.`` as Hugging Face names them."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)


class Llama(nn.Module):
    """Token embedding, a stack of :class:`LlamaBlock`, a final RMSNorm and an output head (no position table)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = _LlamaBody(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, cache=None) -> Tensor:
        """(B, T) token ids -> (B, T, vocab_size) logits. With a cache, idx holds only the new tokens."""
        if idx.dim() != 2 or idx.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"Llama expects integer token ids of shape (batch, tokens), got {idx.dtype} {tuple(idx.shape)}")
        past = 0 if cache is None else cache.length
        tokens = idx.shape[1]
        if past + tokens > self.config.context_length:
            raise ValueError(f"{past} cached + {tokens} new tokens is more than context_length="
                             f"{self.config.context_length}; crop the input")
        x = self.model.embed_tokens(idx)  # (B, T, D)
        positions = torch.arange(past, past + tokens, device=idx.device)  # (T,)
        cos, sin = rope_cos_sin(self.config.head_dim, positions, self.config.rope_theta, dtype=x.dtype)
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin, cache, i)
        return self.lm_head(self.model.norm(x))  # (B, T, V)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())


def _config_from_hf(hf: dict, source: str) -> LlamaConfig:
    """Our :class:`LlamaConfig` from a Hugging Face ``config.json`` of a Llama-family model."""
    if hf.get("model_type", "llama") not in ("llama", "mistral", "qwen2"):
        raise ValueError(f"{source}: model_type={hf.get('model_type')!r}; load_hf_checkpoint reads LLaMA-style models")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r}, but the model uses SwiGLU (silu)")
    if hf.get("attention_bias", False) or hf.get("mlp_bias", False) or hf.get("model_type") == "qwen2":
        raise ValueError(f"{source}: the checkpoint has biases in its projections; the model has none")
    if hf.get("sliding_window") and hf.get("use_sliding_window", True) and hf.get("model_type") == "mistral":
        raise ValueError(f"{source}: sliding-window attention is not implemented")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"{source}: RoPE scaling {rope_type!r} is not implemented (only the plain rotation)")
    theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
    return LlamaConfig(
        vocab_size=hf["vocab_size"], context_length=hf.get("max_position_embeddings", 2048),
        d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"], d_ff=hf["intermediate_size"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        rope_theta=float(theta), norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def load_hf_checkpoint(folder: str | Path, dtype: torch.dtype = torch.float32) -> Llama:
    """Load a LLaMA-family checkpoint saved in Hugging Face's format from a local folder into :class:`Llama`.

    The folder holds ``config.json`` and ``model.safetensors``, or several shards listed in
    ``model.safetensors.index.json``. Tensors are converted to ``dtype`` (float32 by default:
    bfloat16 checkpoints run, but slowly, on CPUs without bfloat16 units).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: expected a folder written by save_pretrained()")
    config = _config_from_hf(json.loads(config_file.read_text()), str(config_file))
    index_file = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif index_file.is_file():
        files = [folder / name for name in sorted(set(json.loads(index_file.read_text())["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder}")
    state: dict[str, Tensor] = {}
    for file in files:
        state.update(load_file(file))
    state = {name: tensor for name, tensor in state.items() if not name.endswith("rotary_emb.inv_freq")}
    if config.tie_embeddings:
        head = state.pop("lm_head.weight", None)  # tied checkpoints may store the head once or twice
        if head is not None and not torch.equal(head, state["model.embed_tokens.weight"]):
            raise ValueError(f"{folder}: tie_word_embeddings is set but lm_head differs from the embedding")
    with torch.device("meta"):
        model = Llama(config)  # no memory, no random initialisation: every tensor comes from the file
    expected = set(model.state_dict())
    if config.tie_embeddings:
        expected.discard("lm_head.weight")
    unexpected, missing = set(state) - expected, expected - set(state)
    if unexpected or missing:
        raise KeyError(f"{folder}: checkpoint does not match the model: unexpected {sorted(unexpected)[:5]}, "
                       f"missing {sorted(missing)[:5]}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()
