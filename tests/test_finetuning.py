"""Tests for course_lib.finetuning (chapter 8)."""

import pytest
import torch
from torch import nn

from course_lib.finetuning import (
    RESPONSE_MARKER,
    GPTClassifier,
    InstructionCollator,
    LoRALinear,
    add_lora,
    collate_instructions,
    count_trainable,
    exact_match_accuracy,
    format_instruction,
    hidden_states,
    merge_lora,
)
from course_lib.gpt import GPT, GPTConfig


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=2, n_heads=2)).eval()


def test_hidden_states_match_gpt_logits():
    gpt = tiny_gpt()
    idx = torch.randint(0, 11, (3, 5))
    torch.testing.assert_close(gpt.lm_head(hidden_states(gpt, idx)), gpt(idx))


def test_classifier_shapes_and_last_token():
    gpt = tiny_gpt()
    model = GPTClassifier(gpt, n_classes=3).eval()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 3
    idx = torch.randint(0, 11, (4, 6))
    logits = model(idx)
    assert logits.shape == (4, 3)
    expected = model.classifier(hidden_states(gpt, idx)[:, -1])
    torch.testing.assert_close(logits, expected)
    # lengths: the last real token; right padding after it changes nothing (causal attention)
    lengths = torch.tensor([6, 3, 1, 4])
    padded = idx.clone()
    for b, n in enumerate(lengths.tolist()):
        padded[b, n:] = 0
    torch.testing.assert_close(model(padded, lengths), model(idx, lengths))
    torch.testing.assert_close(model(idx[1:2, :3]), model(idx[1:2], lengths[1:2]))


def test_classifier_errors():
    with pytest.raises(ValueError, match="n_classes"):
        GPTClassifier(tiny_gpt(), 1)
    with pytest.raises(TypeError, match="GPT"):
        GPTClassifier(nn.Linear(2, 2), 2)
    model = GPTClassifier(tiny_gpt(), 2)
    with pytest.raises(ValueError, match="length"):
        model(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(2, 4))


def test_format_instruction():
    text = format_instruction({"instruction": "Add 3 and 4", "input": "", "output": "7"})
    assert text == "### Instruction:\nAdd 3 and 4\n" + RESPONSE_MARKER
    text = format_instruction({"instruction": "Fix it.", "input": "He go.", "output": "He goes."})
    assert text == "### Instruction:\nFix it.\n### Input:\nHe go.\n### Response:\n"
    assert "He goes." not in text
    with pytest.raises(KeyError, match="instruction"):
        format_instruction({"input": "x"})
    with pytest.raises(TypeError):
        format_instruction("Add 3 and 4")


def test_collate_masks_exactly_the_response():
    batch = [([1, 2, 3], [4, 5]), ([6], [7, 8, 9, 10])]
    inputs, targets = collate_instructions(batch, pad_id=0)
    assert inputs.shape == targets.shape == (2, 4) and inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, 8, 9]]
    # sequence 1 is 1 2 3 | 4 5: targets 2 and 3 are prompt -> ignored; 4, 5 kept; then padding
    assert targets.tolist() == [[-100, -100, 4, 5], [7, 8, 9, 10]]
    inputs, targets = collate_instructions([([1, 2], [3])], pad_id=9, ignore_index=-1)
    assert inputs.tolist() == [[1, 2]] and targets.tolist() == [[-1, 3]]
    # padding of inputs uses pad_id; padded targets are ignored
    inputs, targets = collate_instructions([([1], [2]), ([1, 2, 3], [4, 5])], pad_id=7)
    assert inputs.tolist() == [[1, 7, 7, 7], [1, 2, 3, 4]]
    assert targets.tolist() == [[2, -100, -100, -100], [-100, -100, 4, 5]]
    # the kept targets are exactly the response tokens
    for (prompt, response), row in zip(batch, collate_instructions(batch, 0)[1]):
        assert row[row != -100].tolist() == response


def test_collate_errors():
    with pytest.raises(ValueError, match="empty"):
        collate_instructions([], pad_id=0)
    with pytest.raises(ValueError, match="empty prompt or response"):
        collate_instructions([([1], [])], pad_id=0)
    with pytest.raises(TypeError, match="pair"):
        collate_instructions([[1, 2, 3]], pad_id=0)


def test_instruction_collator():
    vocab = {ch: i for i, ch in enumerate(sorted(set("#IRnstrucionepAd 34\n:7")))}
    encode = lambda s: [vocab[c] for c in s]  # noqa: E731
    example = {"instruction": "Add 3 4", "input": "", "output": "7"}
    inputs, targets = InstructionCollator(encode, pad_id=0)([example])
    prompt = encode(format_instruction(example))
    assert targets[0].tolist() == [-100] * (len(prompt) - 1) + encode("7\n")


def test_exact_match():
    assert exact_match_accuracy(["7", " CAT ", "x"], ["7", "CAT", "y"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match_accuracy(["a"], [])


def test_lora_starts_as_base_and_trains_only_a_b():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, r=2, alpha=4)
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(layer(x), base(x))
    assert layer.A.shape == (2, 6) and layer.B.shape == (5, 2) and layer.scale == 2.0
    assert torch.count_nonzero(layer.B) == 0 and torch.count_nonzero(layer.A) > 0
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A", "B"]
    assert count_trainable(layer) == 2 * 6 + 5 * 2
    layer(x).sum().backward()
    assert base.weight.grad is None and layer.B.grad is not None


def test_lora_forward_and_merge():
    torch.manual_seed(1)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, r=3, alpha=6)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 6)
    expected = x @ (base.weight + 2.0 * layer.B @ layer.A).T + base.bias
    torch.testing.assert_close(layer(x), expected)
    merged = layer.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), layer(x))
    torch.testing.assert_close(merged.weight, base.weight + layer.delta_weight())


def test_lora_errors():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), 2, 2)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(2, 2), 0, 2)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(2, 2), 2, 0)


def test_add_lora_on_gpt_and_merge():
    gpt = tiny_gpt()
    idx = torch.randint(0, 11, (2, 7))
    before = gpt(idx)
    total = count_trainable(gpt)
    assert total == gpt.num_parameters()
    add_lora(gpt, r=2, alpha=4, target_names=("c_attn", "c_fc"))
    torch.testing.assert_close(gpt(idx), before)
    lora_layers = [m for m in gpt.modules() if isinstance(m, LoRALinear)]
    assert len(lora_layers) == 4
    # per block: c_attn 16 -> 48 and c_fc 16 -> 64, rank 2
    assert count_trainable(gpt) == 2 * (2 * (16 + 48) + 2 * (16 + 64))
    for m in lora_layers:
        with torch.no_grad():
            m.B.normal_()
    changed = gpt(idx)
    merge_lora(gpt)
    assert not any(isinstance(m, LoRALinear) for m in gpt.modules())
    torch.testing.assert_close(gpt(idx), changed, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(tiny_gpt(), 2, 2, target_names=("query",))
