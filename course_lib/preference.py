"""Preference tuning, defined in chapter 10 ("Using and aligning LLMs").

A language model is preference-tuned on pairs: for one prompt ``x``, a response ``y_w`` that
people (or a checker) preferred and one ``y_l`` they did not. This module holds the pieces:

* :func:`sequence_logprob` -- ``log p(y | x)`` of whole responses under a model, summed over
  the **response tokens only** (the prompt and the padding do not count). Its batch layout is
  the one :func:`course_lib.finetuning.collate_instructions` makes: inputs and shifted targets
  in which every non-response target is ``ignore_index``;
* :func:`dpo_loss` -- Direct Preference Optimization (Rafailov et al., 2023):
  ``-log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])``,
  returned with the implicit rewards ``beta * (log pi - log ref)`` and the preference accuracy;
* :class:`DPOLoss` -- a ``loss_fn(model, batch)`` for :class:`course_lib.trainer.Trainer` that
  keeps a frozen copy of the starting model as the reference;
* :func:`bradley_terry_loss` -- the loss of an explicit reward model (the first step of RLHF):
  ``-log sigmoid(r(x, y_w) - r(x, y_l))``, and :class:`RewardModel`, a GPT body with a scalar head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from course_lib.finetuning import hidden_states

__all__ = [
    "DPOLoss",
    "DPOOutput",
    "RewardModel",
    "bradley_terry_loss",
    "dpo_loss",
    "sequence_logprob",
    "sequence_logprob_from_logits",
]


# ------------------------------------------------------------------ log-probabilities of responses


def sequence_logprob_from_logits(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Sum of ``log p(target)`` over the kept positions of each row: (B, T, V), (B, T) -> (B,).

    ``targets[b, t]`` is the token that follows input position ``t`` (already shifted, as
    :func:`course_lib.finetuning.collate_instructions` makes it); positions whose target is
    ``ignore_index`` (prompt and padding) add nothing. The result is the log-probability of the
    whole response, a **sum** over its tokens, not a mean: a longer response is a product of more
    probabilities, and DPO compares exactly these products.
    """
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("sequence_logprob_from_logits expects two tensors (logits, targets)")
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise ValueError(f"expected logits (B, T, V) and targets (B, T), got logits {tuple(logits.shape)} "
                         f"and targets {tuple(targets.shape)}")
    if targets.is_floating_point():
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
    keep = targets != ignore_index  # (B, T)
    safe = targets.masked_fill(~keep, 0)  # any valid id where ignored; those terms are zeroed below
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    picked = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T, 1) -> (B, T)
    return (picked * keep).sum(dim=-1)  # (B,)


