"""What the project notebooks share: defined in the appendix "Projects".

Each project trains a small GPT (chapter 6) with chapter 7's :class:`~course_lib.trainer.Trainer`
on some text, measures it in bits per character, and samples from it. The pieces:

1. :func:`small_gpt` -- chapter 7's GPT, made smaller, from a seed.
2. :func:`train_model` -- the Trainer with the course's recipe (AdamW, warm-up, cosine decay,
   clipping), float32, no progress bar; returns the model, its history and the wall time.
3. :func:`boundary_windows` -- training windows that start at a boundary token (the start of a
   name, of a poem), so a model sees documents from their first token, as it will when it writes.
4. :func:`summed_nats` -- the total next-token loss over a long held-out text (chapter 9's tokenizer
   comparison measures the same way), and :func:`document_nats` over separate short documents.
5. :func:`bits_per_character` -- nats over any tokens turned into bits per character of the text they
   cover: the unit that compares models whatever their tokenizer.
6. :func:`sample_documents` -- chapter 7's :func:`~course_lib.generation.generate` (with chapter 9's KV
   cache when the text fits the context), cut at the end token.

Shapes use B = batch, T = tokens, V = vocabulary size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from course_lib.generation import generate
from course_lib.gpt import GPT, GPTConfig
from course_lib.kv_cache import generate_cached
from course_lib.trainer import Trainer, TrainerConfig, TrainingHistory, language_model_loss

__all__ = [
    "Trained",
    "bits_per_character",
    "boundary_windows",
    "document_nats",
    "sample_documents",
    "small_gpt",
    "summed_nats",
    "train_model",
]


def small_gpt(vocab_size: int, context_length: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
              seed: int = 0) -> GPT:
    """Chapter 7's character GPT at project size (defaults: width 64, 2 layers, 4 heads), weights from ``seed``.

    The exact GELU (``activation="gelu"``) is faster on a CPU than GPT-2's tanh form; these models
    never load GPT-2 weights, so nothing ties them to it.
    """
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=d_model, n_layers=n_layers,
                         n_heads=n_heads, dropout=0.0, fused_attention=True, activation="gelu"))


@dataclass
class Trained:
    """A model after :func:`train_model`: the model itself, the trainer's history, and the training wall time."""

    model: nn.Module
    history: TrainingHistory
    seconds: float


