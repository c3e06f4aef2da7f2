"""Unit tests for course_lib.tokenizers (chapter 4).

The GPT-2 tests compare with ``tiktoken`` (a test dependency), loaded offline from the course's
copies of GPT-2's files via :func:`course_lib.data.prime_tiktoken_cache`. If tiktoken is missing
those tests FAIL, they are not skipped.
"""

import json
import random
from collections import Counter

import pytest
import regex

from course_lib.data import prime_tiktoken_cache, read_text
from course_lib.tokenizers import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    bytes_to_unicode,
    count_pairs,
    merge_pair,
    most_frequent_pair,
)

EOT = "<|endoftext|>"
README_EXAMPLE = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
README_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114]

TRICKY_TEXTS = [
    "",
    " ",
    "a",
    "Hello, world!",
    "   leading and trailing   ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "many      spaces   \t \n  mixed",
    "don't you'll I'M we've they'd it's",
    "numbers 123 4567.89 1,000,000",
    "naïve café — “quotes” ‘single’ …",
    "Ελληνικά, русский, 日本語, 中文, 한국어, עברית, العربية",
    "emoji 🙂🚀 family 👨‍👩‍👧 flag 🇫🇷 skin 👍🏽",
    "combining e\u0301 and zero\u200bwidth and nbsp\u00a0here",
    "\x00\x01 control \x7f chars",
    "<|endoftext|> looks special <|endoftext|>",
    "x" * 300,
]


def random_texts(seed: int, n: int) -> list[str]:
    """Seeded random strings mixing ASCII, whitespace runs, accents, CJK and emoji."""
    rng = random.Random(seed)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(".,;:!?'\"()[]{}-_/\\@#$%^&*+=<>|~`")
        + [" ", " ", " ", "  ", "\n", "\t", "\r\n", "   \n"]
        + ["'s", "'ll", "'ve", "'re", "'t", "'d", "'m", EOT]
        + list("éèàüößçñøå")
        + list("日本語中文한국")
        + ["🙂", "🚀", "👍🏽", "\u00a0", "\u200b"]
    )
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 60))) for _ in range(n)]


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return read_text("tinyshakespeare.txt")


@pytest.fixture(scope="module")
def verdict() -> str:
    return read_text("the-verdict.txt")


@pytest.fixture(scope="module")
def bpe(shakespeare) -> BPETokenizer:
    return BPETokenizer.train(shakespeare[:200_000], vocab_size=400, special_tokens=[EOT])


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def tiktoken_gpt2(tmp_path_factory):
    """tiktoken's gpt2 encoding, loaded with the network forbidden."""
    try:
        import tiktoken
        import tiktoken.load
    except ImportError as err:  # a test dependency: fail loudly, never skip
        pytest.fail(f"tiktoken is required for the GPT-2 parity tests (pip install tiktoken): {err}")

    def no_network(url):
        raise AssertionError(f"tiktoken tried to download {url}: the primed cache was not used")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken-cache")))
        mp.setattr(tiktoken.load, "read_file", no_network)
        prime_tiktoken_cache()
        return tiktoken.get_encoding("gpt2")


# --- characters -----------------------------------------------------------------------------------


def test_char_tokenizer_roundtrip_and_vocab(shakespeare):
    tok = CharTokenizer(shakespeare)
    assert tok.vocab_size == 65
    assert tok.itos == sorted(tok.itos) and tok.itos[:2] == ["\n", " "]
    ids = tok.encode(shakespeare[:5000])
    assert tok.decode(ids) == shakespeare[:5000]
    assert all(0 <= i < 65 for i in ids)
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_char_tokenizer_unknown_character_is_an_error_by_default():
    tok = CharTokenizer("hello world")
    with pytest.raises(ValueError, match=r"'Z' \(U\+005A\) at position 6"):
        tok.encode("hello Zorld")


def test_char_tokenizer_unk_token():
    tok = CharTokenizer("abc", unk_token="<unk>")
    assert tok.vocab_size == 4 and tok.unk_id == 3
    assert tok.encode("abxc🙂") == [0, 1, 3, 2, 3]
    assert tok.decode(tok.encode("abxc")) == "ab<unk>c"
    with pytest.raises(ValueError):
        CharTokenizer("a<b", unk_token="<")


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_char_tokenizer_roundtrip_tricky(text):
    tok = CharTokenizer("".join(TRICKY_TEXTS))
    assert tok.decode(tok.encode(text)) == text


# --- BPE trained from scratch: the algorithm --------------------------------------------------------


