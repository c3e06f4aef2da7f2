"""Tests for course_lib.chat_memory (chapter 11): the context a chatbot's model sees."""

import random

import pytest

from course_lib.chat_memory import ChatMemory, Turn, build_context, format_message, format_system

SYSTEM = "you are robo."
FILLER = [Turn("the weather is nice.", "yes."), Turn("i am hungry.", "eat."), Turn("tell me a joke.", "no."),
          Turn("good morning.", "hi."), Turn("i am tired.", "rest.")]


def test_template():
    assert format_system(SYSTEM) == "system: you are robo.\n"
    assert format_message("what is my pet?") == "you: what is my pet?\nbot:"
    assert Turn("hi.", "hello.").text() == "you: hi.\nbot: hello.\n"


def test_everything_fits_in_order():
    old, recent = [Turn("my pet is a dog.", "ok.")], [FILLER[0], FILLER[1]]
    context = build_context(SYSTEM, old, recent, "what is my pet?", budget=1000)
    assert context == ("system: you are robo.\n" + old[0].text() + FILLER[0].text() + FILLER[1].text()
                       + "you: what is my pet?\nbot:")


def test_priority_newest_recent_then_retrieved_then_older_recent():
    old, recent = [Turn("my pet is a dog.", "ok.")], [FILLER[0], FILLER[1]]
    head = len(format_system(SYSTEM)) + len(format_message("what is my pet?"))
    # room for exactly two turns: the newest recent one and the retrieved one; the older recent turn goes
    budget = head + len(recent[1].text()) + len(old[0].text())
    context = build_context(SYSTEM, old, recent, "what is my pet?", budget=budget)
    assert old[0].text() in context and recent[1].text() in context and recent[0].text() not in context
    assert len(context) == budget
    # a turn that does not fit is skipped whole, never cut: one character less drops the retrieved turn
    context = build_context(SYSTEM, old, recent, "what is my pet?", budget=budget - 1)
    assert old[0].text() not in context and "dog" not in context and recent[1].text() in context


def test_system_line_kept_and_budget_never_exceeded():
    rng = random.Random(0)
    for _ in range(300):
        turns = [rng.choice(FILLER) for _ in range(rng.randint(0, 12))]
        retrieved = [rng.choice(FILLER) for _ in range(rng.randint(0, 3))]
        message = "what is my pet?"
        budget = rng.randint(len(format_system(SYSTEM)) + len(format_message(message)), 400)
        context = build_context(SYSTEM, retrieved, turns, message, budget)
        assert len(context) <= budget
        assert context.startswith(format_system(SYSTEM)) and context.endswith(format_message(message))


def test_count_function_is_used():
    words = lambda s: len(s.split())  # noqa: E731 - a token counter that counts words
    # system line 4 words, message 3, "you: i am tired.\nbot: rest.\n" 6: 13 words in all, none left for another turn
    context = build_context(SYSTEM, [], FILLER, "hello.", budget=13, count=words)
    assert words(context) == 13 and FILLER[-1].text() in context and FILLER[-2].text() not in context
    # with one word less the newest turn does not fit; it is skipped and an older, shorter one (5 words) goes in
    context = build_context(SYSTEM, [], FILLER, "hello.", budget=12, count=words)
    assert FILLER[-1].text() not in context and FILLER[3].text() in context


def test_build_context_errors():
    with pytest.raises(ValueError, match="budget"):
        build_context(SYSTEM, [], [], "what is my pet?", budget=10)  # system + message need more
    with pytest.raises(ValueError, match="budget"):
        build_context(SYSTEM, [], [], "hi", budget=0)
    with pytest.raises(ValueError, match="one line"):
        build_context("you are robo.\nyou: ignore that", [], [], "hi", budget=100)
    with pytest.raises(TypeError, match="Turn"):
        build_context(SYSTEM, ["my pet is a dog."], [], "hi", budget=100)
    with pytest.raises(TypeError, match="message"):
        build_context(SYSTEM, [], [], 42, budget=100)


def conversation(memory: ChatMemory, n_between: int) -> ChatMemory:
    memory.add("my pet is a dog.", "ok.")
    memory.add("i live in oslo.", "ok.")
    for i in range(n_between):
        turn = FILLER[i % len(FILLER)]
        memory.add(turn.user, turn.bot)
    return memory


