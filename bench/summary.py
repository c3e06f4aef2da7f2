"""The README's performance table, made from the benchmarks' saved results (bench/results/*.json).

    python bench/summary.py            # print the table
    python bench/summary.py --readme   # put it into README.md between its performance markers

tests/test_bench.py checks that README.md holds exactly this table, so the README's figures are
always the measured ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- performance:start (made by bench/summary.py) -->", "<!-- performance:end -->"


def _load(name: str):
    return json.loads((RESULTS / f"{name}.json").read_text())


def _by_cpu(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["cpu"], []).append(row)
    return grouped


def _machine(row: dict) -> str:
    return f"{row['cpu']} ({row['isa']})"


def _precision_used(run: dict) -> str:
    chosen = run["recipe"]["precision"]
    return run["auto_precision"] if chosen == "auto" else chosen


def table() -> str:
    throughput, budget, books, grading = (_load(n) for n in ("train_throughput", "loss_at_budget", "book_build", "autograde"))
    chapters = grading["per_chapter"]
    slowest = max(chapters, key=lambda m: m["seconds_per_submission"])
    sequential, parallel = grading["class"]
    speed, readable_speed, memory = [], [], []
    for cpu, rows in _by_cpu(throughput).items():
        auto = "bf16-autocast" if rows[0]["auto_precision"] == "bf16" else "fp32"
        ref = {(r["arch"], r["attention"], r["precision"]): r for r in rows if r["size"] == "reference"}
        fused, readable = ref["fast", "fused", auto], ref["fast", "readable", auto]
        speed.append(f"{fused['tokens_per_s']:,} tokens/s, {auto} ({fused['tflops'] * 1000:.0f} GFLOP/s) on {cpu}")
        readable_speed.append(f"{readable['tokens_per_s']:,} tokens/s on {cpu}")
        memory.append(max(r["peak_rss_mib"] for r in rows if r["size"] == "reference"))
    recipe_runs = [r for r in budget if r["tag"] == "recipe"]
    rows = [
        ("training throughput, reference model (4 layers, width 128, context 64, batch 12), fused attention, "
         "the precision `precision=\"auto\"` picks on that CPU", "; ".join(speed),
         "≥ 27,000 tokens/s (a well-known minimal implementation: about 24,000)"),
        ("the same with the chapter's readable attention", "; ".join(readable_speed), "within 10 % of 24,000"),
        ("validation loss after 75 s of training, Tiny Shakespeare (characters)",
         "; ".join(f"{r['val_loss']:.3f} ({r['steps']:,} steps, {_precision_used(r)}) on {r['cpu']}"
                   for r in recipe_runs),
         "≤ 1.70 (the minimal implementation: about 1.89)"),
        ("website build, cold (every chapter executed) / warm",
         "; ".join(f"{b['cold_s']:.0f} s / {b['warm_s']:.1f} s on {b['cpu']} ({b['isa']})"
                   + (f" ({b['note']})" if b.get("note") else "") for b in books), "≤ 6 min / ≤ 30 s"),
        ("autograding, seconds per submission (slowest chapter)",
         f"{slowest['seconds_per_submission']:.1f} s ({slowest['assignment']})", "≤ 8 s"),
        ("autograding chapter 5 in the sandbox, tests judged outside the student's process: median per "
         "submission on one core", f"{grading['per_submission']['median_s']:.1f} s "
         f"({grading['per_submission']['cpu_s_per_submission']:.2f} CPU s, load average "
         f"{grading['per_submission']['load_average_at_start']:.1f} at the start)", "≤ 4 s"),
        (f"autograding a class of {sequential['submissions']}: nbgrader / "
         f"`course_grading.parallel_grading --jobs {parallel['jobs']}`",
         f"{sequential['wall_s']:.0f} s / {parallel['wall_s']:.0f} s = {parallel['speedup']:.2f}x, "
         f"gradebook and CSV {'identical' if parallel['gradebook_identical'] and parallel['csv_identical'] else 'DIFFERENT'}",
         "≥ 1.8x, identical"),
        ("peak memory: training / website build / grading a class in parallel",
         f"{max(memory)} MiB / {max(b['peak_rss_mib_largest_process'] for b in books)} MiB (largest process) / "
         f"{parallel['peak_tree_rss_mib']} MiB (all processes)", ""),
    ]
    lines = ["| measured | result | goal |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    machines = sorted({_machine(r) for r in throughput + budget + books})
    sandboxed = "sandboxed, tests judged outside the student's process" if grading["context"].get("sandbox") else \
        "before grading moved into the sandbox"
    machine = (f"Measured on {' and '.join(machines)}, 2 cores each, PyTorch {throughput[0]['torch']}; the autograding "
               f"figures per chapter and for the class on {grading['context'].get('cpu', 'the Intel machine')} "
               f"({sandboxed}), the median on {grading['per_submission']['context']['cpu']}. Every figure, with more "
               f"detail and the CPU it comes from, is on the book's performance page.")
    return "\n".join([START, *lines, "", machine, END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    text = table()
    if not args.readme:
        print(text)
        return
    readme = ROOT / "README.md"
    current = readme.read_text()
    if START not in current or END not in current:
        raise SystemExit(f"README.md has no performance markers; add the two lines\n{START}\n{END}\nwhere the table goes")
    before, rest = current.split(START, 1)
    after = rest.split(END, 1)[1]
    readme.write_text(before + text + after)
    print("README.md updated")


if __name__ == "__main__":
    main()
