"""course_lib.gpt (chapter 6): shapes, causality, parameter counts, and logit parity with Hugging Face's GPT-2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.gpt import GPT, GPTConfig, LayerNorm, load_hf_gpt2

TINY = GPTConfig(vocab_size=101, context_length=16, d_model=32, n_layers=2, n_heads=4)


def test_layer_norm_equals_torch():
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    ours, ref = LayerNorm(32).double(), nn.LayerNorm(32).double()
    with torch.no_grad():
        ours.weight.uniform_(); ours.bias.uniform_()
        ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))


def test_activation_choice():
    x = torch.linspace(-3, 3, 50)
    tanh_mlp = GPT(TINY).transformer.h[0].mlp
    exact_mlp = GPT(GPTConfig(**{**TINY.__dict__, "activation": "gelu"})).transformer.h[0].mlp
    torch.testing.assert_close(tanh_mlp.gelu(x), nn.functional.gelu(x, approximate="tanh"))
    torch.testing.assert_close(exact_mlp.gelu(x), nn.functional.gelu(x))
    with pytest.raises(ValueError, match="activation must be 'gelu_tanh'.*got 'relu'"):
        GPTConfig(activation="relu")


def test_shapes_tying_and_causality():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 101, (2, 16))
    logits = model(idx)
    assert logits.shape == (2, 16, 101)
    assert model.lm_head.weight is model.transformer.wte.weight
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 101
    torch.testing.assert_close(model(changed)[:, :10], logits[:, :10])


def test_gpt2_small_has_124m_parameters():
    with torch.device("meta"):
        model = GPT(GPTConfig())
    assert model.num_parameters() == 124_439_808


def test_clear_errors():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="more than context_length=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer token ids of shape \(batch, tokens\)"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="n_layers must be positive"):
        GPTConfig(n_layers=0)


@pytest.mark.parametrize("fused", [True, False])
def test_same_logits_as_hugging_face_gpt2(tmp_path, fused):
    import transformers  # a test dependency (pip install -e '.[test]'): a missing one fails, never skips
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=101, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    reference = transformers.GPT2LMHeadModel(hf_config).eval()
    reference.save_pretrained(tmp_path)
    ours = load_hf_gpt2(tmp_path, fused_attention=fused)
    idx = torch.randint(0, 101, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), reference(idx).logits, atol=1e-5, rtol=1e-4)


def test_encoder_decoder_masks():
    from course_lib.attention import causal_mask
    from course_lib.gpt import encoder_decoder_masks

    encoder, decoder, cross = encoder_decoder_masks(5, 3)
    assert encoder.dtype == decoder.dtype == cross.dtype == torch.bool
    assert encoder.shape == (5, 5) and bool(encoder.all())  # bidirectional
    assert torch.equal(decoder, causal_mask(3))  # causal, diagonal included
    assert cross.shape == (3, 5) and bool(cross.all())  # (target queries, source keys)
    with pytest.raises(ValueError, match="n_target must be a positive int"):
        encoder_decoder_masks(2, 0)


def _save_tiny_hf_gpt2(folder, **overrides):
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=101, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                        bos_token_id=0, eos_token_id=0, **overrides)
    transformers.GPT2LMHeadModel(hf_config).save_pretrained(folder)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_inner": 64}, "n_inner=64"),
    ({"activation_function": "relu"}, "activation_function='relu'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "1/sqrt"),
])
def test_checkpoints_of_another_shape_are_refused(tmp_path, overrides, message):
    _save_tiny_hf_gpt2(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_hf_gpt2(tmp_path)


def test_untied_head_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _save_tiny_hf_gpt2(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1.0
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="untied head"):
        load_hf_gpt2(tmp_path)


def test_gpt2_presets_are_the_published_shapes():
    from course_lib.model_size import NAMED_SHAPES, parameter_count

    assert GPTConfig.gpt2() == GPTConfig()
    for size, name in (("medium", "GPT-2 medium"), ("large", "GPT-2 large"), ("xl", "GPT-2 XL")):
        config, shape = GPTConfig.gpt2(size), NAMED_SHAPES[name]
        assert (config.d_model, config.n_layers, config.n_heads) == (shape.d_model, shape.n_layers, shape.n_heads)
    assert parameter_count(NAMED_SHAPES["GPT-2 medium"]) == 354_823_168
    assert GPTConfig.gpt2("medium", dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="'small', 'medium', 'large', 'xl'"):
        GPTConfig.gpt2("huge")


def test_hidden_states_are_the_forward_pass_before_the_head():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=2, n_heads=2)).eval()
    idx = torch.randint(0, 11, (2, 8))
    hidden = model.hidden_states(idx)
    assert hidden.shape == (2, 8, 16)
    torch.testing.assert_close(model.lm_head(hidden), model(idx))
