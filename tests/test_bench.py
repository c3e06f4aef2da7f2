"""The training benchmarks run and report what the performance page reads (tiny sizes; no timing asserts).

The figures themselves are measured by running the scripts on an idle machine (see
book/performance.ipynb); here we only make sure the scripts still work and that the committed
results have the fields the page uses.
"""

from __future__ import annotations

import importlib.util
import json
import sys

from conftest import ROOT, run


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_train_throughput_reports_every_field():
    result = run([sys.executable, "bench/train_throughput.py", "--quick", "--steps", "2", "--warmup", "1",
                  "--threads", "1"], cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _json_lines(result.stdout)
    assert [(r["attention"], r["precision"]) for r in rows] == [
        ("readable", "fp32"), ("readable", "bf16-autocast"), ("fused", "fp32"), ("fused", "bf16-autocast")]
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["of_matmul_peak"] and r["parameters"] == 804_096
        assert r["step_gflop"] > 3  # 6 FLOPs per weight and token alone give 6 * 0.8 M * 768 = 3.7 GFLOP
    assert result.stdout.strip().splitlines()[-1].startswith("summary: ")


def test_loss_at_budget_learns_in_a_few_steps():
    result = run([sys.executable, "bench/loss_at_budget.py", "--steps", "30", "--threads", "1",
                  "--recipe", '{"max_lr": 3e-3}'], cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = _json_lines(result.stdout)
    assert row["steps"] == 30 and row["recipe"]["max_lr"] == 3e-3
    assert row["val_loss"] < 4.17  # ln(65): below a uniform guess over the 65 characters after 30 steps


MACHINE = {"cpu", "isa", "cores", "auto_precision", "torch"}  # bench/machine.py: every result names its CPU


def test_committed_results_have_what_the_performance_page_reads():
    results = ROOT / "bench" / "results"
    throughput = json.loads((results / "train_throughput.json").read_text())
    for row in throughput:
        assert {"size", "arch", "attention", "precision", "tokens_per_s", "tflops", "of_matmul_peak",
                "matmul_peak_tflops", "parameters", "peak_rss_mib", "threads"} | MACHINE <= set(row)
    for cpu in {row["cpu"] for row in throughput}:  # each CPU has the rows its summary line reads
        auto = {"bf16": "bf16-autocast", "fp32": "fp32"}[next(r for r in throughput if r["cpu"] == cpu)["auto_precision"]]
        assert {(r["arch"], r["attention"], r["precision"]) for r in throughput if r["cpu"] == cpu} >= {
            ("fast", "fused", auto), ("fast", "readable", auto)}
    budget = json.loads((results / "loss_at_budget.json").read_text())
    for run in budget:
        assert {"tag", "val_loss", "train_seconds", "steps", "tokens_seen", "tokens_per_s", "parameters", "recipe",
                "history", "peak_rss_mib"} | MACHINE <= set(run)
    assert any(run["tag"] == "recipe" for run in budget)
    for book in json.loads((results / "book_build.json").read_text()):
        assert book["cold_ok"] and book["warm_ok"] and book["chapter_execution_s"] and MACHINE <= set(book)
    assert (ROOT / "book" / "figures" / "loss_at_budget.png").stat().st_size > 10_000


def test_saving_keeps_other_cpus_results(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import machine

    path = tmp_path / "results.json"
    machine.save_rows(path, [{"cpu": "A", "tag": "x", "v": 1}, {"cpu": "A", "tag": "y", "v": 2}], key=("cpu", "tag"))
    machine.save_rows(path, [{"cpu": "B", "tag": "x", "v": 3}], key=("cpu", "tag"))
    machine.save_rows(path, [{"cpu": "A", "tag": "x", "v": 4}], key=("cpu", "tag"))
    assert sorted((r["cpu"], r["tag"], r["v"]) for r in json.loads(path.read_text())) == [
        ("A", "x", 4), ("A", "y", 2), ("B", "x", 3)]
    here = machine.describe()
    assert here["auto_precision"] in ("bf16", "fp32") and here["cpu"] and here["isa"]


def test_readme_shows_the_measured_figures():
    spec = importlib.util.spec_from_file_location("bench_summary", ROOT / "bench" / "summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    assert summary.table() in (ROOT / "README.md").read_text(), (
        "README.md's performance table differs from bench/results/: run `python bench/summary.py --readme`")
