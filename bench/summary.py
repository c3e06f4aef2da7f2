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


def table() -> str:
    throughput, budget, book, grading = (_load(n) for n in ("train_throughput", "loss_at_budget", "book_build", "autograde"))
    ref = {(r["arch"], r["attention"], r["precision"]): r for r in throughput if r["size"] == "reference"}
    fused, readable = ref["fast", "fused", "bf16-autocast"], ref["fast", "readable", "bf16-autocast"]
    recipe = budget["recipe"]
    chapters = grading["per_chapter"]
    slowest = max(chapters, key=lambda m: m["seconds_per_submission"])
    sequential, parallel = grading["class"]
    rows = [
        ("training throughput, reference model (4 layers, width 128, context 64, batch 12), fused attention, "
         "bf16 autocast", f"{fused['tokens_per_s']:,} tokens/s ({fused['tflops'] * 1000:.0f} GFLOP/s)",
         "≥ 27,000 tokens/s (a well-known minimal implementation: about 24,000)"),
        ("the same with the chapter's readable attention", f"{readable['tokens_per_s']:,} tokens/s",
         "within 10 % of 24,000"),
        ("validation loss after 75 s of training, Tiny Shakespeare (characters)",
         f"{recipe['val_loss']:.3f} ({recipe['steps']:,} steps, {recipe['parameters']:,} parameters)",
         "≤ 1.70 (the minimal implementation: about 1.89)"),
        ("website build, cold (every chapter executed) / warm", f"{book['cold_s']:.0f} s / {book['warm_s']:.1f} s",
         "≤ 6 min / ≤ 30 s"),
        ("autograding, seconds per submission (slowest chapter)",
         f"{slowest['seconds_per_submission']:.1f} s ({slowest['assignment']})", "≤ 8 s"),
        (f"autograding a class of {sequential['submissions']}: nbgrader / "
         f"`course_lib.parallel_grading --jobs {parallel['jobs']}`",
         f"{sequential['wall_s']:.0f} s / {parallel['wall_s']:.0f} s = {parallel['speedup']:.2f}x, "
         f"gradebook and CSV {'identical' if parallel['gradebook_identical'] and parallel['csv_identical'] else 'DIFFERENT'}",
         "≥ 1.8x, identical"),
        ("peak memory: training / website build / grading a class in parallel",
         f"{max(r['peak_rss_mib'] for r in throughput if r['size'] == 'reference')} MiB / "
         f"{book['peak_rss_mib_largest_process']} MiB (largest process) / {parallel['peak_tree_rss_mib']} MiB (all processes)",
         ""),
    ]
    lines = ["| measured | result | goal |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    machine = (f"Measured on {throughput[0]['cpu']} with {grading['context']['cpus']} cores (AVX-512, AMX), "
               f"PyTorch {throughput[0]['torch']}; every figure, with more detail, is on the book's performance page.")
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
