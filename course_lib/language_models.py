"""Language models that predict the next token: defined in chapter 3 (predicting the next token).

The story, in the order the chapter tells it:

1. :class:`BigramCounts` -- count which character follows which (with a boundary token ``.``
   marking the start and the end of each word), turn the counts into probabilities (with add-k
   smoothing), score texts by their negative log-likelihood, and sample new words.
2. :func:`negative_log_likelihood` and :func:`perplexity` -- how surprised a model is by the
   tokens that really came next, for any model that outputs logits.
3. :class:`NeuralBigram` -- the same bigram model as one table of logits trained by gradient
   descent; it learns the (smoothed) count probabilities.
4. :func:`sample_with_temperature` -- pick the next token; the temperature sharpens or flattens
   the distribution (0 = always the most likely token).
5. :func:`next_token_examples` -- the training pairs of a model with a context window: every
   position of a text, with the ``context_length`` ids before it (padded on the left at the start).
6. :class:`TinyLLM` -- a character-level MLP that looks at ``context_length`` characters at once,
   configured by :class:`TinyLLMConfig`, with :meth:`TinyLLM.generate`.

Shapes use B = batch, T = tokens (context), V = vocabulary size, E = embedding width,
H = hidden width.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "BigramCounts",
    "NeuralBigram",
    "TinyLLM",
    "TinyLLMConfig",
    "negative_log_likelihood",
    "next_token_examples",
    "perplexity",
    "sample_with_temperature",
]


def _check_integer_ids(name: str, ids: Tensor) -> None:
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be integer token ids (e.g. torch.long), got dtype {ids.dtype}")


# ---------------------------------------------------------------------------------------------
# 1. Counting bigrams
# ---------------------------------------------------------------------------------------------


class BigramCounts:
    """Character bigram model from counts: P(next | current) = (count + k) / (row total + k * V).

    The vocabulary is the ``boundary`` token (id 0) followed by the sorted characters of
    ``texts``. Each text is read as ``boundary, c1, ..., cn, boundary``: the first pair says
    which characters start words, the last one which end them. So ``["ab", "b"]`` gives the pairs
    ``.a ab b.`` and ``.b b.``.

    ``counts[i, j]`` (an int64 (V, V) tensor) is how often id ``j`` follows id ``i``.
    ``smoothing`` is k of add-k smoothing: k imaginary extra sightings of every pair, so that no
    pair has probability 0 (one unseen pair would make the likelihood of a whole text 0 and its
    negative log-likelihood infinite). ``boundary`` may be any string that is not a character of
    the texts.
    """

    def __init__(self, texts: Iterable[str], smoothing: float = 0.0, boundary: str = "."):
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, e.g. ['emma', 'olivia'], not one string")
        texts = list(texts)
        if not texts:
            raise ValueError("BigramCounts needs at least one text to count")
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings, e.g. ['emma', 'olivia']")
        if not math.isfinite(smoothing) or smoothing < 0:
            raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
        if not boundary:
            raise ValueError("boundary must be a non-empty string")
        characters = sorted(set("".join(texts)))
        if boundary in characters:
            raise ValueError(
                f"the boundary token {boundary!r} is also a character of the texts; "
                f"pick another one, e.g. boundary='<>'"
            )
        self.boundary = boundary
        self.smoothing = float(smoothing)
        self.itos: list[str] = [boundary] + characters  # id -> token
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}  # token -> id
        inputs, targets = self.pairs(texts)
        counts = torch.zeros(self.vocab_size * self.vocab_size, dtype=torch.long)
        counts.index_add_(0, inputs * self.vocab_size + targets, torch.ones_like(inputs))  # flat (V*V,)
        self.counts = counts.view(self.vocab_size, self.vocab_size)  # (V*V,) -> (V, V)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """The ids of ``boundary + text + boundary``."""
        unknown = next((c for c in text if c not in self.stoi), None)
        if unknown is not None:
            raise ValueError(f"character {unknown!r} of {text!r} is not in the vocabulary {self.itos}")
        return [0] + [self.stoi[c] for c in text] + [0]

    def pairs(self, texts: Iterable[str]) -> tuple[Tensor, Tensor]:
        """All bigrams of the texts as two int64 tensors ``(inputs, targets)`` of equal length.

        These are the training examples of :class:`NeuralBigram`.
        """
        inputs: list[int] = []
        targets: list[int] = []
        for text in texts:
            ids = self.encode(text)
            inputs += ids[:-1]
            targets += ids[1:]
        return torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)

    def probabilities(self) -> Tensor:
        """The (V, V) float table P[i, j] = P(next = j | current = i); each row sums to 1."""
        smoothed = self.counts.double() + self.smoothing  # (V, V)
        totals = smoothed.sum(dim=1, keepdim=True)  # (V, 1)
        if torch.any(totals == 0):  # only possible without smoothing: a token never followed by anything
            row = int((totals.squeeze(1) == 0).nonzero()[0])
            raise ValueError(f"token {self.itos[row]!r} is never followed by anything; use smoothing > 0")
        return (smoothed / totals).to(torch.get_default_dtype())

    def nll(self, texts: Iterable[str]) -> float:
        """Mean negative log-likelihood per predicted token (each text's end included), in nats.

        It is ``inf`` when a pair of ``texts`` has probability 0 (unseen and ``smoothing == 0``).
        ``math.exp`` of it is the perplexity.
        """
        inputs, targets = self.pairs(texts)
        if len(inputs) == 0:
            raise ValueError("nll needs at least one text")
        log_probs = self.probabilities().double().log()  # (V, V); log 0 = -inf
        return float(-log_probs[inputs, targets].mean())

    def sample(self, generator: torch.Generator | None = None, max_length: int = 50) -> str:
        """One new text: start after the boundary, draw the next character until the boundary comes.

        Stops after ``max_length`` characters if the boundary has not been drawn. Pass a seeded
        ``torch.Generator`` to get the same text again.
        """
        probs = self.probabilities()
        current, out = 0, []
        while len(out) < max_length:
            current = int(torch.multinomial(probs[current], 1, generator=generator))
            if current == 0:
                break
            out.append(self.itos[current])
        return "".join(out)

    def __repr__(self) -> str:
        pairs = int(self.counts.sum())
        return f"BigramCounts(vocab_size={self.vocab_size}, pairs={pairs}, smoothing={self.smoothing})"


# ---------------------------------------------------------------------------------------------
# 2. Scoring a model: negative log-likelihood and perplexity
# ---------------------------------------------------------------------------------------------


def negative_log_likelihood(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean of -log P(target) over all positions, in nats; a scalar tensor.

    ``logits`` is (..., V) (one unnormalised score per vocabulary entry), ``targets`` is (...)
    with the id that really came next. Same value as
    ``torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))``.
    A model that gives every token the same probability scores log(V).
    """
    _check_integer_ids("targets", targets)
    if logits.dim() < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits must be (..., vocab) with one row per target: got logits {tuple(logits.shape)} "
            f"and targets {tuple(targets.shape)}"
        )
    if targets.numel() == 0:
        raise ValueError("negative_log_likelihood needs at least one target")
    vocab = logits.shape[-1]
    if targets.min() < 0 or targets.max() >= vocab:
        raise ValueError(
            f"targets must be ids in 0 .. {vocab - 1}, got values from {int(targets.min())} to {int(targets.max())}"
        )
    log_probs = torch.log_softmax(logits, dim=-1)  # (..., V)
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (...) log P(target)
    return -picked.mean()


