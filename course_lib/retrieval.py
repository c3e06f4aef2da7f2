"""Finding the passages that match a question: defined in the projects appendix (the course FAQ chatbot)
and used again by chapter 11's chatbot memory.

A small model cannot hold a whole book, or a whole conversation, in its context window. Retrieval
keeps the text outside the model and, for each question, puts back only the few passages that look
most like it. "Look like" is measured here in the simplest way that works well:

1. :func:`words` -- cut a text into lower-case words (letters, digits and apostrophes);
2. :class:`TfidfIndex` -- describe each passage by how often it uses each word (term frequency),
   with rare words weighing more than common ones (inverse document frequency: "attention" says
   more about a passage than "the"), and rank passages by the cosine of the angle between their
   vector and the question's.

No model and no training: the ranking depends only on shared words. A question that uses other
words for the same idea ("cost" vs "price") misses; embeddings from a trained model fix that, at
the price of a model (see chapter 11).

Shapes use D = documents and V = vocabulary (distinct words seen).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Hit", "TfidfIndex", "words"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """The lower-case words of ``text``: runs of letters and digits, with an apostrophe inside kept
    ("don't", "model's"); punctuation and spaces separate words and are dropped."""
    if not isinstance(text, str):
        raise TypeError(f"words() needs a string, got {type(text).__name__}")
    return _WORD.findall(text.lower())


class Hit(NamedTuple):
    """One search result: the passage's position in the index, its score in [0, 1], and its text."""

    index: int
    score: float
    text: str


class TfidfIndex:
    """Passages described by TF-IDF word vectors, searched by cosine similarity.

    The weight of word ``w`` in a passage is ``count(w) * idf(w)`` with the smoothed
    ``idf(w) = log((1 + D) / (1 + df(w))) + 1``, where ``df(w)`` is the number of passages that use
    ``w``: a word in every passage keeps weight ``count`` times 1, a rare word weighs up to about
    ``log D`` times more. ``stop_words`` are ignored entirely. Passages can be added at any time
    (:meth:`add`); the weights are recomputed from the counts at the next search, so the ranking is
    the same as for an index built from all the passages at once.
    """

    def __init__(self, passages: Iterable[str] = (), stop_words: Iterable[str] = ()):
        self.stop_words = frozenset(w.lower() for w in stop_words)
        self.passages: list[str] = []
        self._counts: list[Counter] = []
        self._vocab: dict[str, int] = {}
        self._idf: Tensor | None = None  # (V,), recomputed lazily after add()
        self._matrix: Tensor | None = None  # (D, V) unit rows, rebuilt lazily after add()
        for passage in passages:
            self.add(passage)

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"TfidfIndex(passages={len(self)}, vocabulary={len(self._vocab)})"

    def _terms(self, text: str) -> Counter:
        return Counter(w for w in words(text) if w not in self.stop_words)

    def add(self, passage: str) -> int:
        """Add one passage; returns its index (its position in ``self.passages``)."""
        counts = self._terms(passage)  # raises TypeError for a non-string
        for w in counts:
            self._vocab.setdefault(w, len(self._vocab))
        self.passages.append(passage)
        self._counts.append(counts)
        self._idf = self._matrix = None
        return len(self.passages) - 1

    def idf(self) -> Tensor:
        """(V,) inverse document frequency of every word in the vocabulary, in vocabulary order."""
        if self._idf is None:
            df = Counter(w for counts in self._counts for w in counts)  # passages using each word
            df_vector = torch.tensor([float(df[w]) for w in self._vocab])  # (V,), vocabulary order
            self._idf = torch.log((1 + len(self)) / (1 + df_vector)) + 1
        return self._idf

    def _weights(self, counts: Counter, idf: Tensor) -> Tensor:
        v = torch.zeros(len(self._vocab))  # (V,); words outside the vocabulary cannot match anything
        for w, c in counts.items():
            j = self._vocab.get(w)
            if j is not None:
                v[j] = c * idf[j]
        return v

    def vector(self, text: str) -> Tensor:
        """(V,) unit-length TF-IDF vector of ``text`` (all zeros when it shares no word with the index)."""
        v = self._weights(self._terms(text), self.idf())
        norm = v.norm()
        return v / norm if norm > 0 else v

    def _passage_matrix(self) -> Tensor:
        if self._matrix is None:
            idf = self.idf()
            rows = [self._weights(c, idf) for c in self._counts]
            m = torch.stack(rows) if rows else torch.zeros(0, len(self._vocab))  # (D, V)
            self._matrix = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self._matrix

    def scores(self, query: str) -> Tensor:
        """(D,) cosine similarity of ``query`` to every passage, each in [0, 1]."""
        return self._passage_matrix() @ self.vector(query)  # (D, V) @ (V,) -> (D,)

    def search(self, query: str, k: int = 3, exclude: Sequence[int] = ()) -> list[Hit]:
        """The ``k`` passages most similar to ``query``, best first; passages in ``exclude`` and
        passages sharing no word with the query (score 0) are left out, so fewer than ``k`` may come back.
        Ties keep the earlier passage first."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not len(self):
            return []
        scores = self.scores(query).clone()
        if exclude:
            scores[torch.as_tensor(list(exclude), dtype=torch.long)] = -1.0
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [Hit(i, float(scores[i]), self.passages[i]) for i in order[:k] if scores[i] > 0]


def _demo() -> None:  # pragma: no cover - a quick look: python -m course_lib.retrieval
    index = TfidfIndex(["The cat sat on the mat.", "Attention compares queries with keys.",
                        "A tokenizer cuts text into tokens."], stop_words={"the", "a", "on", "with", "into"})
    for hit in index.search("how does attention use keys?"):
        print(f"{hit.score:.3f}  {hit.text}")
    print(f"idf range {float(index.idf().min()):.2f}..{float(index.idf().max()):.2f}, log D = {math.log(len(index)):.2f}")


if __name__ == "__main__":  # pragma: no cover
    _demo()