def sequence_logprob(model: nn.Module, inputs: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """``log p(response | prompt)`` of each row under ``model``: (B, T) inputs and targets -> (B,).

    ``model`` maps (B, T) ids to (B, T, V) logits (a :class:`~course_lib.gpt.GPT`). Only the
    targets that are not ``ignore_index`` count (see :func:`sequence_logprob_from_logits`).
    Gradients flow unless the caller wraps the call in ``torch.no_grad()``.
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs and targets must have the same shape (B, T), got {tuple(inputs.shape)} "
                         f"and {tuple(targets.shape)}")
    if bool((targets != ignore_index).sum(dim=-1).eq(0).any()):
        raise ValueError("sequence_logprob: a row has no response token (every target is ignore_index)")
    return sequence_logprob_from_logits(model(inputs), targets, ignore_index)


# ------------------------------------------------------------------ DPO


@dataclass
class DPOOutput:
    """What :func:`dpo_loss` returns: the loss and, detached, what it says about each pair.

    ``chosen_rewards`` and ``rejected_rewards`` (B,) are the implicit rewards
    ``beta * (log pi(y|x) - log ref(y|x))``; ``accuracy`` is the fraction of pairs whose chosen
    reward is strictly larger; ``margin`` the mean of chosen minus rejected reward.
    """

    loss: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    accuracy: float
    margin: float


def _check_logps(**logps: Tensor) -> None:
    shapes = {name: tuple(t.shape) if isinstance(t, Tensor) else None for name, t in logps.items()}
    bad = [name for name, shape in shapes.items() if shape is None]
    if bad:
        raise TypeError(f"dpo_loss expects tensors of sequence log-probabilities, got a non-tensor for {bad}")
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"dpo_loss expects four (B,) tensors of the same shape (one log-probability per "
                         f"pair), got {shapes}")


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> DPOOutput:
    """The DPO loss of Rafailov et al. (2023), averaged over a batch of B preference pairs.

    Each argument is (B,): ``log pi(y_w|x)``, ``log pi(y_l|x)`` under the policy being trained and
    ``log ref(y_w|x)``, ``log ref(y_l|x)`` under the frozen reference (the starting model)::

        loss = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])

    The reference terms are detached: the reference is a fixed anchor and gets no gradient.
    ``beta`` (> 0) sets how much a change of log-probability counts: a small beta lets the policy
    move far from the reference before the loss is satisfied, a large one keeps it close.
    """
    _check_logps(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                 reference_chosen=reference_chosen, reference_rejected=reference_rejected)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    chosen_ratio = policy_chosen - reference_chosen.detach()  # (B,) log pi(y_w) / ref(y_w)
    rejected_ratio = policy_rejected - reference_rejected.detach()  # (B,)
    logits = beta * (chosen_ratio - rejected_ratio)  # (B,)
    loss = -F.logsigmoid(logits).mean()
    chosen_rewards = (beta * chosen_ratio).detach()
    rejected_rewards = (beta * rejected_ratio).detach()
    return DPOOutput(
        loss=loss,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        accuracy=(chosen_rewards > rejected_rewards).float().mean().item(),
        margin=(chosen_rewards - rejected_rewards).mean().item(),
    )


class DPOLoss:
    """``loss_fn(model, batch)`` for :class:`~course_lib.trainer.Trainer`: DPO against a frozen reference.

    ``reference`` is copied and frozen when the loss is built (pass the model *before* training
    starts: policy and reference are then the same, and every implicit reward starts at 0).
    A batch is ``(chosen_inputs, chosen_targets, rejected_inputs, rejected_targets)``, two batches
    made by :func:`course_lib.finetuning.collate_instructions` for the same prompts in the same
    order. Optionally two more tensors, the reference log-probabilities ``(ref_chosen,
    ref_rejected)`` computed once beforehand, save the reference's forward passes.
    ``self.last`` keeps the latest :class:`DPOOutput` (of the DPO term alone).

    ``nll_weight > 0`` adds that multiple of the mean next-token loss on the chosen responses'
    tokens (as in RPO, Pang et al., 2024): plain DPO only needs the *difference* of the two
    log-probabilities to grow, and can get it by lowering both; the extra term keeps the chosen
    response likely (chapter 10 shows both).
    """

    def __init__(self, reference: nn.Module, beta: float = 0.1, ignore_index: int = -100, nll_weight: float = 0.0):
        if not isinstance(reference, nn.Module):
            raise TypeError(f"DPOLoss needs the reference model (an nn.Module), got {type(reference).__name__}")
        if not nll_weight >= 0:
            raise ValueError(f"nll_weight must be >= 0, got {nll_weight!r}")
        self.reference = copy.deepcopy(reference).eval().requires_grad_(False)
        self.beta, self.ignore_index, self.nll_weight = beta, ignore_index, float(nll_weight)
        self.last: DPOOutput | None = None

    @torch.no_grad()
    def reference_logprobs(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``log ref(y | x)`` of each row, without gradients: (B, T), (B, T) -> (B,)."""
        return sequence_logprob(self.reference, inputs, targets, self.ignore_index)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        if not isinstance(batch, (tuple, list)) or len(batch) not in (4, 6):
            raise ValueError("a DPO batch is (chosen_inputs, chosen_targets, rejected_inputs, rejected_targets"
                             "[, ref_chosen, ref_rejected])")
        chosen_x, chosen_y, rejected_x, rejected_y = batch[:4]
        if chosen_x.shape[0] != rejected_x.shape[0]:
            raise ValueError(f"chosen and rejected batches must hold the same number of pairs, got "
                             f"{chosen_x.shape[0]} and {rejected_x.shape[0]}")
        if len(batch) == 6:
            ref_chosen, ref_rejected = batch[4], batch[5]
        else:
            ref_chosen = self.reference_logprobs(chosen_x, chosen_y)
            ref_rejected = self.reference_logprobs(rejected_x, rejected_y)
        chosen_logits = model(chosen_x)  # (B, T, V)
        if bool((chosen_y != self.ignore_index).sum(dim=-1).eq(0).any()) or \
                bool((rejected_y != self.ignore_index).sum(dim=-1).eq(0).any()):
            raise ValueError("DPOLoss: a row has no response token (every target is ignore_index)")
        self.last = dpo_loss(sequence_logprob_from_logits(chosen_logits, chosen_y, self.ignore_index),
                             sequence_logprob(model, rejected_x, rejected_y, self.ignore_index),
                             ref_chosen, ref_rejected, self.beta)
        if self.nll_weight == 0:
            return self.last.loss
        nll = F.cross_entropy(chosen_logits.flatten(0, 1), chosen_y.flatten(), ignore_index=self.ignore_index)
        return self.last.loss + self.nll_weight * nll


