"""scripts/scaling.py (chapter 11's data) on a tiny setting: it runs, and its result has the schema the chapter reads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "scaling.py"
RUN_KEYS = {"n_layers", "d_model", "n_heads", "seed", "steps", "parameters", "matrix_weights", "tokens", "flops",
            "train_seconds", "val_loss", "char_accuracy", "completion_logprob", "exact_match", "curve"}


def check_schema(result: dict) -> None:
    assert {"experiment", "task", "example", "command", "machine", "recipe", "runs"} <= set(result)
    assert result["command"].startswith("python scripts/scaling.py")
    assert {"cpu", "isa", "cores", "torch"} <= set(result["machine"])
    for run in result["runs"]:
        assert RUN_KEYS <= set(run)
        assert 0 <= run["exact_match"] <= run["char_accuracy"] <= 1
        assert run["val_loss"] > 0 and run["completion_logprob"] < 0
        by_length = run["exact_match_by_length"]  # all of the first k letters right: can only fall as k grows
        assert by_length[-1] == run["exact_match"] and all(b <= a for a, b in zip(by_length, by_length[1:]))
        assert by_length[0] == run["char_accuracy_by_position"][0]
        assert len(by_length) == len(run["char_accuracy_by_position"]) == result["recipe"]["complete"]
        assert run["flops"] == 6 * run["matrix_weights"] * run["tokens"]
        steps = [point["step"] for point in run["curve"]]
        assert steps == sorted(steps) and steps[-1] == run["steps"]
        assert all({"step", "tokens", "flops", "val_loss"} <= set(point) for point in run["curve"])
        assert run["curve"][-1]["val_loss"] == run["val_loss"]


def test_tiny_run_and_merge(tmp_path):
    out = tmp_path / "s.json"
    subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    check_schema(result)
    assert len(result["runs"]) == 2 and result["runs"][0]["parameters"] < result["runs"][1]["parameters"]
    assert len(result["example"]["complete"]) == result["recipe"]["complete"] and result["example"]["complete"].isalpha()
    merged = tmp_path / "m.json"
    subprocess.run([sys.executable, str(SCRIPT), "--merge", str(out), str(out), "--out", str(merged)],
                   check=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    both = json.loads(merged.read_text())
    check_schema(both)
    assert len(both["runs"]) == 4 and len(both["parts"]) == 2


def test_completion_items_are_long_words():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import scaling
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    text = "x" * scaling.READ + " the abbreviation of Shakespeare, short words, understanding."
    items = scaling.completion_items(text, n=3)
    words = sorted(text[p:].split()[0].strip(",.") for p in items)
    assert words == ["Shakespeare", "abbreviation", "understanding"]
    with pytest.raises(ValueError, match="long words"):
        scaling.completion_items(text, n=4)


def test_committed_result_has_the_schema():
    path = ROOT / "bench" / "results" / "scaling.json"
    if not path.exists():
        pytest.skip("bench/results/scaling.json not produced yet")
    check_schema(json.loads(path.read_text()))
