"""Tokenizers: defined in chapter 4 (tokenization, from characters to byte-pair encoding).

The story, in the order the chapter tells it:

1. :class:`CharTokenizer` -- one id per distinct character of a training text.
2. :class:`BPETokenizer` -- byte-level byte-pair encoding trained from scratch: start from the
   256 byte values, then repeatedly give the most frequent adjacent pair of ids a new id. Because
   it starts from bytes, ``decode(encode(text)) == text`` for ANY text, even characters it never
   saw in training.
3. :class:`GPT2Tokenizer` -- the same algorithm with GPT-2's published merges
   (``gpt2/encoder.json`` and ``gpt2/vocab.bpe``, found with :mod:`course_lib.data`); it gives
   exactly the ids of ``tiktoken.get_encoding("gpt2")``.
4. :class:`WordTokenizer` -- one id per frequent word (projects appendix), with an unknown-word token.

The one BPE step, in small public functions the chapter builds first: :func:`count_pairs`
(adjacent pairs and their counts), :func:`most_frequent_pair` (the pair to merge, with the same
tie-breaking as :meth:`BPETokenizer.train`) and :func:`merge_pair` (replace each occurrence,
left to right).

All three tokenizers have ``encode(text) -> list[int]`` and ``decode(ids) -> str``. The two BPE tokenizers
first cut text into chunks with :data:`GPT2_SPLIT_PATTERN` (words with their leading space,
numbers, punctuation runs, whitespace), so no token ever spans, e.g., the end of one word and the
start of the next. That pattern uses ``\\p{L}`` (any letter) and ``\\p{N}`` (any digit), which
Python's ``re`` lacks: it needs the ``regex`` package.

Special tokens such as ``"<|endoftext|>"`` are single ids that no merge can produce. ``encode``
only treats them as special when asked (``allowed_special="all"`` or a set of names); otherwise
the characters ``<|endoftext|>`` are encoded as ordinary text -- as GPT-2 and ``tiktoken``'s
``encode_ordinary`` do -- so text from a user cannot smuggle in a control token.
"""

from __future__ import annotations

import functools
import heapq
import json
import operator
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path

import regex

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "WORD_SPLIT_PATTERN",
    "WordTokenizer",
    "bytes_to_unicode",
    "count_pairs",
    "merge_pair",
    "most_frequent_pair",
]

#: GPT-2's pre-tokenization: contractions, optional space + letters, optional space + digits,
#: optional space + other symbols, then whitespace (a run of spaces leaves its last space to the
#: next word, so " world" stays one chunk).
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


# ---------------------------------------------------------------------------------------------
# 1. Characters
# ---------------------------------------------------------------------------------------------


class CharTokenizer:
    """One id per distinct character of ``text``, in sorted order.

    Unknown characters: by default :meth:`encode` raises a ``ValueError`` that names the
    character -- silently replacing it would hide a bug (a test set with characters the training
    set lacks). Pass ``unk_token="<unk>"`` to map every unknown character to one extra id
    instead (the last id); ``decode`` then writes ``unk_token`` in their place, so
    ``decode(encode(text))`` is no longer ``text``.
    """

    def __init__(self, text: str, unk_token: str | None = None):
        self.itos: list[str] = sorted(set(text))  # id -> character
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(self.itos)}  # character -> id
        self.unk_token = unk_token
        self.unk_id: int | None = None
        if unk_token is not None:
            if unk_token in self.stoi:
                raise ValueError(f"unk_token {unk_token!r} is already a character of the text")
            self.unk_id = len(self.itos)
            self.itos.append(unk_token)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        if self.unk_id is not None:
            return [self.stoi.get(ch, self.unk_id) for ch in text]
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as err:
            pos = next(i for i, ch in enumerate(text) if ch not in self.stoi)
            raise ValueError(
                f"character {text[pos]!r} (U+{ord(text[pos]):04X}) at position {pos} is not in "
                f"the vocabulary of {self.vocab_size} characters; build the tokenizer from a text "
                f"that contains it, or pass unk_token='<unk>'"
            ) from err

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# The two steps every BPE tokenizer shares
# ---------------------------------------------------------------------------------------------