# ------------------------------------------------------------------ reward model (RLHF's first step)


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """The reward model's loss on preference pairs: mean of ``-log sigmoid(r_w - r_l)``; (B,), (B,) -> ().

    Under the Bradley-Terry model the probability that people prefer ``y_w`` to ``y_l`` is
    ``sigmoid(r(x, y_w) - r(x, y_l))``; this is its negative log-likelihood. Only differences
    of rewards matter: adding a constant to every reward changes nothing.
    """
    if not isinstance(chosen_rewards, Tensor) or not isinstance(rejected_rewards, Tensor):
        raise TypeError("bradley_terry_loss expects two tensors of rewards")
    if chosen_rewards.dim() != 1 or chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"expected two (B,) tensors of rewards, got {tuple(chosen_rewards.shape)} and "
                         f"{tuple(rejected_rewards.shape)}")
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


class RewardModel(nn.Module):
    """A GPT body with a scalar head ``score`` on the last real token: (B, T) ids, (B,) lengths -> (B,) rewards.

    The same reading position as :class:`course_lib.finetuning.GPTClassifier`: the hidden state at
    ``lengths[b] - 1`` (the last token of prompt + response), the one that has read both.
    """

    def __init__(self, gpt: nn.Module):
        super().__init__()
        if not hasattr(gpt, "transformer") or not hasattr(gpt.transformer, "wte"):
            raise TypeError(f"RewardModel needs a course_lib.gpt.GPT, got {type(gpt).__name__}")
        self.gpt = gpt
        self.score = nn.Linear(gpt.transformer.wte.embedding_dim, 1)

    def forward(self, idx: Tensor, lengths: Tensor) -> Tensor:
        lengths = torch.as_tensor(lengths, device=idx.device)
        if idx.dim() != 2 or lengths.shape != (idx.shape[0],):
            raise ValueError(f"expected ids (B, T) and lengths (B,), got {tuple(idx.shape)} and {tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > idx.shape[1]).any()):
            raise ValueError(f"every length must be between 1 and {idx.shape[1]}, got {lengths.tolist()}")
        h = hidden_states(self.gpt, idx)  # (B, T, D)
        last = h[torch.arange(idx.shape[0], device=idx.device), lengths.long() - 1]  # (B, D)
        return self.score(last).squeeze(-1)  # (B, 1) -> (B,)