def test_bpe_hand_worked_example():
    # "aaabdaaabac" (one chunk: all letters). Ids: a=97, b=98, c=99, d=100.
    # Counts: aa 4, ab 2, ...      -> merge (97, 97) = 256 "aa":  256 97 98 100 256 97 98 97 99
    # Counts: (256,97) 2, ab 2, ... tie: the smaller pair (97, 98) = 257 "ab": 256 257 100 256 257 97 99
    # Counts: (256,257) 2, rest 1  -> merge (256, 257) = 258 "aaab":            258 100 258 97 99
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259)
    assert list(tok.merges.items()) == [((97, 97), 256), ((97, 98), 257), ((256, 257), 258)]
    assert tok.token_bytes(258) == b"aaab"
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"
    # One more merge: all remaining pairs occur once, so the smallest, (97, 99) "ac", wins.
    assert list(BPETokenizer.train("aaabdaaabac", vocab_size=260).merges)[-1] == (97, 99)


def test_count_pairs_most_frequent_pair_and_merge_pair():
    assert count_pairs([1, 1, 1]) == {(1, 1): 2}  # overlapping pairs both count
    assert count_pairs([5]) == {} and most_frequent_pair([5]) is None and most_frequent_pair([]) is None
    # Ties go to the smallest pair, not to the one seen first.
    assert most_frequent_pair([9, 8, 2, 3]) == (2, 3)
    assert most_frequent_pair([3, 1, 3, 1, 2, 0, 2, 0]) == (2, 0)  # (3,1) 2, (2,0) 2, (1,3) 1
    assert most_frequent_pair([4, 4, 4, 1, 2, 1, 2]) == (1, 2)  # (4,4) 2 and (1,2) 2
    ids = [1, 1, 1]
    assert merge_pair(ids, (1, 1), 7) == [7, 1] and ids == [1, 1, 1]  # left to right, input kept
    assert merge_pair([1, 1, 1, 1], (1, 1), 7) == [7, 7]
    assert merge_pair([0, 1, 2, 1, 2], (1, 2), 9) == [0, 9, 9]  # the last pair too
    assert merge_pair([], (1, 2), 9) == [] and merge_pair([1], (1, 2), 9) == [1]
    assert merge_pair((b"a", b"b"), (b"a", b"b"), b"ab") == [b"ab"]
    with pytest.raises(ValueError, match="exactly 2"):
        merge_pair([1, 2], (1, 2, 3), 9)


def test_bpe_training_is_repeated_most_frequent_pair_and_merge_pair():
    # On a text that is one chunk, each merge of train() is one step of the two functions.
    text = "the cat sat on the mat; the bat ate the hat, aaaa éé 🙂🙂"
    tok = BPETokenizer.train(text, vocab_size=256 + 40, pattern=r"[\s\S]+")
    ids, merges = list(text.encode("utf-8")), []
    for k in range(40):
        pair = most_frequent_pair(ids)
        if pair is None:
            break
        merges.append(pair)
        ids = merge_pair(ids, pair, 256 + k)
    assert list(tok.merges) == merges
    assert tok.encode(text) == ids


def test_bpe_counts_chunks_with_their_counts_and_never_merges_across_chunks():
    # Chunks: "ab", " ab", " ab", " ab" -> (a, b) 4 times, (space, a) 3 times; "b a" never.
    tok = BPETokenizer.train("ab ab ab ab", vocab_size=258)
    assert list(tok.merges) == [(97, 98), (32, 256)]
    assert tok.encode("ab ab") == [256, 257]
    # Training stops early when no pair is left: here only "ab" can be merged, once.
    tok = BPETokenizer.train("ab", vocab_size=1000)
    assert list(tok.merges) == [(97, 98)] and tok.vocab_size == 257