def count_pairs(ids: Sequence[Hashable]) -> Counter:
    """How often each adjacent pair occurs in ``ids``: ``Counter({(a, b): count})``.

    Every position counts, so overlapping pairs count twice: ``[1, 1, 1]`` has ``(1, 1)`` twice
    (although only one of them can be merged, see :func:`merge_pair`).
    """
    return Counter(zip(ids, ids[1:]))


def most_frequent_pair(ids: Sequence[Hashable]) -> tuple | None:
    """The adjacent pair that occurs most often in ``ids``; ``None`` if there is no pair.

    Ties go to the SMALLEST pair, comparing ``(a, b)`` as tuples (first ``a``, then ``b``), which
    is the rule of :meth:`BPETokenizer.train`: the result never depends on where a pair first
    occurs, so training is deterministic.
    """
    counts = count_pairs(ids)
    if not counts:
        return None
    return min(counts, key=lambda pair: (-counts[pair], pair))


def merge_pair(ids: Sequence[Hashable], pair: tuple, new_id: Hashable) -> list:
    """Replace each occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right.

    A new list is returned (``ids`` is not changed). Occurrences do not overlap: merging
    ``(1, 1)`` in ``[1, 1, 1]`` gives ``[new_id, 1]``, as the scan takes the first two and moves on.
    """
    if len(pair) != 2:
        raise ValueError(f"pair must have exactly 2 items, got {pair!r}")
    return _merge(list(ids), tuple(pair), new_id)


def _merge(parts: list, pair: tuple, new: Hashable) -> list:
    """Replace each occurrence of ``pair`` in ``parts``, scanning left to right, by ``new``."""
    first, second = pair
    out, i, n = [], 0, len(parts)
    while i < n:
        if i + 1 < n and parts[i] == first and parts[i + 1] == second:
            out.append(new)
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def _apply_merges(parts: list, rank: dict, join: Callable[[tuple], Hashable]) -> list:
    """Encode one chunk: keep merging the adjacent pair that was learned EARLIEST (lowest rank).

    Replaying merges in training order is what makes encoding agree with training.
    """
    never = float("inf")
    while len(parts) > 1:
        best = min(zip(parts, parts[1:]), key=lambda pair: rank.get(pair, never))
        if best not in rank:  # no adjacent pair was ever merged: done
            break
        parts = _merge(parts, best, join(best))
    return parts


@functools.lru_cache(maxsize=64)
def _special_splitter(names: frozenset[str]) -> re.Pattern:
    # Longest first, so that of two special tokens where one starts the other, the longer wins.
    ordered = sorted(names, key=lambda name: (-len(name), name))
    return re.compile("(" + "|".join(re.escape(name) for name in ordered) + ")")


def _split_specials(text: str, names: frozenset[str]) -> list[str]:
    """Cut ``text`` at the special tokens ``names``: [text, special, text, ..., special, text]."""
    return _special_splitter(names).split(text) if names else [text]


