"""Tests for course_lib.tokenizers.WordTokenizer (the projects appendix, project "A word-level model")."""

import pytest

from course_lib.tokenizers import WORD_SPLIT_PATTERN, CharTokenizer, WordTokenizer

TEXT = "The king is dead.\nLong live the king!\n\nThe king's men  o'er the hill, 12 times.\n"


def test_pieces_keep_their_leading_space_and_join_back_to_the_text():
    tok = WordTokenizer(TEXT)
    pieces = tok.split(TEXT)
    assert "".join(pieces) == TEXT
    assert pieces[:6] == ["The", " king", " is", " dead", ".", "\n"]
    assert " king's" in pieces and " o'er" in pieces and " 12" in pieces  # inner apostrophes, numbers
    assert pieces.count("\n") == 4  # each newline is its own piece
    assert " " in pieces  # the first of two spaces is a piece of its own
    assert WORD_SPLIT_PATTERN.startswith(" ?")


@pytest.mark.parametrize("text", ["", " ", "a", "  x  \t\n y", "--!?", "déjà vu, naïve", "tab\there\r\n"])
def test_round_trip_when_every_piece_is_known(text):
    tok = WordTokenizer(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.unknown_rate(text) == 0.0


def test_vocabulary_is_ordered_by_frequency_then_alphabet_with_unk_first():
    tok = WordTokenizer("b a b c c c")
    # pieces: "b", " a", " b", " c" x3 -> " c" first (3 times), then the three seen once, alphabetically
    assert tok.itos == ["<unk>", " c", " a", " b", "b"]
    assert tok.vocab_size == len(tok.itos)
    assert tok.unk_id == 0 and tok.stoi["<unk>"] == 0


def test_max_vocab_keeps_the_most_frequent_pieces_and_maps_the_rest_to_unk():
    tok = WordTokenizer("x y y z z z", max_vocab=3)
    assert tok.vocab_size == 3
    assert tok.itos == ["<unk>", " z", " y"]
    ids = tok.encode(" z x y")
    assert ids == [1, 0, 2]
    assert tok.decode(ids) == " z<unk> y"
    assert tok.unknown_rate(" z x y") == pytest.approx(1 / 3)


def test_min_count_drops_rare_pieces():
    tok = WordTokenizer("a a a b", min_count=2)  # pieces: "a", " a" x2, " b"
    assert tok.itos == ["<unk>", " a"]
    assert tok.encode("a a b") == [0, 1, 0]


def test_unknown_words_in_new_text():
    tok = WordTokenizer(TEXT)
    assert tok.encode("The queen") == [tok.stoi["The"], tok.unk_id]
    assert tok.unknown_rate("The queen") == 0.5
    assert tok.unknown_rate("") == 0.0


def test_same_interface_as_char_tokenizer():
    for tok in (CharTokenizer(TEXT), WordTokenizer(TEXT)):
        ids = tok.encode(TEXT)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == TEXT


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match="str"):
        WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="max_vocab"):
        WordTokenizer("a", max_vocab=1)
    with pytest.raises(ValueError, match="min_count"):
        WordTokenizer("a", min_count=0)
    with pytest.raises(ValueError, match="unk_token"):
        WordTokenizer("a", unk_token="word")  # a piece of text could equal it
    with pytest.raises(ValueError, match="token id 5"):
        WordTokenizer("a b").decode([5])
