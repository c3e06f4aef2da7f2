"""Unit tests for course_lib.datasets (chapter 4)."""

import pytest
import torch

from course_lib.data import read_text
from course_lib.datasets import SlidingWindowDataset, make_dataloader, train_val_split
from course_lib.tokenizers import CharTokenizer


def expected_windows(n_tokens: int, context_length: int, stride: int) -> int:
    """Count by brute force: every start whose window (inputs + 1 target) fits."""
    return sum(1 for start in range(0, n_tokens, stride) if start + context_length + 1 <= n_tokens)


WINDOW_CASES = [
    (n, t, s)
    for n in (5, 6, 7, 10, 11, 23)
    for t in (1, 4, 5)
    for s in (1, 2, 3, 5)
    if n >= t + 1  # shorter texts: see test_too_short_text_raises
]


@pytest.mark.parametrize(("n_tokens", "context_length", "stride"), WINDOW_CASES)
def test_window_count_matches_formula_and_brute_force(n_tokens, context_length, stride):
    ds = SlidingWindowDataset(list(range(n_tokens)), context_length, stride)
    assert len(ds) == (n_tokens - context_length - 1) // stride + 1
    assert len(ds) == expected_windows(n_tokens, context_length, stride)
    # the last window really is the last one that fits
    x, y = ds[len(ds) - 1]
    assert int(y[-1]) <= n_tokens - 1 < int(y[-1]) + stride


def test_exactly_context_length_plus_one_tokens_gives_one_window():
    ds = SlidingWindowDataset([7, 8, 9, 10], context_length=3, stride=1)
    assert len(ds) == 1
    x, y = ds[0]
    assert x.tolist() == [7, 8, 9] and y.tolist() == [8, 9, 10]


def test_too_short_text_raises():
    with pytest.raises(ValueError, match=r"needs at least 4 tokens.*only 3"):
        SlidingWindowDataset([1, 2, 3], context_length=3, stride=1)
    with pytest.raises(ValueError, match="only 0"):
        SlidingWindowDataset([], context_length=1, stride=1)


def test_target_is_input_shifted_by_one():
    ids = torch.arange(100, 120)
    ds = SlidingWindowDataset(ids, context_length=4, stride=3)
    assert len(ds) == 6  # starts 0, 3, ..., 15; start 18 would need tokens up to 22
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (4,)
        assert x.tolist() == list(range(100 + 3 * i, 104 + 3 * i))
        assert y.tolist() == [t + 1 for t in x.tolist()]
    assert ds[-1][0].tolist() == ds[5][0].tolist()
    with pytest.raises(IndexError, match="out of range"):
        ds[6]
    assert "windows=6" in repr(ds)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="context_length must be at least 1"):
        SlidingWindowDataset([1, 2, 3], context_length=0, stride=1)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        SlidingWindowDataset([1, 2, 3], context_length=1, stride=0)
    with pytest.raises(TypeError, match="must be integers, got dtype torch.float32"):
        SlidingWindowDataset(torch.zeros(5), context_length=2, stride=1)
    with pytest.raises(TypeError, match="must be integers, got 'b' at position 1"):
        SlidingWindowDataset([1, "b", 3], context_length=1, stride=1)
    with pytest.raises(TypeError, match="encode it with a tokenizer"):
        SlidingWindowDataset("hello", context_length=2, stride=1)
    with pytest.raises(ValueError, match=r"1-D sequence.*\(2, 3\)"):
        SlidingWindowDataset(torch.zeros(2, 3, dtype=torch.long), context_length=1, stride=1)


def test_train_val_split_is_contiguous():
    ids = list(range(10))
    train, val = train_val_split(ids, 0.2)
    assert train == list(range(8)) and val == [8, 9]
    t_train, t_val = train_val_split(torch.arange(10), 0.25)  # round(2.5) == 2
    assert t_train.tolist() == list(range(8)) and t_val.tolist() == [8, 9]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        train_val_split(ids, 0.0)
    with pytest.raises(ValueError, match="empty validation set"):
        train_val_split([1, 2, 3], 0.1)
    with pytest.raises(ValueError, match="empty training set"):
        train_val_split([1, 2], 0.9)


