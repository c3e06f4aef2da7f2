"""Fine-tuning a pretrained GPT, defined in chapter 8 ("Fine-tuning and using LLMs").

Three ways to adapt a pretrained :class:`~course_lib.gpt.GPT` to a new job:

* **classification fine-tuning** -- :class:`GPTClassifier` puts a small linear head named
  ``classifier`` on the final hidden state of the *last real token* of each sequence (in a
  causal model it is the only position that has read the whole text);
* **instruction fine-tuning** -- :func:`format_instruction` writes an example in a fixed
  instruction/response template, and :func:`collate_instructions` (or the callable
  :class:`InstructionCollator`) pads a batch and hides the prompt and the padding from the
  loss with ``ignore_index``, so that the model is trained on the response tokens only;
* **LoRA** -- :class:`LoRALinear` keeps a linear layer's weight frozen and learns a low-rank
  update ``(alpha / r) * B @ A``; :func:`add_lora` wraps chosen layers of a model,
  :func:`merge_lora` folds the updates back into plain ``nn.Linear`` layers, and
  :func:`count_trainable` counts what an optimiser would update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "GPTClassifier",
    "InstructionCollator",
    "LoRALinear",
    "RESPONSE_MARKER",
    "add_lora",
    "collate_instructions",
    "count_trainable",
    "exact_match_accuracy",
    "format_instruction",
    "hidden_states",
    "merge_lora",
]


# ------------------------------------------------------------------ classification


def hidden_states(gpt: nn.Module, idx: Tensor) -> Tensor:
    """The final hidden states of a :class:`~course_lib.gpt.GPT`: (B, T) ids -> (B, T, D).

    The model's own forward pass, stopped after the final layer norm ``ln_f``, before the output
    head ``lm_head`` (:meth:`course_lib.gpt.GPT.hidden_states`).
    """
    return gpt.hidden_states(idx)


class GPTClassifier(nn.Module):
    """A GPT body with a classification head ``classifier``: (B, T) ids -> (B, n_classes) logits.

    The head reads the final hidden state of the **last real token** of each sequence: position
    ``lengths[b] - 1`` when ``lengths`` (the number of real tokens before any right padding) is
    given, else the last position. Because attention is causal, that is the one position whose
    hidden state depends on every token of the text, and right padding after it changes nothing.
    The language-model head ``gpt.lm_head`` is kept but not used.
    """

    def __init__(self, gpt: nn.Module, n_classes: int):
        super().__init__()
        if not hasattr(gpt, "transformer") or not hasattr(gpt.transformer, "ln_f"):
            raise TypeError(f"GPTClassifier needs a course_lib.gpt.GPT, got {type(gpt).__name__}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        self.gpt = gpt
        d_model = gpt.transformer.wte.embedding_dim
        self.classifier = nn.Linear(d_model, n_classes)

    def forward(self, idx: Tensor, lengths: Tensor | None = None) -> Tensor:
        h = hidden_states(self.gpt, idx)  # (B, T, D)
        if lengths is None:
            last = h[:, -1, :]  # (B, D)
        else:
            lengths = torch.as_tensor(lengths, device=idx.device)
            if lengths.shape != (idx.shape[0],):
                raise ValueError(f"lengths must have shape ({idx.shape[0]},), got {tuple(lengths.shape)}")
            if bool((lengths < 1).any()) or bool((lengths > idx.shape[1]).any()):
                raise ValueError(f"every length must be between 1 and {idx.shape[1]}, got {lengths.tolist()}")
            last = h[torch.arange(idx.shape[0], device=idx.device), lengths.long() - 1]  # (B, D)
        return self.classifier(last)  # (B, n_classes)


# ------------------------------------------------------------------ instruction data

RESPONSE_MARKER = "### Response:\n"


def format_instruction(example: Mapping[str, str]) -> str:
    """The prompt for one ``{"instruction", "input", "output"}`` example, ending with the response marker.

    The fixed template (the ``### Input:`` block is left out when ``input`` is empty)::

        ### Instruction:
        <instruction>
        ### Input:
        <input>
        ### Response:

    The response (``example["output"]``) is *not* included: the model writes it after the marker.
    """
    if not isinstance(example, Mapping):
        raise TypeError(f"format_instruction expects a dict with keys 'instruction' and 'input', got {type(example).__name__}")
    if "instruction" not in example:
        raise KeyError(f"format_instruction: the example has no 'instruction' key (keys: {sorted(example)})")
    text = f"### Instruction:\n{example['instruction']}\n"
    if example.get("input"):
        text += f"### Input:\n{example['input']}\n"
    return text + RESPONSE_MARKER


def collate_instructions(
    batch: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Pad a batch of ``(prompt_ids, response_ids)`` pairs into ``(inputs, targets)``, both (B, T) int64.

    Each sequence is ``prompt + response``; ``inputs`` is the sequence without its last token and
    ``targets`` the sequence without its first (``targets[b, t]`` follows ``inputs[b, t]``).
    ``T`` is the longest sequence length minus one. A target is kept only when it is a response
    token; targets that are prompt tokens, and all padding positions, are ``ignore_index`` (which
    ``F.cross_entropy`` skips). Inputs are right-padded with ``pad_id``.
    """
    if len(batch) == 0:
        raise ValueError("collate_instructions: the batch is empty")
    sequences, prompt_lengths = [], []
    for i, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"collate_instructions: item {i} must be a (prompt_ids, response_ids) pair, got {item!r}")
        prompt, response = list(item[0]), list(item[1])
        if len(prompt) == 0 or len(response) == 0:
            raise ValueError(f"collate_instructions: item {i} has an empty prompt or response")
        sequences.append(prompt + response)
        prompt_lengths.append(len(prompt))
    width = max(len(s) for s in sequences) - 1
    inputs = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), width), ignore_index, dtype=torch.long)
    for b, (seq, n_prompt) in enumerate(zip(sequences, prompt_lengths)):
        seq_t = torch.tensor(seq, dtype=torch.long)
        inputs[b, : len(seq) - 1] = seq_t[:-1]
        # targets[t] = seq[t + 1] is a response token when t + 1 >= n_prompt
        targets[b, n_prompt - 1 : len(seq) - 1] = seq_t[n_prompt:]
    return inputs, targets