def perplexity(logits: Tensor, targets: Tensor) -> Tensor:
    """exp(mean negative log-likelihood): the number of tokens the model is "choosing between".

    A uniform model over V tokens has perplexity V; a perfect model has 1. For a number you
    already have (e.g. :meth:`BigramCounts.nll`), use ``math.exp(nll)``.
    """
    return torch.exp(negative_log_likelihood(logits, targets))


# ---------------------------------------------------------------------------------------------
# 3. The bigram model as a neural network
# ---------------------------------------------------------------------------------------------


class NeuralBigram(nn.Module):
    """A (V, V) table of logits: row i, softmax-ed, is P(next | current = i).

    Written as an ``nn.Embedding``: looking up row i is the same as multiplying the one-hot
    vector of i by the table (a linear layer without bias), just faster. Trained by gradient
    descent on the pairs of :meth:`BigramCounts.pairs`, its probabilities approach the count
    probabilities. :meth:`loss` with ``smoothing=k`` adds k imaginary sightings of every pair to
    the data, so its minimum is exactly the add-k smoothed count table.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
        self.vocab_size = vocab_size
        self.logits = nn.Embedding(vocab_size, vocab_size)
        nn.init.zeros_(self.logits.weight)  # start from the uniform distribution

    def forward(self, idx: Tensor) -> Tensor:
        """(...) current ids -> (..., V) logits of the next id."""
        _check_integer_ids("idx", idx)
        return self.logits(idx)

    def probabilities(self) -> Tensor:
        """The (V, V) table P[i, j] = P(next = j | current = i); each row sums to 1."""
        return torch.softmax(self.logits.weight, dim=-1)

    def loss(self, inputs: Tensor, targets: Tensor, smoothing: float = 0.0) -> Tensor:
        """Mean NLL of the pairs, plus ``smoothing`` pseudo-observations of each of the V*V pairs.

        Total -log-likelihood of data and pseudo-pairs, divided by their number
        (``len(inputs) + smoothing * V * V``), so it stays a per-pair average.
        """
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        data_total = negative_log_likelihood(self(inputs), targets) * len(inputs)
        if smoothing == 0:
            return data_total / len(inputs)
        pseudo_total = -torch.log_softmax(self.logits.weight, dim=-1).sum() * smoothing
        return (data_total + pseudo_total) / (len(inputs) + smoothing * self.vocab_size**2)


# ---------------------------------------------------------------------------------------------
# 4. Sampling with a temperature
# ---------------------------------------------------------------------------------------------


def sample_with_temperature(
    logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one id from softmax(logits / temperature) per row: (..., V) -> (...) int64.

    ``temperature`` 1 samples the model's own distribution; below 1 sharpens it (likely tokens
    get likelier), above 1 flattens it towards uniform. As the temperature goes to 0 all the
    probability goes to the largest logit, so ``temperature == 0`` means greedy decoding:
    ``argmax`` (no randomness, the generator is not used). A negative, infinite or NaN
    temperature raises a ValueError.
    """
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must be (..., vocab) with vocab >= 1, got {tuple(logits.shape)}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Subtract each row's largest logit first: the scaled logits are then <= 0, so even a tiny
    # temperature gives 0 and -inf (probability 1 and 0), never inf - inf = NaN.
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (..., V)
    probs = torch.softmax(shifted / temperature, dim=-1)  # (..., V)
    flat = probs.reshape(-1, probs.shape[-1])  # (..., V) -> (N, V): multinomial wants 2-D
    draws = torch.multinomial(flat, 1, generator=generator)  # (N, 1)
    return draws.view(logits.shape[:-1])  # (N, 1) -> (...)


