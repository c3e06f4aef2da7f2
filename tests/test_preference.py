"""Tests for course_lib.preference (chapter 10)."""

import math

import pytest
import torch
from torch import nn

from course_lib.finetuning import collate_instructions
from course_lib.gpt import GPT, GPTConfig
from course_lib.preference import (
    DPOLoss,
    RewardModel,
    bradley_terry_loss,
    dpo_loss,
    sequence_logprob,
    sequence_logprob_from_logits,
)


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, context_length=12, d_model=16, n_layers=1, n_heads=2))


def test_sequence_logprob_counts_response_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    targets = torch.tensor([[-100, -100, 3, 1], [-100, 2, -100, -100]])
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = torch.stack([log_probs[0, 2, 3] + log_probs[0, 3, 1], log_probs[1, 1, 2]])
    torch.testing.assert_close(sequence_logprob_from_logits(logits, targets), expected)
    # a different ignore_index, and changing the logits at ignored positions changes nothing
    other = logits.clone()
    other[0, :2] += 100.0
    torch.testing.assert_close(sequence_logprob_from_logits(other, targets.masked_fill(targets == -100, -1), -1),
                               expected)


def test_sequence_logprob_of_a_model_is_the_sum_over_the_response():
    model = tiny_gpt().eval()
    prompt, response = [1, 2, 3], [4, 5, 6]
    inputs, targets = collate_instructions([(prompt, response), ([7], [8, 9])], pad_id=0)
    got = sequence_logprob(model, inputs, targets)
    assert got.shape == (2,)
    # by hand: the chain rule over the response tokens of the first sequence
    seq = torch.tensor([prompt + response])
    log_probs = torch.log_softmax(model(seq[:, :-1]), dim=-1)[0]  # (T, V)
    by_hand = sum(log_probs[t - 1, seq[0, t]] for t in range(len(prompt), seq.shape[1]))
    torch.testing.assert_close(got[0], by_hand)
    assert bool((got < 0).all())
    # padding after a sequence changes nothing (causal model)
    alone = sequence_logprob(model, *collate_instructions([([7], [8, 9])], pad_id=0))
    torch.testing.assert_close(got[1:], alone)


def test_sequence_logprob_errors():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="same shape"):
        sequence_logprob(model, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no response token"):
        sequence_logprob(model, torch.zeros(1, 3, dtype=torch.long), torch.full((1, 3), -100))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        sequence_logprob_from_logits(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        sequence_logprob_from_logits(torch.zeros(2, 3, 4), torch.zeros(2, 3))


def test_dpo_loss_against_a_hand_computation():
    pc, pr = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -4.0])
    rc, rr = torch.tensor([-2.5, -5.0]), torch.tensor([-2.5, -4.5])
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 0: 0.5 * ((-2 + 2.5) - (-3 + 2.5)) = 0.5; pair 1: 0.5 * (0 - 0.5) = -0.25
    expected = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(0.25))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.25, 0.0]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.25, 0.25]))
    assert out.accuracy == pytest.approx(0.5)
    assert out.margin == pytest.approx((0.5 - 0.25) / 2)
    # policy == reference: every implicit reward is 0 and the loss is log 2
    same = dpo_loss(rc, rr, rc, rr, beta=0.5)
    assert same.loss.item() == pytest.approx(math.log(2))
    assert same.accuracy == 0.0 and same.margin == 0.0


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-3.0, -1.0], requires_grad=True)
    pr = torch.tensor([-2.0, -4.0], requires_grad=True)
    rc, rr = torch.tensor([-3.0, -1.5]), torch.tensor([-2.0, -3.0])
    dpo_loss(pc, pr, rc, rr, beta=0.3).loss.backward()
    assert bool((pc.grad < 0).all()), "descending the loss must raise log pi(chosen)"
    assert bool((pr.grad > 0).all()), "descending the loss must lower log pi(rejected)"
    torch.testing.assert_close(pc.grad, -pr.grad)  # the loss depends only on their difference


def test_beta_scales_the_rewards_and_the_pull():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])
    rc, rr = torch.tensor([-2.0]), torch.tensor([-2.0])
    small, large = dpo_loss(pc, pr, rc, rr, beta=0.1), dpo_loss(pc, pr, rc, rr, beta=1.0)
    torch.testing.assert_close(large.chosen_rewards, 10 * small.chosen_rewards)
    assert large.loss < small.loss  # the same log-ratio margin satisfies a large beta more
    # near policy == reference, the gradient is beta / 2 per pair: beta sets the pull
    for beta in (0.1, 1.0):
        p = torch.tensor([-2.0], requires_grad=True)
        dpo_loss(p, rr, rc, rr, beta=beta).loss.backward()
        assert p.grad.item() == pytest.approx(-beta / 2)


