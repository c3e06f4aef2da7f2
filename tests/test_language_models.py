"""Unit tests for course_lib.language_models (chapter 3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.data import read_text
from course_lib.datasets import SlidingWindowDataset
from course_lib.language_models import (
    BigramCounts,
    NeuralBigram,
    TinyLLM,
    TinyLLMConfig,
    negative_log_likelihood,
    next_token_examples,
    perplexity,
    sample_with_temperature,
)
from course_lib.tokenizers import CharTokenizer

# ---------------------------------------------------------------------------------------------
# BigramCounts
# ---------------------------------------------------------------------------------------------


def test_bigram_counts_by_hand():
    # ["ab", "b"] is read as ".ab." and ".b.": pairs .a ab b. and .b b.
    model = BigramCounts(["ab", "b"])
    assert model.itos == [".", "a", "b"] and model.stoi == {".": 0, "a": 1, "b": 2}
    assert model.counts.tolist() == [
        [0, 1, 1],  # after ".": a once, b once
        [0, 0, 1],  # after "a": b once
        [2, 0, 0],  # after "b": the end, twice
    ]
    assert model.probabilities().tolist() == [[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_bigram_add_k_smoothing_by_hand():
    model = BigramCounts(["ab", "b"], smoothing=1.0)
    expected = torch.tensor([[1, 2, 2], [1, 1, 2], [3, 1, 1]]) / torch.tensor([[5.0], [4.0], [5.0]])
    torch.testing.assert_close(model.probabilities(), expected)
    torch.testing.assert_close(model.probabilities().sum(1), torch.ones(3))


def test_bigram_nll_by_hand():
    model = BigramCounts(["ab", "b"])
    # ".ab.": P(a|.) = 1/2, P(b|a) = 1, P(.|b) = 1 -> mean -log = log(2) / 3
    assert model.nll(["ab"]) == pytest.approx(math.log(2) / 3)
    assert model.nll(["ab", "b"]) == pytest.approx(2 * math.log(2) / 5)
    assert model.nll(["ba"]) == math.inf  # "b" is never followed by "a" without smoothing
    smoothed = BigramCounts(["ab", "b"], smoothing=1.0)
    # ".ba.": P(b|.) = 2/5, P(a|b) = 1/5, P(.|a) = 1/4
    assert smoothed.nll(["ba"]) == pytest.approx(-(math.log(2 / 5) + math.log(1 / 5) + math.log(1 / 4)) / 3)


def test_bigram_custom_boundary_and_errors():
    model = BigramCounts(["a.b"], boundary="<>")
    assert model.itos == ["<>", ".", "a", "b"] and model.encode("ab") == [0, 2, 3, 0]
    with pytest.raises(ValueError, match=r"boundary token '\.' is also a character"):
        BigramCounts(["a.b"])
    with pytest.raises(ValueError, match="at least one text"):
        BigramCounts([])
    with pytest.raises(TypeError, match="not one string"):
        BigramCounts("emma")
    with pytest.raises(ValueError, match="smoothing must be"):
        BigramCounts(["ab"], smoothing=-1)
    with pytest.raises(ValueError, match="character 'z' of 'az' is not in the vocabulary"):
        model.nll(["az"])


def test_bigram_sampling_is_reproducible_and_uses_the_vocabulary():
    names = read_text("names.txt").split()
    model = BigramCounts(names, smoothing=1.0)
    assert model.vocab_size == 27
    # a bigram model is much better than uniform guessing, but far from perfect
    assert 2.3 < model.nll(names[:2000]) < math.log(27)
    first = [model.sample(torch.Generator().manual_seed(42)) for _ in range(3)]
    gen = torch.Generator().manual_seed(42)
    again = [model.sample(gen) for _ in range(5)]
    assert first == [again[0]] * 3 and len(set(again)) > 1
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz") and len(s) <= 50 for s in again)
    assert len(model.sample(gen, max_length=3)) <= 3


def test_bigram_sample_deterministic_chain():
    # "ab" only: after "." always "a", after "a" always "b", after "b" always the end
    assert BigramCounts(["ab"]).sample(torch.Generator().manual_seed(0)) == "ab"


# ---------------------------------------------------------------------------------------------
# Negative log-likelihood and perplexity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [2, 27, 50257])
def test_uniform_model_nll_is_log_vocab(vocab):
    logits = torch.zeros(3, 4, vocab)
    targets = torch.randint(0, vocab, (3, 4), generator=torch.Generator().manual_seed(vocab))
    assert negative_log_likelihood(logits, targets).item() == pytest.approx(math.log(vocab))
    assert perplexity(logits, targets).item() == pytest.approx(vocab, rel=1e-5)


def test_nll_matches_cross_entropy_and_perplexity_is_exp():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    targets = torch.randint(0, 7, (2, 5), generator=gen)
    nll = negative_log_likelihood(logits, targets)
    torch.testing.assert_close(nll, F.cross_entropy(logits.view(-1, 7), targets.view(-1)))
    torch.testing.assert_close(perplexity(logits, targets), torch.exp(nll))
    # by hand: probabilities 1/2 and 1/4 -> mean NLL (log 2 + log 4) / 2
    two = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
    assert negative_log_likelihood(two, torch.tensor([0, 1])).item() == pytest.approx(1.5 * math.log(2))
    assert perplexity(two, torch.tensor([0, 1])).item() == pytest.approx(2**1.5)


def test_nll_errors():
    with pytest.raises(ValueError, match=r"one row per target: got logits \(2, 3\) and targets \(3,\)"):
        negative_log_likelihood(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="targets must be integer token ids"):
        negative_log_likelihood(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="ids in 0 .. 2"):
        negative_log_likelihood(torch.zeros(2, 3), torch.tensor([0, 3]))


# ---------------------------------------------------------------------------------------------
# NeuralBigram
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.5, 1.0])
def test_neural_bigram_learns_the_smoothed_count_probabilities(smoothing):
    corpus = ["ab", "b", "ba", "abba", "aab"]
    counts = BigramCounts(corpus, smoothing=smoothing)
    inputs, targets = counts.pairs(corpus)
    model = NeuralBigram(counts.vocab_size)
    torch.testing.assert_close(model.probabilities(), torch.full((3, 3), 1 / 3))  # starts uniform
    assert model(inputs).shape == (len(inputs), 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    for _ in range(100):  # full-batch gradient descent; the loss is convex in the logits
        loss = model.loss(inputs, targets, smoothing=smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(model.probabilities(), counts.probabilities(), atol=1e-4, rtol=0)


def test_neural_bigram_loss_without_smoothing_is_the_nll():
    model = NeuralBigram(3)
    inputs, targets = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    assert model.loss(inputs, targets).item() == pytest.approx(math.log(3))
    with pytest.raises(TypeError, match="idx must be integer token ids"):
        model(torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# Sampling with a temperature
# ---------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_with_a_seed():
    logits = torch.randn(4, 6, 10, generator=torch.Generator().manual_seed(0))
    a = sample_with_temperature(logits, 1.0, torch.Generator().manual_seed(7))
    b = sample_with_temperature(logits, 1.0, torch.Generator().manual_seed(7))
    assert a.shape == (4, 6) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert sample_with_temperature(torch.zeros(10), 1.0).shape == ()


def test_low_temperature_concentrates_mass():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).expand(4000, 4)  # 4000 independent draws

    def share_of_top(temperature):
        draws = sample_with_temperature(logits, temperature, torch.Generator().manual_seed(0))
        return (draws == 0).float().mean().item()

    cold, normal, hot = share_of_top(0.2), share_of_top(1.0), share_of_top(10.0)
    assert cold > 0.99
    assert normal == pytest.approx(torch.softmax(logits[0], 0)[0].item(), abs=0.03)  # about 0.64
    assert hot == pytest.approx(torch.softmax(logits[0] / 10, 0)[0].item(), abs=0.03)  # about 0.29
    assert cold > normal > hot


def test_zero_temperature_is_greedy_and_tiny_is_too():
    logits = torch.tensor([[0.1, 3.0, -2.0], [5.0, 4.9, 1e4]])
    assert sample_with_temperature(logits, 0).tolist() == [1, 2]
    assert sample_with_temperature(logits, 1e-30, torch.Generator().manual_seed(0)).tolist() == [1, 2]


@pytest.mark.parametrize("temperature", [-0.5, math.inf, math.nan])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match=r"finite number >= 0 \(0 = greedy\)"):
        sample_with_temperature(torch.zeros(3), temperature)


# ---------------------------------------------------------------------------------------------
# next_token_examples
# ---------------------------------------------------------------------------------------------


def test_next_token_examples_by_hand():
    # "emma." with "." = 0, a = 1, e = 5, m = 13: "..." -> e, "..e" -> m, ".em" -> m, "emm" -> a, "mma" -> .
    contexts, targets = next_token_examples([5, 13, 13, 1, 0], context_length=3, pad_id=0)
    assert contexts.dtype == targets.dtype == torch.long
    assert contexts.tolist() == [[0, 0, 0], [0, 0, 5], [0, 5, 13], [5, 13, 13], [13, 13, 1]]
    assert targets.tolist() == [5, 13, 13, 1, 0]
    # a window longer than the sequence, and another padding id
    contexts, targets = next_token_examples([4, 2], context_length=4, pad_id=9)
    assert contexts.tolist() == [[9, 9, 9, 9], [9, 9, 9, 4]] and targets.tolist() == [4, 2]


@pytest.mark.parametrize("context_length", [1, 3, 8])
def test_next_token_examples_agree_with_sliding_windows(context_length):
    ids = torch.randint(0, 20, (40,), generator=torch.Generator().manual_seed(context_length))
    contexts, targets = next_token_examples(ids, context_length)
    assert contexts.shape == (40, context_length) and torch.equal(targets, ids)
    # past the padded start, row t is the window that SlidingWindowDataset starts at t - T
    windows = SlidingWindowDataset(ids, context_length, stride=1)
    for t in range(context_length, 40):
        window, shifted = windows[t - context_length]
        assert torch.equal(contexts[t], window) and targets[t] == shifted[-1]
    # a list gives the same pairs as a tensor, and the input is not changed
    as_list = ids.tolist()
    from_list = next_token_examples(as_list, context_length)
    assert torch.equal(from_list[0], contexts) and torch.equal(from_list[1], targets) and as_list == ids.tolist()


def test_next_token_examples_match_what_generate_sees():
    # generate() starts from a window of padding: the first training context
    torch.manual_seed(0)
    model = TinyLLM(TinyLLMConfig(vocab_size=6, context_length=3, d_embed=2, d_hidden=4, pad_id=5))
    contexts, _ = next_token_examples([1, 2, 3], 3, pad_id=5)
    first = model.generate(torch.zeros(1, 0, dtype=torch.long), 1, temperature=0)
    assert first.item() == model(contexts[:1]).argmax().item()


def test_next_token_examples_edge_cases_and_errors():
    contexts, targets = next_token_examples([], 2)
    assert contexts.shape == (0, 2) and targets.shape == (0,)
    with pytest.raises(TypeError, match="not a string"):
        next_token_examples("emma", 2)
    with pytest.raises(TypeError, match="integer token ids"):
        next_token_examples([1.0, 2.0], 2)
    with pytest.raises(TypeError, match="integer token ids"):
        next_token_examples(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="1-D sequence"):
        next_token_examples(torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="context_length must be an integer >= 1, got 0"):
        next_token_examples([1, 2], 0)
    with pytest.raises(ValueError, match="pad_id must be a token id"):
        next_token_examples([1, 2], 2, pad_id=-1)


# ---------------------------------------------------------------------------------------------
# TinyLLM
# ---------------------------------------------------------------------------------------------

LINE = "a tiny model learns this line by heart."  # every 4 characters determine the next one


def next_char_examples(ids, context_length):
    """(X, Y): every window of context_length ids and the id right after it."""
    ds = SlidingWindowDataset(ids, context_length, stride=1)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack(ys)[:, -1]  # (N, T), (N,)


def test_tiny_llm_shapes_and_parameter_count():
    cfg = TinyLLMConfig(vocab_size=11, context_length=3, d_embed=4, d_hidden=20, activation="gelu")
    model = TinyLLM(cfg)
    assert model(torch.zeros(5, 3, dtype=torch.long)).shape == (5, 11)
    # embedding V*E + hidden (T*E)*H + H + output H*V + V
    assert sum(p.numel() for p in model.parameters()) == 11 * 4 + 12 * 20 + 20 + 20 * 11 + 11


def test_tiny_llm_config_and_input_errors():
    with pytest.raises(ValueError, match="activation must be 'tanh' or 'gelu', got 'relu'"):
        TinyLLMConfig(vocab_size=5, activation="relu")
    with pytest.raises(ValueError, match="context_length must be at least 1, got 0"):
        TinyLLMConfig(vocab_size=5, context_length=0)
    with pytest.raises(ValueError, match="pad_id must be an id in 0 .. 4, got 5"):
        TinyLLMConfig(vocab_size=5, pad_id=5)
    model = TinyLLM(TinyLLMConfig(vocab_size=5, context_length=3, d_embed=2, d_hidden=4))
    with pytest.raises(ValueError, match=r"expected shape \(batch, 3\), got \(2, 4\)"):
        model(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="idx must be integer token ids"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ids in 0 .. 4"):
        model(torch.tensor([[0, 1, 5]]))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), -1)


def test_tiny_llm_overfits_a_line_and_recites_it():
    tok = CharTokenizer(LINE)
    ids = tok.encode(LINE)
    X, Y = next_char_examples(ids, context_length=4)
    assert len({tuple(x) for x in X.tolist()}) == len(X)  # no context is ambiguous: loss can reach 0
    torch.manual_seed(0)
    cfg = TinyLLMConfig(vocab_size=tok.vocab_size, context_length=4, d_embed=8, d_hidden=64, activation="gelu")
    model = TinyLLM(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    initial = negative_log_likelihood(model(X), Y).item()
    for _ in range(200):
        loss = negative_log_likelihood(model(X), Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert initial > 2.0 and loss.item() < 0.05
    recited = model.generate(torch.tensor([ids[:4]]), max_new_tokens=len(ids) - 4, temperature=0)
    assert tok.decode(recited[0].tolist()) == LINE


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_tiny_llm_generate_shapes_and_seeded_sampling(activation):
    torch.manual_seed(0)
    model = TinyLLM(TinyLLMConfig(vocab_size=7, context_length=3, d_embed=4, d_hidden=8, activation=activation))
    start = torch.tensor([[1, 2], [3, 4]])
    a = model.generate(start, max_new_tokens=10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = model.generate(start, max_new_tokens=10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 12) and torch.equal(a, b)
    assert torch.equal(a[:, :2], start) and int(a.min()) >= 0 and int(a.max()) < 7
    from_nothing = model.generate(torch.zeros(1, 0, dtype=torch.long), 5, temperature=0)  # padded with pad_id
    assert from_nothing.shape == (1, 5)
    assert torch.equal(model.generate(start, 0), start)
