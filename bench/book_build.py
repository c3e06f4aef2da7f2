"""Time a cold and a warm build of the course website (issue: performance and scale).

Cold: a fresh copy of the repository's tracked files with no ``_build`` (so no execution cache):
every chapter is executed. The offline web assets (MathJax, the widget manager) are copied from
``book/_static/vendor`` when this checkout has them, so the figure is the build, not npm's
download. Warm: the same command again with nothing changed. Both run ``jupyter-book build . -W -n
--keep-going``, the command of ``make book``. Reports wall seconds, each chapter's execution time
(from the execution cache) and the peak memory of the largest process (a chapter's kernel or the
builder). Prints JSON and a one-line summary; ``--save`` writes ``bench/results/book_build.json``.

    python bench/book_build.py [--save] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe, save_rows  # bench/machine.py: this script runs as a file

ROOT = Path(__file__).resolve().parents[1]


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    vendor = ROOT / "book" / "_static" / "vendor"
    if vendor.is_dir():
        shutil.copytree(vendor, dest / "book" / "_static" / "vendor")


def build(where: Path) -> tuple[float, int]:
    """Wall seconds of one build, and its exit code (the output goes to build.log there)."""
    book = Path(sys.executable).with_name("jupyter-book")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    with open(where / "build.log", "a") as log:
        code = subprocess.run([str(book), "build", ".", "-W", "-n", "--keep-going"], cwd=where, env=env,
                              stdout=log, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - start, code


def chapter_seconds(where: Path) -> dict[str, float]:
    from jupyter_cache import get_cache

    cache = get_cache(where / "_build" / ".jupyter_cache")
    return {Path(r.uri).name: round(r.data.get("execution_seconds", float("nan")), 1)
            for r in cache.list_cache_records()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", action="store_true", help="write bench/results/book_build.json")
    parser.add_argument("--keep", help="build in this (empty or new) folder and keep it")
    args = parser.parse_args()
    where = Path(args.keep or tempfile.mkdtemp(prefix="book-build-"))
    where.mkdir(parents=True, exist_ok=True)
    copy_tree(where)
    cold, cold_code = build(where)
    chapters = chapter_seconds(where)
    warm, warm_code = build(where)
    result = {
        "cold_s": round(cold, 1), "warm_s": round(warm, 1), "cold_ok": cold_code == 0, "warm_ok": warm_code == 0,
        "chapter_execution_s": chapters,
        "peak_rss_mib_largest_process": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "cpus": os.cpu_count(), "load_average_at_end": round(os.getloadavg()[0], 2), **describe(),
    }
    print(json.dumps(result))
    if args.save:
        save_rows(ROOT / "bench" / "results" / "book_build.json", [result], key=("cpu", "isa"))  # other CPUs stay
    if not args.keep:
        shutil.rmtree(where, ignore_errors=True)
    if cold_code or warm_code:
        sys.exit(f"the build failed (exit {cold_code or warm_code}); see build.log (rerun with --keep DIR)")
    print(f"summary: cold build {cold:.0f} s, warm rebuild {warm:.1f} s, "
          f"slowest chapter {max(chapters.values(), default=0):.0f} s")


if __name__ == "__main__":
    main()