class _ByteLevelBPE:
    """What both BPE tokenizers share: special tokens, pre-splitting, caching, decoding.

    A subclass sets ``self.special_tokens`` (name -> id), ``self._token_bytes`` (id -> bytes)
    and ``self._split`` (a compiled pre-split pattern), and implements ``_encode_chunk``.
    """

    special_tokens: dict[str, int]
    _token_bytes: list[bytes]
    _split: regex.Pattern

    def _init_cache(self) -> None:
        self._chunk_cache: dict[str, list[int]] = {}  # chunk -> ids: real text repeats its words

    def _encode_chunk(self, chunk: str) -> list[int]:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return len(self._token_bytes)

    def _allowed(self, allowed_special: str | Iterable[str]) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        allowed = frozenset([allowed_special] if isinstance(allowed_special, str) else allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        return allowed

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Text -> token ids. ``allowed_special``: ``"all"`` or the special tokens to recognise."""
        ids: list[int] = []
        cache = self._chunk_cache
        if len(cache) > 100_000:  # keep memory bounded on huge, varied inputs
            cache.clear()
        for i, piece in enumerate(_split_specials(text, self._allowed(allowed_special))):
            if i % 2 == 1:  # odd pieces are the special tokens themselves
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self._split.findall(piece):
                chunk_ids = cache.get(chunk)
                if chunk_ids is None:
                    chunk_ids = cache[chunk] = self._encode_chunk(chunk)
                ids.extend(chunk_ids)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """:meth:`encode` with no special tokens: every character is ordinary text."""
        return self.encode(text, allowed_special=())

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Token ids -> the bytes they stand for."""
        table = self._token_bytes
        ids = [operator.index(i) for i in ids]  # accepts ints, numpy ints, 0-d integer tensors
        if ids and not (0 <= min(ids) and max(ids) < len(table)):
            bad = next(i for i in ids if not 0 <= i < len(table))
            raise ValueError(f"token id {bad} is not in 0..{len(table) - 1}")
        return b"".join([table[i] for i in ids])

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. Ids that cut a multi-byte character decode to U+FFFD (replacement char)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that token ``token_id`` stands for (handy to look at a vocabulary)."""
        return self._token_bytes[token_id]


# ---------------------------------------------------------------------------------------------
# 2. Byte-level BPE, trained from scratch
# ---------------------------------------------------------------------------------------------


class BPETokenizer(_ByteLevelBPE):
    """Byte-level byte-pair encoding.

    Ids 0..255 are the byte values. Merge number ``k`` (``merges[k] = (a, b)``) creates id
    ``256 + k`` for "id a followed by id b". Special tokens come after the merges. Build one with
    :meth:`train`, or from a list of merges, or with :meth:`load`.
    """

    def __init__(
        self,
        merges: Iterable[tuple[int, int]] = (),
        special_tokens: Iterable[str] = (),
        pattern: str = GPT2_SPLIT_PATTERN,
    ):
        self.pattern = pattern
        self._split = regex.compile(pattern)
        self._token_bytes = [bytes([b]) for b in range(256)]
        # (a, b) -> new id. Dicts keep insertion order, so this is also the list of merges in order.
        self.merges: dict[tuple[int, int], int] = {}
        for a, b in merges:
            new_id = len(self._token_bytes)
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f"merge {len(self.merges)} ({a}, {b}) uses an id not defined before it")
            self.merges[(a, b)] = new_id
            self._token_bytes.append(self._token_bytes[a] + self._token_bytes[b])
        self.special_tokens: dict[str, int] = {}
        for name in special_tokens:
            if name in self.special_tokens or not name:
                raise ValueError(f"special token {name!r} is empty or repeated")
            self.special_tokens[name] = len(self._token_bytes)
            self._token_bytes.append(name.encode("utf-8"))
        self._init_cache()

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        ``vocab_size`` counts every id: 256 bytes + merges + special tokens. Occurrences of the
        special tokens in ``text`` are cut out before counting. Ties between equally frequent
        pairs go to the smaller pair ``(a, b)`` (as in :func:`most_frequent_pair`), so training is
        deterministic. If the text runs out of pairs first, training stops early with fewer
        merges. Tiny Shakespeare at ``vocab_size=512`` trains in about half a second.

        Speed: the text is cut into chunks and each DISTINCT chunk is stored once with its count
        (Tiny Shakespeare: ~300 k chunks, ~15 k distinct). Pair counts are kept up to
        date after each merge by re-counting only the chunks that contain the merged pair, and a
        heap finds the most frequent pair without scanning all of them.
        """
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least 256 + {len(special_tokens)} special tokens")
        split = regex.compile(pattern)

        # 1. Distinct chunks and how often each occurs (special tokens removed first).
        chunk_counts: Counter[str] = Counter()
        for piece in _split_specials(text, frozenset(special_tokens))[::2]:
            chunk_counts.update(split.findall(piece))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each chunk as byte ids
        weights = list(chunk_counts.values())

        # 2. Count every adjacent pair (weighted by chunk count); remember which chunks have it.
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, weight) in enumerate(zip(words, weights)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += weight
                where[pair].add(w)
        # Max-heap of (-count, pair). Counts change, so entries can be stale: we skip those.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        # 3. Repeatedly merge the most frequent pair.
        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges:
            while heap:
                neg_count, pair = heapq.heappop(heap)
                if pair_counts.get(pair) == -neg_count:  # up to date: this is the best pair
                    break
            else:
                break  # no pairs left at all
            new_id = 256 + len(merges)
            merges.append(pair)
            changed = set()
            for w in where.pop(pair):
                word = words[w]
                new_word = _merge(word, pair, new_id)
                if len(new_word) == len(word):  # this chunk lost the pair in an earlier merge
                    continue
                weight = weights[w]
                for p in zip(word, word[1:]):  # forget the chunk's old pairs ...
                    pair_counts[p] -= weight
                    changed.add(p)
                for p in zip(new_word, new_word[1:]):  # ... and count its new ones
                    pair_counts[p] += weight
                    changed.add(p)
                    where[p].add(w)
                words[w] = new_word
            for p in changed:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
                else:
                    del pair_counts[p]
        return cls(merges, special_tokens, pattern)

    def _encode_chunk(self, chunk: str) -> list[int]:
        # The new id of a merge is also its rank: earlier merges have smaller ids.
        return _apply_merges(list(chunk.encode("utf-8")), self.merges, self.merges.__getitem__)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON: the pattern, the merges in order and the special tokens."""
        state = {
            "type": "course_lib.tokenizers.BPETokenizer",
            "version": 1,
            "pattern": self.pattern,
            "merges": [list(pair) for pair in self.merges],
            "special_tokens": self.special_tokens,
        }
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save`."""
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        if state.get("type") != "course_lib.tokenizers.BPETokenizer" or state.get("version") != 1:
            raise ValueError(f"{path} is not a saved BPETokenizer (version 1)")
        specials = sorted(state["special_tokens"], key=state["special_tokens"].get)
        tok = cls([tuple(pair) for pair in state["merges"]], specials, state["pattern"])
        if tok.special_tokens != state["special_tokens"]:
            raise ValueError(f"{path}: special token ids do not follow the merges")
        return tok

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )


# ---------------------------------------------------------------------------------------------
# 3. GPT-2's tokenizer
# ---------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table.

    GPT-2's files store tokens as text, so every byte needs a visible character: bytes that are
    already visible characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves,
    and the other 68 (space, control characters, ...) are given the characters 256, 257, ...
    in byte order. That is why a space shows up as ``Ġ`` (chr(256 + 32)) in GPT-2 tokens.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    visible += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in visible}
    next_char = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(next_char)
            next_char += 1
    return dict(sorted(table.items()))


class GPT2Tokenizer(_ByteLevelBPE):
    """GPT-2's byte-level BPE, read from its published ``encoder.json`` and ``vocab.bpe``.

    ``vocab.bpe`` lists the 50,000 merges in order (line k = merge of rank k, as two tokens
    written with :func:`bytes_to_unicode` characters); ``encoder.json`` maps each token to its
    id, including ``"<|endoftext|>"`` -> 50256. By default both files come from
    :func:`course_lib.data.data_path`.
    """

    ENDOFTEXT = "<|endoftext|>"

    def __init__(
        self,
        encoder_json: str | os.PathLike | None = None,
        vocab_bpe: str | os.PathLike | None = None,
    ):
        if encoder_json is None or vocab_bpe is None:
            from course_lib.data import data_path

            encoder_json = encoder_json or data_path("gpt2/encoder.json")
            vocab_bpe = vocab_bpe or data_path("gpt2/vocab.bpe")
        self.encoder: dict[str, int] = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        self.bpe_ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}

        self.byte_encoder = bytes_to_unicode()  # byte -> character
        self.byte_decoder = {ch: b for b, ch in self.byte_encoder.items()}  # character -> byte
        self.decoder: dict[int, str] = {i: token for token, i in self.encoder.items()}
        if sorted(self.decoder) != list(range(len(self.decoder))):
            raise ValueError(f"{encoder_json}: token ids are not 0..{len(self.decoder) - 1}")
        self._token_bytes = [
            bytes(self.byte_decoder[ch] for ch in self.decoder[i]) for i in range(len(self.decoder))
        ]
        self.special_tokens = {self.ENDOFTEXT: self.encoder[self.ENDOFTEXT]}
        self.pattern = GPT2_SPLIT_PATTERN
        self._split = regex.compile(GPT2_SPLIT_PATTERN)
        self._init_cache()

    def _encode_chunk(self, chunk: str) -> list[int]:
        # The chunk's bytes as GPT-2 characters, merged in rank order, then looked up.
        symbols = [self.byte_encoder[b] for b in chunk.encode("utf-8")]
        merged = _apply_merges(symbols, self.bpe_ranks, lambda pair: pair[0] + pair[1])
        return [self.encoder[symbol] for symbol in merged]

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# 4. Words (the projects appendix)
# ---------------------------------------------------------------------------------------------