def test_dpo_loss_errors():
    ok = torch.zeros(3)
    with pytest.raises(ValueError, match=r"four \(B,\) tensors"):
        dpo_loss(ok, ok, ok, torch.zeros(4))
    with pytest.raises(ValueError, match=r"four \(B,\) tensors"):
        dpo_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="non-tensor"):
        dpo_loss([0.0], ok, ok, ok)
    for beta in (0.0, -1.0, True, "0.1"):
        with pytest.raises(ValueError, match="beta"):
            dpo_loss(ok, ok, ok, ok, beta=beta)


def _pair_batch():
    chosen = collate_instructions([([1, 2], [3, 4]), ([5], [6])], pad_id=0)
    rejected = collate_instructions([([1, 2], [7]), ([5], [8, 9, 10])], pad_id=0)
    return (*chosen, *rejected)


def test_dpo_loss_fn_trains_the_policy_not_the_reference():
    policy = tiny_gpt(1)
    loss_fn = DPOLoss(policy, beta=0.5)
    ref_before = {k: v.clone() for k, v in loss_fn.reference.state_dict().items()}
    batch = _pair_batch()
    loss = loss_fn(policy, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
    loss.backward()
    assert all(p.grad is None for p in loss_fn.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    # a few steps of SGD raise the chosen-minus-rejected log-ratio
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(policy, batch).backward()
        opt.step()
    assert loss_fn(policy, batch).item() < math.log(2) - 0.05
    assert loss_fn.last.accuracy == 1.0
    for k, v in loss_fn.reference.state_dict().items():
        torch.testing.assert_close(v, ref_before[k])
    # reference log-probs passed in give the same loss
    with torch.no_grad():
        ref_c, ref_r = loss_fn.reference_logprobs(*batch[:2]), loss_fn.reference_logprobs(*batch[2:])
        torch.testing.assert_close(loss_fn(policy, (*batch, ref_c, ref_r)), loss_fn(policy, batch))


def test_dpo_loss_fn_nll_weight_adds_the_chosen_tokens_loss():
    policy = tiny_gpt(2)
    batch = _pair_batch()
    plain = DPOLoss(policy, beta=0.5)(policy, batch)
    with_nll = DPOLoss(policy, beta=0.5, nll_weight=2.0)(policy, batch)
    chosen_x, chosen_y = batch[0], batch[1]
    nll = torch.nn.functional.cross_entropy(policy(chosen_x).flatten(0, 1), chosen_y.flatten(), ignore_index=-100)
    torch.testing.assert_close(with_nll, plain + 2.0 * nll)
    with pytest.raises(ValueError, match="nll_weight"):
        DPOLoss(policy, nll_weight=-1.0)


def test_dpo_loss_fn_errors():
    with pytest.raises(TypeError, match="reference"):
        DPOLoss("model")
    loss_fn = DPOLoss(tiny_gpt())
    with pytest.raises(ValueError, match="DPO batch"):
        loss_fn(tiny_gpt(), _pair_batch()[:2])
    c = collate_instructions([([1], [2])], pad_id=0)
    r = collate_instructions([([1], [3]), ([1], [4])], pad_id=0)
    with pytest.raises(ValueError, match="same number of pairs"):
        loss_fn(tiny_gpt(), (*c, *r))


def test_bradley_terry_loss_and_reward_model():
    rc, rr = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert bradley_terry_loss(rc, rr).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(bradley_terry_loss(rc + 5, rr + 5), bradley_terry_loss(rc, rr))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))
    model = RewardModel(tiny_gpt())
    idx = torch.randint(0, 11, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    rewards = model(idx, lengths)
    assert rewards.shape == (3,)
    padded = idx.clone()
    padded[1, 2:] = 0
    torch.testing.assert_close(model(padded, lengths), rewards)  # right padding changes nothing
    with pytest.raises(ValueError, match="length"):
        model(idx, torch.tensor([0, 2, 4]))
    with pytest.raises(TypeError, match="GPT"):
        RewardModel(nn.Linear(2, 2))