class InstructionCollator:
    """Turn a list of instruction examples into a padded, masked batch (use as a ``collate_fn``).

    ``encode`` maps text to token ids; each example becomes the pair
    ``(encode(format_instruction(ex)), encode(ex["output"] + end))`` and the pairs go through
    :func:`collate_instructions`. ``end`` marks the end of a response (the model learns to write
    it, so generation knows when to stop).
    """

    def __init__(self, encode: Callable[[str], list[int]], pad_id: int, end: str = "\n", ignore_index: int = -100):
        self.encode, self.pad_id, self.end, self.ignore_index = encode, pad_id, end, ignore_index

    def pair(self, example: Mapping[str, str]) -> tuple[list[int], list[int]]:
        return self.encode(format_instruction(example)), self.encode(example["output"] + self.end)

    def __call__(self, examples: Iterable[Mapping[str, str]]) -> tuple[Tensor, Tensor]:
        return collate_instructions([self.pair(ex) for ex in examples], self.pad_id, self.ignore_index)


def exact_match_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError("exact_match_accuracy needs at least one prediction")
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references)


# ------------------------------------------------------------------ LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + (alpha / r) * x A^T B^T``.

    ``A`` has shape (r, in_features) and starts random (Kaiming-uniform, like ``nn.Linear``);
    ``B`` has shape (out_features, r) and starts at **zero**, so at initialisation the layer
    computes exactly what ``base`` computes. Only ``A`` and ``B`` are trainable.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
        if not alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {alpha!r}")
        self.base, self.r, self.alpha = base, r, float(alpha)
        self.scale = self.alpha / r
        for p in self.base.parameters():
            p.requires_grad_(False)
        weight = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale

    def delta_weight(self) -> Tensor:
        """The update ``(alpha / r) * B @ A``, shaped like ``base.weight`` (out, in)."""
        return self.scale * (self.B @ self.A)

    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + (alpha / r) * B @ A`` that computes the same function."""
        base = self.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                merged.bias.copy_(base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def add_lora(model: nn.Module, r: int, alpha: float,
             target_names: Sequence[str] = ("c_attn", "c_proj", "c_fc")) -> nn.Module:
    """Freeze every parameter of ``model``, then wrap each ``nn.Linear`` whose name is in ``target_names``.

    A layer matches when the last part of its dotted name (``c_attn`` in
    ``transformer.h.0.attn.c_attn``) is one of ``target_names``. The model is changed in place
    and returned; only the new ``A`` and ``B`` matrices are trainable. To train another part as
    well (a classification head, say), set its ``requires_grad`` back to True afterwards.
    """
    if isinstance(target_names, str):
        target_names = (target_names,)
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in target_names]
    if not targets:
        raise ValueError(f"add_lora: no nn.Linear layer of the model is named one of {list(target_names)}")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` in ``model`` by its merged ``nn.Linear`` (in place; returned)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.merge())
    return model


def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameter entries (``requires_grad``); shared (tied) tensors count once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_trainable expects an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