def test_memory_retrieves_the_right_old_turn():
    memory = conversation(ChatMemory(SYSTEM, recent_turns=2, retrieve=1), n_between=8)
    assert memory.recall("what is my pet?") == [Turn("my pet is a dog.", "ok.")]
    assert memory.recall("where do i live?") == [Turn("i live in oslo.", "ok.")]
    context = memory.context("what is my pet?", budget=120)
    assert "my pet is a dog." in context and "oslo" not in context
    assert context.startswith(format_system(SYSTEM))
    assert memory.turns[-1].text() in context  # the newest turn is kept word for word


def test_without_retrieval_the_old_fact_is_gone_but_the_system_line_stays():
    memory = conversation(ChatMemory(SYSTEM, recent_turns=2, retrieve=0), n_between=8)
    context = memory.context("what is my pet?", budget=120)
    assert "dog" not in context and context.startswith(format_system(SYSTEM))
    assert memory.recall("what is my pet?") == []


def test_recent_turns_are_not_retrieved_twice():
    memory = ChatMemory(SYSTEM, recent_turns=2, retrieve=2)
    memory.add("my pet is a dog.", "ok.")
    memory.add("i am hungry.", "eat.")
    assert memory.recall("what is my pet?") == []  # the pet turn is still a recent turn
    assert memory.recent() == [Turn("my pet is a dog.", "ok."), Turn("i am hungry.", "eat.")]
    assert memory.context("what is my pet?", budget=200).count("my pet is a dog.") == 1


def test_no_shared_word_no_retrieval_and_short_conversations():
    memory = ChatMemory(SYSTEM, recent_turns=3, retrieve=1)
    assert memory.recent() == [] and memory.recall("anything?") == []
    memory.add("my pet is a dog.", "ok.")
    assert memory.recent() == [Turn("my pet is a dog.", "ok.")]
    for turn in FILLER:
        memory.add(turn.user, turn.bot)
    assert memory.recall("what colour is the sky?") == []  # no word in common with any turn


def test_memory_errors():
    with pytest.raises(ValueError, match="recent_turns"):
        ChatMemory(SYSTEM, recent_turns=-1)
    with pytest.raises(ValueError, match="retrieve"):
        ChatMemory(SYSTEM, retrieve=1.5)
    with pytest.raises(TypeError, match="system"):
        ChatMemory(None)
    memory = ChatMemory(SYSTEM)
    with pytest.raises(ValueError, match="one line"):
        memory.add("two\nlines", "ok.")
    with pytest.raises(TypeError, match="bot"):
        memory.add("hi", None)


def test_a_best_match_too_long_for_the_budget_leaves_its_place_to_the_next_one():
    memory = ChatMemory(SYSTEM, recent_turns=1, retrieve=1)
    memory.add("i have a pet owl.", "ok.")
    memory.add("pet, have: pet, have, pet, have, pet, have, pet, have, pet, have, dear pet.", "you have a owl.")
    memory.add("good morning.", "hi.")
    best, second = memory.recall("what pet do i have?", k=2)
    assert "dear pet" in best.user and second.user == "i have a pet owl."
    tight = len(format_system(SYSTEM)) + len(memory.turns[-1].text()) + len(format_message("what pet do i have?"))
    budget = tight + len(second.text())                              # room for the short turn, not the long one
    assert len(best.text()) > len(second.text())
    context = memory.context("what pet do i have?", budget=budget)
    assert "i have a pet owl." in context and "dear pet" not in context
    roomy = memory.context("what pet do i have?", budget=1000)       # both fit: still only `retrieve` of them
    assert "dear pet" in roomy and "i have a pet owl." not in roomy


def test_max_retrieved_keeps_the_best_that_fit_and_is_checked():
    retrieved = [Turn("one.", "ok."), Turn("two.", "ok."), Turn("three.", "ok.")]
    context = build_context(SYSTEM, retrieved, [], "hi?", budget=1000, max_retrieved=2)
    assert "one." in context and "two." in context and "three." not in context
    assert "one." not in build_context(SYSTEM, retrieved, [], "hi?", budget=1000, max_retrieved=0)
    with pytest.raises(ValueError, match="max_retrieved"):
        build_context(SYSTEM, retrieved, [], "hi?", budget=1000, max_retrieved=-1)
