"""Check your exercise notebook before you hand it in: ``python -m course_lib.selfcheck NOTEBOOK``.

Runs a fresh copy of the saved notebook from top to bottom (your file is not changed), then
prints one line per graded part: PASS, or FAIL with the message of the test that failed.
Exits with status 0 only when every visible test passes, 1 when any fails, 2 when the file
cannot be checked. Hidden tests run only at grading, so a full pass here is necessary, not
sufficient. In a notebook, call :func:`check` instead.

(``nbgrader validate`` exits 0 even when tests fail, so it cannot be used in scripts.)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_lib.grading import StopAtHangOrCrash

_NESTED = "COURSE_LIB_SELFCHECK_RUNNING"


@dataclass
class PartResult:
    title: str
    grade_id: str
    points: float
    passed: bool
    message: str


def _title_before(cells: list, index: int) -> str:
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("#"):
            return cell.source.lstrip().splitlines()[0].lstrip("#").strip()
    return ""


def _failure(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip()
            return f"{out.get('ename', 'Error')}: {value}" if value else str(out.get("ename", "Error"))
    return None


def run_checks(path: str | os.PathLike, timeout: int = 60) -> list[PartResult]:
    """Execute a copy of the notebook and return the result of each graded test cell."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook (give the path to your .ipynb file)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for broken files
        raise ValueError(f"{path} is not a readable notebook ({exc.__class__.__name__}: {exc})") from exc
    tests = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade")
             and not c.metadata.nbgrader.get("solution") and c.cell_type == "code"]
    if not tests:
        raise ValueError(f"{path} has no graded test cells: is it an exercise notebook of this course?")
    executor = StopAtHangOrCrash(timeout=timeout, kernel_name="python3")
    os.environ[_NESTED] = "1"
    try:
        nb, _ = executor.preprocess(nb, {"metadata": {"path": str(path.parent.resolve())}})
    finally:
        os.environ.pop(_NESTED, None)
    results = []
    for i in tests:
        meta = nb.cells[i].metadata.nbgrader
        failure = _failure(nb.cells[i])
        results.append(PartResult(_title_before(nb.cells, i), meta["grade_id"], float(meta.get("points", 0)),
                                  failure is None, failure or ""))
    return results


def report(results: list[PartResult]) -> str:
    lines = []
    for r in results:
        status = "PASS" if r.passed else "FAIL"
        title = f"{r.title} ({r.grade_id})" if r.title else r.grade_id
        lines.append(f"{status}  {title}  [{r.points:g} pt]")
        if not r.passed:
            lines.extend(f"        {line}" for line in r.message.splitlines()[:8])
    passed = sum(r.passed for r in results)
    got, total = sum(r.points for r in results if r.passed), sum(r.points for r in results)
    lines.append(f"{passed} of {len(results)} parts pass their visible tests ({got:g} of {total:g} points; "
                 "hidden tests run at grading).")
    return "\n".join(lines)


def check(path: str | os.PathLike, timeout: int = 60) -> bool:
    """Print the report for a saved notebook; True when every visible test passes. Save first!"""
    if os.environ.get(_NESTED):
        print("selfcheck: skipped (this cell is itself being run by a self-check)")
        return True
    results = run_checks(path, timeout)
    print(report(results))
    return all(r.passed for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.selfcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="path to your exercise notebook (.ipynb), saved")
    parser.add_argument("--timeout", type=int, default=60, help="seconds each cell may run (default 60)")
    args = parser.parse_args(argv)
    try:
        return 0 if check(args.notebook, args.timeout) else 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"selfcheck: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
