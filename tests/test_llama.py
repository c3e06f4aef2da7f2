"""course_lib.llama: parity with transformers' LlamaForCausalLM, RoPE, RMSNorm, SwiGLU, GQA, the loader."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch.nn import functional as F

from course_lib.llama import (
    Llama,
    LlamaConfig,
    RMSNorm,
    SwiGLU,
    apply_rope,
    load_hf_checkpoint,
    repeat_kv,
    rope_cos_sin,
    swiglu_hidden_size,
)
from course_lib.model_size import LLAMA_NAMED_SHAPES, LlamaShape, llama_parameter_breakdown, llama_parameter_count

transformers.utils.logging.set_verbosity_error()

TINY = LlamaConfig(vocab_size=97, context_length=32, d_model=48, n_layers=2, n_heads=6, n_kv_heads=2, d_ff=80,
                   rope_theta=500.0, norm_eps=1e-6, tie_embeddings=False)


def hf_model(config: LlamaConfig, seed: int = 0) -> transformers.LlamaForCausalLM:
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, max_position_embeddings=config.context_length,
        rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta, tie_word_embeddings=config.tie_embeddings,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():  # RMSNorm gains start at 1: make them random so that a wrong gain is caught
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def ours_from(hf: transformers.LlamaForCausalLM, config: LlamaConfig) -> Llama:
    model = Llama(config).eval()
    missing, unexpected = model.load_state_dict(hf.state_dict(), strict=False)
    assert not missing and all("rotary" in name for name in unexpected), (missing, unexpected)
    return model


@pytest.mark.parametrize("config", [TINY, LlamaConfig(vocab_size=50, context_length=16, d_model=32, n_layers=2,
                                                      n_heads=4, n_kv_heads=1, d_ff=64, tie_embeddings=True)],
                         ids=["gqa-untied", "mqa-tied"])
def test_logits_equal_transformers(config):
    hf = hf_model(config)
    ours = ours_from(hf, config)
    assert set(ours.state_dict()) <= set(hf.state_dict())
    idx = torch.randint(config.vocab_size, (3, config.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = hf(idx).logits, ours(idx)
    assert got.shape == (3, config.context_length, config.vocab_size)
    assert (got - expected).abs().max().item() < 1e-5
    assert ours.num_parameters() == hf.num_parameters()


def test_parameter_names_follow_hugging_face():
    names = set(Llama(TINY).state_dict())
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight",
                 "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                 "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                 "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
                 "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                 "model.norm.weight", "lm_head.weight"):
        assert name in names, name
    assert not any(name.endswith(".bias") for name in names)
    state = Llama(TINY).state_dict()
    assert state["model.layers.0.self_attn.k_proj.weight"].shape == (2 * 8, 48)  # 2 kv heads of width 8


def test_rmsnorm_matches_hand_computation():
    norm = RMSNorm(5, eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0]))
    x = torch.tensor([[3.0, -4.0, 0.0, 1.0, 2.0]])
    rms = (30.0 / 5 + 1e-3) ** 0.5  # squares: 9 + 16 + 0 + 1 + 4 = 30
    expected = torch.tensor([[3.0, -8.0, 0.0, -1.0, 6.0]]) / rms
    torch.testing.assert_close(norm(x), expected)
    # no mean is removed: a constant vector stays constant (LayerNorm would give zeros)
    torch.testing.assert_close(RMSNorm(4)(torch.full((4,), 2.0)), torch.ones(4), atol=1e-5, rtol=0)
    # a bfloat16 model keeps bfloat16 activations (the statistic itself is taken in float32)
    assert norm.bfloat16()(x.bfloat16()).dtype == torch.bfloat16


def test_rope_scores_depend_only_on_offset():
    head_dim = 16
    q, k = torch.randn(head_dim, generator=torch.Generator().manual_seed(0)), torch.randn(head_dim)
    cos, sin = rope_cos_sin(head_dim, 64, theta=10000.0, dtype=torch.float64)

    def score(i, j):
        qi = apply_rope(q.double()[None], cos[i:i + 1], sin[i:i + 1])[0]
        kj = apply_rope(k.double()[None], cos[j:j + 1], sin[j:j + 1])[0]
        return (qi @ kj).item()

    for offset in (0, 1, 5, 17):
        scores = [score(i + offset, i) for i in (0, 3, 20, 40)]
        assert max(scores) - min(scores) < 1e-5, (offset, scores)  # angles are float32, as in the reference code
    assert abs(score(5, 0) - score(6, 0)) > 1e-3  # but they do depend on the offset
    # a rotation keeps lengths
    rotated = apply_rope(q.double().expand(64, head_dim), cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), q.double().norm().expand(64))
    # position 0 is not rotated
    torch.testing.assert_close(apply_rope(q[None], *rope_cos_sin(head_dim, 1)), q[None])


def test_rope_pairs_feature_i_with_i_plus_half():
    cos, sin = rope_cos_sin(4, torch.tensor([1]), theta=10000.0)
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # pair 0 is (x[0], x[2]); it turns by 1 radian at position 1
    torch.testing.assert_close(apply_rope(x, cos, sin), torch.tensor([[torch.cos(torch.tensor(1.0)), 0.0,
                                                                       torch.sin(torch.tensor(1.0)), 0.0]]))
    # frequencies: theta^(-2i/d)
    cos, sin = rope_cos_sin(4, torch.tensor([1]), theta=100.0)
    torch.testing.assert_close(torch.atan2(sin, cos)[0, :2], torch.tensor([1.0, 0.1]))
    with pytest.raises(ValueError, match="even"):
        rope_cos_sin(5, 3)


def test_swiglu_shapes_and_the_two_thirds_rule():
    assert swiglu_hidden_size(4096) == 11008  # Llama-2-7B
    mlp = SwiGLU(64, swiglu_hidden_size(64, multiple_of=1))
    x = torch.randn(2, 3, 64)
    assert mlp(x).shape == (2, 3, 64)
    swiglu_params = sum(p.numel() for p in mlp.parameters())
    gelu_params = 2 * 64 * 4 * 64  # a bias-free GELU MLP of width 4D
    assert abs(swiglu_params - gelu_params) / gelu_params < 0.01
    torch.testing.assert_close(mlp(x), mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x)))


def test_repeat_kv():
    x = torch.arange(2 * 3 * 4 * 5).float().view(2, 3, 4, 5)
    out = repeat_kv(x, 2)
    assert out.shape == (2, 6, 4, 5)
    for h in range(6):
        assert torch.equal(out[:, h], x[:, h // 2])
    assert repeat_kv(x, 1) is x


def test_config_errors_and_presets():
    with pytest.raises(ValueError, match="n_kv_heads=3 must divide n_heads=4"):
        LlamaConfig(d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        LlamaConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positive"):
        LlamaConfig(n_layers=0)
    assert LlamaConfig(d_model=64, n_heads=4, d_ff=None).d_ff == 256
    for config, expected in ((LlamaConfig.llama2_7b(), 6_738_415_616), (LlamaConfig.llama3_8b(), 8_030_261_248),
                             (LlamaConfig.smollm_135m(), 134_515_008)):
        with torch.device("meta"):
            model = Llama(config)
        assert model.num_parameters() == expected
        assert llama_parameter_count(LlamaShape.from_config(config)) == expected
    assert set(LLAMA_NAMED_SHAPES) >= {"Llama-2-7B", "Llama-3-8B", "SmolLM-135M"}


def test_parameter_breakdown_matches_the_model():
    with torch.device("meta"):
        model = Llama(TINY)
    breakdown = llama_parameter_breakdown(LlamaShape.from_config(TINY))
    assert breakdown["attention"] == sum(p.numel() for n, p in model.named_parameters() if "self_attn" in n)
    assert breakdown["mlp"] == sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n)
    assert sum(breakdown.values()) == model.num_parameters()


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="context_length"):
        Llama(TINY)(torch.zeros(1, 33, dtype=torch.long))


def test_loader_round_trip(tmp_path):
    hf = hf_model(TINY, seed=3)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_hf_checkpoint(tmp_path)
    idx = torch.randint(TINY.vocab_size, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (loaded(idx) - hf(idx).logits).abs().max().item() < 1e-5
    assert loaded.config.n_kv_heads == 2 and loaded.config.rope_theta == 500.0 and loaded.config.norm_eps == 1e-6
    half = load_hf_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert half(idx).dtype == torch.bfloat16
        assert (half(idx).float() - loaded(idx)).abs().max().item() < 0.05  # bfloat16 keeps about 3 digits


def test_loader_reads_shards_and_tied_heads(tmp_path):
    config = LlamaConfig(vocab_size=64, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=64, tie_embeddings=True)
    hf = hf_model(config, seed=5)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    loaded = load_hf_checkpoint(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    idx = torch.randint(64, (1, 16), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert (loaded(idx) - hf(idx).logits).abs().max().item() < 1e-5


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_checkpoint(tmp_path)
    hf_model(TINY).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}
    config.pop("rope_parameters", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="llama3"):
        load_hf_checkpoint(tmp_path)