# ---------------------------------------------------------------------------------------------
# 5. Training pairs for a context window
# ---------------------------------------------------------------------------------------------


def next_token_examples(ids: Sequence[int] | Tensor, context_length: int, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Every (context, next id) pair of one sequence: ``(contexts, targets)``, (N, T) and (N,) int64.

    Row ``t`` predicts ``targets[t] = ids[t]`` from the ``context_length`` ids just before it,
    ``ids[t - T : t]``, with ``pad_id`` filling the window on the left where the sequence has not
    started yet (so the first row is all ``pad_id``). N = ``len(ids)``: every id is a target once.
    This is what :meth:`TinyLLM.generate` sees when it starts from nothing. For the names of
    chapter 3, ``ids`` is one name followed by the end marker, e.g. ``emma.``, and ``pad_id`` is
    the id of that marker: ``...`` -> ``e``, ``..e`` -> ``m``, ..., ``mma`` -> ``.``.
    """
    if isinstance(ids, Tensor):
        _check_integer_ids("ids", ids)
        if ids.dim() != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
        ids = ids.long()
    else:
        if isinstance(ids, str):
            raise TypeError("ids must be token ids, not a string; encode the text first")
        ids = list(ids)
        bad = next((x for x in ids if isinstance(x, bool) or not isinstance(x, int)), None)
        if bad is not None:
            raise TypeError(f"ids must be integer token ids, got {bad!r}")
        ids = torch.tensor(ids, dtype=torch.long)
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be an integer >= 1, got {context_length!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a token id (an integer >= 0), got {pad_id!r}")
    padded = torch.cat([torch.full((context_length,), pad_id, dtype=torch.long), ids])  # (T + N,)
    # window t of the padded sequence is padded[t : t + T] = the T ids before ids[t]
    contexts = padded.unfold(0, context_length, 1)[: len(ids)]  # (N + 1, T) -> (N, T)
    return contexts.contiguous(), ids.clone()


# ---------------------------------------------------------------------------------------------
# 6. A tiny MLP language model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyLLMConfig:
    """Everything :class:`TinyLLM` needs to know.

    vocab_size: number of token ids (V); context_length: how many previous tokens it looks at
    (T); d_embed: width of each token's vector (E); d_hidden: width of the hidden layer (H);
    activation: ``"tanh"`` or ``"gelu"``; pad_id: the id that fills the window on the left when
    fewer than ``context_length`` tokens are known (at the start of :meth:`TinyLLM.generate`).
    """

    vocab_size: int
    context_length: int = 8
    d_embed: int = 16
    d_hidden: int = 128
    activation: str = "tanh"
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_embed", "d_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.activation not in ("tanh", "gelu"):
            raise ValueError(f"activation must be 'tanh' or 'gelu', got {self.activation!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be an id in 0 .. {self.vocab_size - 1}, got {self.pad_id}")


class TinyLLM(nn.Module):
    """Character-level MLP language model: the last T tokens -> logits of the next one.

    (B, T) ids -> embed each token -> (B, T, E) -> concatenate -> (B, T*E) -> linear + tanh/GELU
    -> (B, H) -> linear -> (B, V) logits. Unlike a bigram it sees several previous characters,
    but each position has its own weights in the hidden layer, and the window has a fixed size.
    """

    def __init__(self, config: TinyLLMConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_embed)
        self.hidden = nn.Linear(config.context_length * config.d_embed, config.d_hidden)
        self.activation = nn.Tanh() if config.activation == "tanh" else nn.GELU()
        self.output = nn.Linear(config.d_hidden, config.vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        """(B, T) ids, T = ``context_length`` exactly -> (B, V) logits of the token after them."""
        cfg = self.config
        _check_integer_ids("idx", idx)
        if idx.dim() != 2 or idx.shape[1] != cfg.context_length:
            raise ValueError(f"idx: expected shape (batch, {cfg.context_length}), got {tuple(idx.shape)}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= cfg.vocab_size):
            raise ValueError(
                f"idx must be ids in 0 .. {cfg.vocab_size - 1}, got values from {int(idx.min())} to {int(idx.max())}"
            )
        vectors = self.token_embedding(idx)  # (B, T, E)
        # (B, T, E) -> (B, T*E): the T vectors of a window side by side, one long vector
        flat = vectors.view(idx.shape[0], cfg.context_length * cfg.d_embed)
        return self.output(self.activation(self.hidden(flat)))  # (B, H) -> (B, V)

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Append ``max_new_tokens`` sampled ids to each row of ``idx``: (B, T0) -> (B, T0 + new).

        Each step looks at the last ``context_length`` ids (padded on the left with ``pad_id``
        when fewer are known; ``T0`` may be 0) and draws the next one with
        :func:`sample_with_temperature` (``temperature=0`` is greedy).
        """
        cfg = self.config
        _check_integer_ids("idx", idx)
        if idx.dim() != 2:
            raise ValueError(f"idx: expected shape (batch, tokens), got {tuple(idx.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        pad = torch.full((idx.shape[0], cfg.context_length), cfg.pad_id, dtype=torch.long, device=idx.device)
        out = idx.long()
        for _ in range(max_new_tokens):
            window = torch.cat([pad, out], dim=1)[:, -cfg.context_length :]  # (B, T)
            next_id = sample_with_temperature(self(window), temperature, generator)  # (B,)
            out = torch.cat([out, next_id.unsqueeze(1)], dim=1)  # (B, T0 + k + 1)
        return out
