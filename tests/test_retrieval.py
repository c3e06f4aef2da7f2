"""course_lib.retrieval: TF-IDF vectors and cosine search, checked against hand computations."""

import math

import pytest
import torch

from course_lib.retrieval import TfidfIndex, words


def test_words_lowercases_and_keeps_inner_apostrophes():
    assert words("Don't PANIC: the model's loss, 3.5!") == ["don't", "panic", "the", "model's", "loss", "3", "5"]
    with pytest.raises(TypeError, match="string"):
        words(["not", "a", "string"])


def test_idf_and_vector_match_a_hand_computation():
    index = TfidfIndex(["a b b", "a c"])
    # df: a=2, b=1, c=1; D=2 -> idf(a)=log(3/3)+1=1, idf(b)=idf(c)=log(3/2)+1
    rare = math.log(3 / 2) + 1
    assert torch.allclose(index.idf(), torch.tensor([1.0, rare, rare]))
    v = index.vector("a b b")  # weights (1, 2*rare, 0), normalised
    expected = torch.tensor([1.0, 2 * rare, 0.0])
    assert torch.allclose(v, expected / expected.norm())
    assert index.vector("zebra").abs().sum() == 0  # no shared word: the zero vector, not NaN


def test_search_ranks_by_cosine_and_drops_unrelated_passages():
    docs = ["Attention compares queries with keys.", "The cat sat on the mat.", "Keys and values come from tokens."]
    index = TfidfIndex(docs, stop_words={"the", "with", "and", "from", "on"})
    hits = index.search("queries and keys", k=3)
    assert [h.index for h in hits] == [0, 2]  # the cat passage shares no word and is left out
    assert hits[0].score > hits[1].score > 0
    assert hits[0].text == docs[0]
    assert torch.allclose(index.scores("queries and keys")[[0, 2]], torch.tensor([h.score for h in hits]))
    assert index.search("queries keys", k=1, exclude=[0])[0].index == 2
    assert index.search("completely unrelated words") == []


def test_adding_later_ranks_like_building_at_once():
    docs = ["red apple pie", "green apple", "blue sky today", "red sky at night"]
    at_once = TfidfIndex(docs)
    grown = TfidfIndex(docs[:2])
    grown.search("apple")  # builds the matrix, which add() must invalidate
    for d in docs[2:]:
        grown.add(d)
    assert torch.allclose(at_once.scores("red sky"), grown.scores("red sky"))


def test_bad_arguments_name_the_problem():
    index = TfidfIndex(["one passage"])
    with pytest.raises(ValueError, match="k must be"):
        index.search("passage", k=0)
    with pytest.raises(TypeError):
        index.add(42)
    assert TfidfIndex().search("anything") == []