def test_dataloader_shapes_and_drop_last():
    ids = list(range(43))  # stride 4, context 4: (43 - 5) // 4 + 1 = 10 windows
    loader = make_dataloader(ids, context_length=4, batch_size=3, shuffle=False, drop_last=True)
    batches = list(loader)
    assert len(batches) == 3
    x, y = batches[0]
    assert x.shape == y.shape == (3, 4) and x.dtype == torch.long
    assert x[0].tolist() == [0, 1, 2, 3] and x[1].tolist() == [4, 5, 6, 7]  # stride defaults to context_length
    torch.testing.assert_close(y, x + 1)
    kept = list(make_dataloader(ids, context_length=4, batch_size=3, shuffle=False, drop_last=False))
    assert [len(b[0]) for b in kept] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="every batch would be dropped"):
        make_dataloader(ids, context_length=4, batch_size=11)


def test_dataloader_shuffling_is_seeded():
    ids = list(range(200))

    def first_column(seed):
        loader = make_dataloader(ids, context_length=3, stride=1, batch_size=8, seed=seed)
        return [b[0][:, 0].tolist() for b in loader]

    torch.manual_seed(123)  # the global random state must not matter
    a = first_column(0)
    torch.manual_seed(456)
    assert first_column(0) == a
    assert first_column(1) != a
    starts = sorted(s for batch in a for s in batch)
    assert len(set(starts)) == len(starts)  # each window at most once per epoch
    assert a != sorted(starts)  # actually shuffled


def test_real_text_windows():
    text = read_text("the-verdict.txt")[:2000]
    tok = CharTokenizer(text)
    train, val = train_val_split(tok.encode(text), 0.1)
    ds = SlidingWindowDataset(train, context_length=32, stride=16)
    x, y = ds[3]
    assert tok.decode(x.tolist()) == text[48:80] and tok.decode(y.tolist()) == text[49:81]
    assert len(val) == 200


def test_random_windows_is_a_function_of_the_seed_and_matches_the_windows():
    from course_lib.datasets import random_windows

    ids = torch.arange(100, 200)
    x, y = random_windows(ids, 8, 5, seed=3)
    assert x.shape == y.shape == (8, 5) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs moved by one token
    windows = SlidingWindowDataset(ids, 5, stride=1)
    starts = torch.randint(len(windows), (8,), generator=torch.Generator().manual_seed(3))
    for row, s in zip(x, starts):  # the same starts a SlidingWindowDataset sampler draws
        assert torch.equal(row, windows[int(s)][0])
    assert torch.equal(random_windows(ids, 8, 5, seed=3)[0], x)
    assert not torch.equal(random_windows(ids, 8, 5, seed=4)[0], x)
    g = torch.Generator().manual_seed(3)
    first, second = random_windows(ids, 8, 5, g)[0], random_windows(ids, 8, 5, g)[0]
    assert torch.equal(first, x) and not torch.equal(second, x)  # a generator advances
    # every window, the last one included, can be drawn
    every = random_windows(torch.arange(7), 400, 5, seed=0)[0][:, 0]
    assert set(every.tolist()) == {0, 1}


def test_random_windows_bad_arguments():
    from course_lib.datasets import random_windows

    with pytest.raises(ValueError, match="at least 6 tokens"):
        random_windows(torch.arange(5), 2, 5, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        random_windows(torch.arange(50), 0, 5, seed=0)
    with pytest.raises(TypeError, match="seed"):
        random_windows(torch.arange(50), 2, 5, seed=1.5)
    with pytest.raises(ValueError, match="1-D"):
        random_windows(torch.zeros(2, 50, dtype=torch.long), 2, 5, seed=0)
