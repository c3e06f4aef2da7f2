"""course_lib.kv_cache: cached decoding gives the same tokens as recomputing the context, for GPT and Llama."""

from __future__ import annotations

import pytest
import torch

from course_lib.generation import generate
from course_lib.gpt import GPT, GPTConfig
from course_lib.kv_cache import KVCache, generate_cached, kv_cache_bytes
from course_lib.llama import Llama, LlamaConfig


def models():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=61, context_length=48, d_model=32, n_layers=2, n_heads=4)).eval()
    llama = Llama(LlamaConfig(vocab_size=61, context_length=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=64)).eval()
    # larger weights than the 0.02 initialisation, so the logits are far from uniform and sampling is informative
    with torch.no_grad():
        for model in (gpt, llama):
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(10)
    return {"gpt": gpt, "llama": llama}


MODELS = models()


@pytest.mark.parametrize("name", MODELS)
def test_cached_logits_equal_full_forward(name):
    model = MODELS[name]
    idx = torch.randint(61, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)  # (2, 30, V)
        cache = KVCache.for_model(model)
        pieces = [model(idx[:, :7], cache=cache)]  # a prompt of 7, then chunks of 1 and 5 tokens
        assert cache.length == 7
        pieces.append(model(idx[:, 7:8], cache=cache))
        pieces.append(model(idx[:, 8:13], cache=cache))
        for t in range(13, 30):
            pieces.append(model(idx[:, t:t + 1], cache=cache))
    assert cache.length == 30
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_tokens_identical(name):
    model = MODELS[name]
    prompt = torch.randint(61, (3, 5), generator=torch.Generator().manual_seed(2))
    slow = generate(model, prompt, max_new_tokens=40, context_length=48, temperature=0)
    fast = generate_cached(model, prompt, max_new_tokens=40, temperature=0)
    assert fast.shape == (3, 45)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("filters", [{}, {"top_k": 5}, {"top_p": 0.9}])
def test_seeded_sampling_tokens_identical(name, filters):
    model = MODELS[name]
    prompt = torch.randint(61, (4, 3), generator=torch.Generator().manual_seed(3))
    slow = generate(model, prompt, 40, context_length=48, temperature=0.9, generator=torch.Generator().manual_seed(7),
                    **filters)
    fast = generate_cached(model, prompt, 40, temperature=0.9, generator=torch.Generator().manual_seed(7), **filters)
    assert torch.equal(fast, slow)
    other = generate_cached(model, prompt, 40, temperature=0.9, generator=torch.Generator().manual_seed(8), **filters)
    assert not torch.equal(other, fast)  # the seed matters: the test is not comparing two greedy runs


def test_cache_stores_kv_heads_not_query_heads():
    model = MODELS["llama"]
    cache = KVCache.for_model(model)
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    assert cache.keys[0].shape == (1, 2, 48, 8)  # 2 key/value heads of width 8, 48 positions
    assert cache.nbytes() == kv_cache_bytes(2, 2, 8, 48, bytes_per_number=4)


def test_kv_cache_bytes_for_real_shapes():
    assert kv_cache_bytes(32, 32, 128, tokens=1) == 524_288  # Llama-2-7B: 0.5 MiB per token in 16 bits
    assert kv_cache_bytes(32, 8, 128, tokens=8192) == 2 ** 30  # Llama-3-8B: 1 GiB for 8,192 tokens


def test_errors():
    model = MODELS["gpt"]
    with pytest.raises(ValueError, match="context_length"):
        generate_cached(model, torch.zeros(1, 40, dtype=torch.long), max_new_tokens=10)
    cache = KVCache.for_model(model)
    with torch.no_grad():
        model(torch.zeros(1, 40, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="context_length"):
            model(torch.zeros(1, 9, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="positive|>= 1"):
        KVCache(0, 10)
    assert torch.equal(generate_cached(model, torch.ones(1, 2, dtype=torch.long), 0), torch.ones(1, 2, dtype=torch.long))


def test_benchmark_runs_and_committed_results_have_the_fields_the_chapter_reads():
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "bench/kv_cache.py", "--new", "12"], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [row["model"] for row in rows] == ["gpt", "llama"]
    assert all(row["same_tokens"] and row["positions"] == [1] and row["speedup"] > 0 for row in rows)
    saved = json.loads((root / "bench" / "results" / "kv_cache.json").read_text())
    for row in saved:
        assert {"model", "cpu", "isa", "new_tokens", "positions", "ms_cached", "ms_uncached", "curve_ms_cached",
                "curve_ms_uncached", "seconds_cached", "seconds_uncached", "speedup", "same_tokens"} <= set(row)
        assert len(row["curve_ms_cached"]) == row["new_tokens"] == 512
