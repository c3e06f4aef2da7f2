"""A chatbot's memory beyond its context window: defined in chapter 11.

Chapter 8's chatbot remembered by writing the conversation into the prompt and cutting it to the
context window, so a fact said a few turns ago fell out, and so did the system line. This module
keeps three kinds of text apart and builds the model's context from them on every turn:

1. the **system line** (the bot's persona and rules), always kept;
2. the **recent turns**, kept word for word (the flow of the conversation);
3. **older turns, retrieved**: every finished turn goes into a search index
   (:class:`course_lib.retrieval.TfidfIndex`) and the few that look most like the new message come
   back, however long ago they were said.

:func:`build_context` assembles the pieces within a token budget; :class:`ChatMemory` stores the
conversation and calls it. The text template is the one chapter 11's model is trained on::

    system: you are robo.
    you: my pet is a dog.
    bot: ok.
    you: what is my pet?
    bot:

Token counts are measured by a ``count`` function (default ``len``: one token per character, the
course's character models); pass ``lambda s: len(tokenizer.encode(s))`` for another tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from course_lib.retrieval import TfidfIndex

__all__ = ["ChatMemory", "Turn", "build_context", "format_message", "format_system", "STOP_WORDS"]

# Words that say nothing about which turn a message is about: every turn has "you" and "bot" in it.
STOP_WORDS = frozenset("""a an the and or is are am was be to of in on at it i me my you your we do does
did what who where which how bot system ok yes no so that this""".split())


@dataclass(frozen=True)
class Turn:
    """One exchange: what the user said and what the bot answered."""

    user: str
    bot: str

    def text(self) -> str:
        """The turn in the chat template: ``"you: <user>\\nbot: <bot>\\n"``."""
        return f"you: {self.user}\nbot: {self.bot}\n"


def format_system(system: str) -> str:
    """The system line in the chat template: ``"system: <system>\\n"``."""
    return f"system: {system}\n"


def format_message(message: str) -> str:
    """The new user message, ending where the bot's answer starts: ``"you: <message>\\nbot:"``."""
    return f"you: {message}\nbot:"


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if "\n" in value:
        raise ValueError(f"{name} must be one line (the template separates turns by newlines), got {value!r}")
    return value


def build_context(system: str, retrieved: Sequence[Turn], recent: Sequence[Turn], message: str,
                  budget: int, count: Callable[[str], int] = len, max_retrieved: int | None = None) -> str:
    """The model's context: system line, retrieved turns, recent turns, new message, at most ``budget`` tokens.

    The system line and the new message are always there (a ``ValueError`` says so if they alone
    exceed the budget). Then whole turns are added while they fit, in this order of priority: the
    newest recent turn (what the message most likely answers), the retrieved turns in the order
    given (best match first), then the other recent turns, newest first. A turn that does not fit is
    skipped, never cut. In the text, retrieved turns come first, in the order given, then the
    recent turns, oldest first.

    ``retrieved`` and ``recent`` are ``Turn`` sequences, ``recent`` oldest first. With
    ``max_retrieved``, at most that many retrieved turns are kept: the best-ranked ones that fit (a
    best match too long for the budget leaves its place to the next one).
    """
    _check_text(system, "system")
    _check_text(message, "message")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive integer number of tokens, got {budget!r}")
    for name, turns in (("retrieved", retrieved), ("recent", recent)):
        for turn in turns:
            if not isinstance(turn, Turn):
                raise TypeError(f"{name} must hold Turn objects, got {type(turn).__name__}")
    if max_retrieved is not None and (isinstance(max_retrieved, bool) or not isinstance(max_retrieved, int)
                                      or max_retrieved < 0):
        raise ValueError(f"max_retrieved must be None or a non-negative integer, got {max_retrieved!r}")
    head, tail = format_system(system), format_message(message)
    used = count(head) + count(tail)
    if used > budget:
        raise ValueError(f"the system line and the message alone take {used} tokens, more than the budget of "
                         f"{budget}: shorten them or raise the budget")
    recent = list(recent)
    candidates = ([("recent", len(recent) - 1)] if recent else []) + \
        [("retrieved", i) for i in range(len(retrieved))] + \
        [("recent", i) for i in range(len(recent) - 2, -1, -1)]
    kept: set[tuple[str, int]] = set()
    room_for_retrieved = len(retrieved) if max_retrieved is None else max_retrieved
    for kind, i in candidates:
        if kind == "retrieved" and not room_for_retrieved:
            continue
        turn = recent[i] if kind == "recent" else retrieved[i]
        cost = count(turn.text())
        if used + cost <= budget:
            room_for_retrieved -= kind == "retrieved"
            kept.add((kind, i))
            used += cost
    body = [retrieved[i].text() for i in range(len(retrieved)) if ("retrieved", i) in kept]
    body += [recent[i].text() for i in range(len(recent)) if ("recent", i) in kept]
    return head + "".join(body) + tail


class ChatMemory:
    """A conversation: the system line, every turn so far, and a search index over the turns.

    ``recent_turns`` turns are kept word for word; ``retrieve`` older ones come back by TF-IDF
    similarity to the new message (turns sharing no word with it are never retrieved). With
    ``retrieve=0`` this is chapter 8's memory: the newest turns that fit, nothing older.
    """

    def __init__(self, system: str, recent_turns: int = 2, retrieve: int = 1,
                 stop_words: Iterable[str] = STOP_WORDS):
        self.system = _check_text(system, "system")
        for name, value in (("recent_turns", recent_turns), ("retrieve", retrieve)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        self.recent_turns, self.retrieve = recent_turns, retrieve
        self.turns: list[Turn] = []
        self.index = TfidfIndex(stop_words=stop_words)

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        return f"ChatMemory(turns={len(self)}, recent_turns={self.recent_turns}, retrieve={self.retrieve})"

    def add(self, user: str, bot: str) -> None:
        """Store a finished turn (and index it for retrieval)."""
        turn = Turn(_check_text(user, "user"), _check_text(bot, "bot"))
        self.turns.append(turn)
        self.index.add(turn.user + " " + turn.bot)

    def recent(self) -> list[Turn]:
        """The last ``recent_turns`` turns, oldest first."""
        return self.turns[max(0, len(self.turns) - self.recent_turns):] if self.recent_turns else []

    def recall(self, message: str, k: int | None = None) -> list[Turn]:
        """Up to ``k`` (default ``retrieve``) older turns, not among the recent ones, that share a word
        with ``message``, most similar first."""
        _check_text(message, "message")
        k = self.retrieve if k is None else k
        n_old = len(self.turns) - len(self.recent())
        if not k or not n_old:
            return []
        hits = self.index.search(message, k=k, exclude=range(n_old, len(self.turns)))
        return [self.turns[hit.index] for hit in hits]

    def context(self, message: str, budget: int, count: Callable[[str], int] = len) -> str:
        """The context for the model's answer to ``message``: :func:`build_context` of this memory.

        Every matching older turn is a candidate, best first, and the best ``retrieve`` that fit the
        budget are kept: a best match too long to fit does not leave the context without an old turn.
        """
        candidates = self.recall(message, k=len(self.turns)) if self.retrieve else []
        return build_context(self.system, candidates, self.recent(), message, budget, count,
                             max_retrieved=self.retrieve)