#: A word with its leading space (letters, with inner apostrophes: ``" o'er"``, ``"I'll"``), a number with its
#: leading space, one other symbol with its leading space, or one whitespace character on its own
#: (a newline, or a space not followed by a word). Every character of a text is in exactly one piece, so
#: ``"".join(pieces) == text``.
WORD_SPLIT_PATTERN = r" ?\p{L}+(?:'\p{L}+)*| ?\p{N}+| ?[^\s\p{L}\p{N}]|\s"


class WordTokenizer:
    """Word-level tokenizer, defined in the projects appendix (project "A word-level model").

    ``text`` is cut into pieces with :data:`WORD_SPLIT_PATTERN`: words and punctuation marks keep
    their leading space (as in GPT-2, ``" king"`` and ``"king"`` are two tokens), so joining the
    pieces gives back the text exactly, spaces and line breaks included. The vocabulary is the
    ``max_vocab - 1`` most frequent pieces seen at least ``min_count`` times (ties: alphabetical),
    plus ``unk_token`` at id 0, which every other piece becomes. ``decode`` writes ``unk_token``
    for it, so ``decode(encode(text)) == text`` only when no piece was unknown; :meth:`split` gives
    the pieces themselves (to see what ``<unk>`` replaced), :meth:`unknown_rate` how often it happens.

    Same interface as :class:`CharTokenizer`: ``encode``, ``decode``, ``vocab_size``.
    """

    def __init__(self, text: str, max_vocab: int | None = None, min_count: int = 1, unk_token: str = "<unk>"):
        if not isinstance(text, str):
            raise TypeError(f"WordTokenizer needs the training text as a str, got {type(text).__name__}")
        if max_vocab is not None and max_vocab < 2:
            raise ValueError(f"max_vocab must be at least 2 (the unknown token and one word), got {max_vocab}")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if not unk_token or len(self._split.findall(unk_token)) == 1:
            raise ValueError(f"unk_token {unk_token!r} must be a string that no single piece of text can equal")
        counts = Counter(self._split.findall(text))
        ranked = sorted((piece for piece, n in counts.items() if n >= min_count), key=lambda p: (-counts[p], p))
        if max_vocab is not None:
            ranked = ranked[: max_vocab - 1]
        self.unk_token = unk_token
        self.unk_id = 0
        self.itos: list[str] = [unk_token] + ranked  # id -> piece
        self.stoi: dict[str, int] = {piece: i for i, piece in enumerate(self.itos)}  # piece -> id
        self.counts = counts  # every piece of the training text and how often it occurs

    _split = regex.compile(WORD_SPLIT_PATTERN)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def split(self, text: str) -> list[str]:
        """The pieces of ``text``, before any lookup: ``"".join(split(text)) == text``."""
        return self._split.findall(text)

    def encode(self, text: str) -> list[int]:
        """One id per piece; pieces outside the vocabulary become :attr:`unk_id`."""
        return [self.stoi.get(piece, self.unk_id) for piece in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [operator.index(i) for i in ids]  # ints, numpy ints, 0-d integer tensors
        bad = next((i for i in ids if not 0 <= i < len(self.itos)), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is not in 0..{len(self.itos) - 1}")
        return "".join(self.itos[i] for i in ids)

    def unknown_rate(self, text: str) -> float:
        """The fraction of the pieces of ``text`` that are not in the vocabulary (0.0 for an empty text)."""
        pieces = self.split(text)
        return sum(piece not in self.stoi for piece in pieces) / len(pieces) if pieces else 0.0

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"