def train_model(model: nn.Module, train_batch: Callable[[int], tuple[Tensor, Tensor]], steps: int,
                max_lr: float = 3e-3, val_batch: Callable[[int], tuple[Tensor, Tensor]] | None = None,
                eval_batches: int = 4) -> Trained:
    """Train ``model`` for ``steps`` steps on ``train_batch(step)`` with chapter 7's recipe.

    AdamW (weight decay 0.1 on matrices), 5 % linear warm-up, cosine decay to ``max_lr / 10``,
    gradient clipping at 1, float32 (the same numbers on every CPU), no progress bar. With
    ``val_batch`` the validation loss is measured 4 times, evenly spaced, the last at the end.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    config = TrainerConfig(max_steps=steps, max_lr=max_lr, min_lr=max_lr / 10, warmup_steps=max(1, steps // 20),
                           precision="fp32", eval_interval=max(1, steps // 4), eval_batches=eval_batches,
                           progress=False)
    trainer = Trainer(model, language_model_loss, train_batch, config, val_batch=val_batch)
    start = time.perf_counter()
    history = trainer.fit()
    return Trained(model.eval(), history, time.perf_counter() - start)


def boundary_windows(token_ids: Tensor, boundary_id: int, batch_size: int, context_length: int,
                     seed: int) -> tuple[Tensor, Tensor]:
    """``batch_size`` (input, target) windows of ``context_length`` tokens that START at a ``boundary_id`` token.

    Like :func:`course_lib.datasets.random_windows`, but only the positions of the boundary token
    (the newline before a name, the blank line before a poem) may start a window, each equally
    likely; the window runs on over the next documents. Returns two (B, T) int64 tensors.
    """
    if token_ids.dim() != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {tuple(token_ids.shape)}")
    starts = (token_ids[: len(token_ids) - context_length] == boundary_id).nonzero().squeeze(1)  # (S,)
    if len(starts) == 0:
        raise ValueError(f"no boundary token {boundary_id} leaves room for a window of {context_length} tokens")
    generator = torch.Generator().manual_seed(seed)
    chosen = starts[torch.randint(len(starts), (batch_size, 1), generator=generator)]  # (B, 1)
    rows = token_ids[chosen + torch.arange(context_length + 1)]  # (B, T + 1)
    return rows[:, :-1], rows[:, 1:]


@torch.no_grad()
def summed_nats(model: nn.Module, token_ids: Tensor, context_length: int, batch_size: int = 128) -> tuple[float, int]:
    """Total next-token loss (nats) over ``token_ids``, and how many tokens were predicted.

    The text is read in non-overlapping windows of ``context_length`` tokens, as chapter 9's
    tokenizer comparison (``scripts/compare_llama_gpt.py``) reads it; every token but the first is
    predicted once (a last, shorter window takes the tail), so the count is ``len(token_ids) - 1``.
    """
    if token_ids.dim() != 1 or len(token_ids) < 2:
        raise ValueError(f"token_ids must be 1-D with at least 2 tokens, got shape {tuple(token_ids.shape)}")
    model.eval()
    n = (len(token_ids) - 1) // context_length
    x = token_ids[: n * context_length].view(n, context_length)  # (N, T)
    y = token_ids[1 : n * context_length + 1].view(n, context_length)  # (N, T)
    total = 0.0
    for i in range(0, n, batch_size):
        logits = model(x[i : i + batch_size])  # (b, T, V)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i : i + batch_size].reshape(-1),
                                 reduction="sum").item()  # (b*T, V) against (b*T,)
    tail = token_ids[n * context_length :]  # the last tokens, fewer than context_length + 1
    if len(tail) >= 2:
        logits = model(tail[None, :-1])  # (1, t, V)
        total += F.cross_entropy(logits[0], tail[1:], reduction="sum").item()
    return total, len(token_ids) - 1


@torch.no_grad()
def document_nats(model: nn.Module, documents: Sequence[Sequence[int]], batch_size: int = 512) -> tuple[float, int]:
    """Total next-token loss (nats) over separate documents, each read alone from its first token.

    Each document is a list of ids that starts with a start token (which is not predicted) and
    usually ends with an end token (which is): ``[boundary, e, m, m, a, boundary]`` scores 5
    predictions. Documents are padded to a common length; padded positions are not counted.
    Returns ``(total nats, number of predicted tokens)``.
    """
    if not documents or any(len(doc) < 2 for doc in documents):
        raise ValueError("document_nats needs documents of at least 2 tokens (a start token and one to predict)")
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(documents), batch_size):
        chunk = documents[i : i + batch_size]
        width = max(len(doc) for doc in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, L), padded with id 0
        for row, doc in enumerate(chunk):
            ids[row, : len(doc)] = torch.as_tensor(list(doc), dtype=torch.long)
        lengths = torch.tensor([len(doc) for doc in chunk])  # (B,)
        targets = ids[:, 1:].masked_fill(torch.arange(1, width) >= lengths[:, None], -100)  # (B, L-1): -100 = padding
        logits = model(ids[:, :-1])  # (B, L-1, V)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=-100, reduction="sum").item()  # (B*(L-1), V) against (B*(L-1),)
        count += int((targets != -100).sum())
    return total, count


def bits_per_character(nats: float, characters: int) -> float:
    """Turn a total loss in nats into bits per character of the text it predicted: ``nats / ln 2 / characters``.

    The loss of a text in bits is the length of its shortest code under the model, so dividing by
    the number of characters gives a number that does not depend on how the text was cut into tokens.
    """
    if characters < 1:
        raise ValueError(f"characters must be at least 1, got {characters}")
    return nats / math.log(2) / characters


def sample_documents(model: nn.Module, prompt_ids: Sequence[int], end_id: int, n: int, max_new_tokens: int,
                     temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> list[list[int]]:
    """``n`` continuations of ``prompt_ids``, each cut before its first ``end_id`` (the prompt is not included).

    A continuation that never produced ``end_id`` within ``max_new_tokens`` is returned whole;
    the caller can tell it apart, as it then has ``max_new_tokens`` ids. Sampling uses a
    ``torch.Generator`` seeded with ``seed``: the same seed gives the same samples. When ``model`` is a
    :class:`~course_lib.gpt.GPT` and prompt plus ``max_new_tokens`` fit its context, chapter 9's
    :func:`~course_lib.kv_cache.generate_cached` draws the same tokens much faster.
    """
    if n < 1 or max_new_tokens < 1:
        raise ValueError(f"n and max_new_tokens must be at least 1, got {n} and {max_new_tokens}")
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: start with the boundary token at least")
    context_length = model.config.context_length
    start = torch.tensor([list(prompt_ids)] * n, dtype=torch.long)  # (n, P)
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, GPT) and len(prompt_ids) + max_new_tokens <= context_length:
        # chapter 9's KV cache: the same tokens as generate(), one new token per step through the model
        out = generate_cached(model.eval(), start, max_new_tokens, temperature=temperature, top_k=top_k,
                              generator=generator)
    else:
        out = generate(model.eval(), start, max_new_tokens, context_length, temperature=temperature, top_k=top_k,
                       generator=generator)
    out = out[:, len(prompt_ids):]  # (n, max_new_tokens): the prompt removed
    samples = []
    for row in out.tolist():
        samples.append(row[: row.index(end_id)] if end_id in row else row)
    return samples