def naive_train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The textbook algorithm, slowly: recount every pair of every chunk before each merge."""
    chunks = [list(c.encode("utf-8")) for c in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for k in range(n_merges):
        counts = Counter(pair for chunk in chunks for pair in zip(chunk, chunk[1:]))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then smallest
        merges.append(best)
        new_id, merged = 256 + k, []
        for chunk in chunks:
            out, i = [], 0
            while i < len(chunk):
                if chunk[i : i + 2] == list(best):
                    out.append(new_id)
                    i += 2
                else:
                    out.append(chunk[i])
                    i += 1
            merged.append(out)
        chunks = merged
    return merges


def test_bpe_incremental_training_equals_the_naive_algorithm(verdict):
    text = verdict[:8000] + " ééé 日本日本 🙂🙂 aaaa aaa"
    fast = BPETokenizer.train(text, vocab_size=256 + 60)
    assert list(fast.merges) == naive_train(text, 60)


def replay(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """Apply the merges to every chunk of ``text`` one after the other, in training order."""
    ids = []
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
        parts = list(chunk.encode("utf-8"))
        for k, pair in enumerate(merges):
            out, i = [], 0
            while i < len(parts):
                if tuple(parts[i : i + 2]) == pair:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids += parts
    return ids


def test_bpe_encode_equals_replaying_the_merges_in_order(shakespeare):
    # encode merges the earliest-learned pair first; that must equal replaying merge after merge.
    tok = BPETokenizer.train(shakespeare[:3000], vocab_size=256 + 40)
    for text in (shakespeare[:3000], shakespeare[50_000:52_000]):
        assert tok.encode(text) == replay(text, list(tok.merges))


def test_bpe_training_on_tiny_shakespeare(shakespeare):
    tok = BPETokenizer.train(shakespeare, vocab_size=512, special_tokens=[EOT])
    assert len(tok.merges) == 255 and tok.vocab_size == 512 and tok.special_tokens == {EOT: 511}
    assert tok.token_bytes(256) == b" t"  # the most frequent pair of Shakespeare's bytes
    sample = shakespeare[100_000:120_000]
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample and len(ids) < 0.6 * len(sample)


# --- BPE: roundtrips, special tokens, save/load ------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_bpe_roundtrip_tricky(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text
    assert bpe.decode(bpe.encode(text, allowed_special="all")) == text


def test_bpe_roundtrip_seeded_random(bpe):
    for text in random_texts(seed=2024, n=300):
        ids = bpe.encode(text, allowed_special="all")
        assert all(0 <= i < bpe.vocab_size for i in ids)
        assert bpe.decode(ids) == text


def test_bpe_special_tokens(bpe):
    eot = bpe.special_tokens[EOT]
    assert eot == bpe.vocab_size - 1 == 399
    ids = bpe.encode(f"To be{EOT}or not", allowed_special="all")
    assert ids.count(eot) == 1 and ids == bpe.encode("To be") + [eot] + bpe.encode("or not")
    assert bpe.encode(f"a{EOT}b", allowed_special={EOT}) == bpe.encode(f"a{EOT}b", allowed_special="all")
    # Not allowed: the same characters are ordinary text, several ids, none of them special.
    plain = bpe.encode(f"a{EOT}b")
    assert eot not in plain and len(plain) > 3 and plain == bpe.encode_ordinary(f"a{EOT}b")
    assert bpe.decode(plain) == f"a{EOT}b"
    with pytest.raises(ValueError, match="not special tokens"):
        bpe.encode("x", allowed_special={"<|im_start|>"})


def test_bpe_training_ignores_special_tokens():
    # Cut out, the special tokens leave only "ab" to learn from.
    tok = BPETokenizer.train(EOT * 50 + "ab" + EOT, vocab_size=300, special_tokens=[EOT])
    assert list(tok.merges) == [(97, 98)]
    assert tok.special_tokens == {EOT: 257}
    assert tok.encode(EOT + "ab", allowed_special="all") == [257, 256]


def test_bpe_save_load_roundtrip(bpe, tmp_path, shakespeare):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["merges"][0] == list(next(iter(bpe.merges)))
    loaded = BPETokenizer.load(path)
    assert loaded.merges == bpe.merges and list(loaded.merges) == list(bpe.merges)
    assert loaded.special_tokens == bpe.special_tokens and loaded.pattern == bpe.pattern
    sample = shakespeare[-5000:] + EOT + "🙂"
    assert loaded.encode(sample, allowed_special="all") == bpe.encode(sample, allowed_special="all")
    (tmp_path / "other.json").write_text('{"type": "something else"}')
    with pytest.raises(ValueError, match="not a saved BPETokenizer"):
        BPETokenizer.load(tmp_path / "other.json")


def test_bpe_rejects_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", vocab_size=256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="not defined before"):
        BPETokenizer(merges=[(97, 300)])
    tok = BPETokenizer(merges=[(97, 98)])
    with pytest.raises(ValueError, match="token id 257"):
        tok.decode([97, 257])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode([-1])


def test_bpe_decode_of_a_cut_character_uses_the_replacement_character():
    tok = BPETokenizer()
    ids = tok.encode("é")  # two bytes, two ids: no merges
    assert ids == [0xC3, 0xA9] and tok.decode(ids[:1]) == "\ufffd"


# --- GPT-2 ----------------------------------------------------------------------------------------


def test_bytes_to_unicode():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())


def test_gpt2_readme_example(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.encode(README_EXAMPLE, allowed_special={EOT}) == README_IDS
    assert gpt2.decode(README_IDS) == README_EXAMPLE


def test_gpt2_equals_tiktoken_on_the_readme_example(gpt2, tiktoken_gpt2):
    assert tiktoken_gpt2.encode(README_EXAMPLE, allowed_special={EOT}) == README_IDS
    ordinary = tiktoken_gpt2.encode_ordinary(README_EXAMPLE)
    assert gpt2.encode(README_EXAMPLE) == ordinary and 50256 not in ordinary


@pytest.mark.parametrize("name", ["the-verdict.txt", "tinyshakespeare.txt"])
def test_gpt2_equals_tiktoken_on_real_text(gpt2, tiktoken_gpt2, name):
    text = read_text(name)[:20_000]
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.decode(ids) == text


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_gpt2_equals_tiktoken_on_tricky_text(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_equals_tiktoken_on_seeded_random_text(gpt2, tiktoken_gpt2):
    for text in random_texts(seed=7, n=300):
        ids = gpt2.encode(text, allowed_special="all")
        assert ids == tiktoken_gpt2.encode(text, allowed_special="all"), repr(text)
        assert gpt2.decode(ids) == text
