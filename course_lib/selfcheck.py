"""Check your exercise notebook before you hand it in: ``python -m course_lib.selfcheck NOTEBOOK``.

Runs a fresh copy of the saved notebook from top to bottom (your file is not changed), then
prints one line per graded part: PASS, or FAIL with the message of the test that failed.
Exits with status 0 only when every visible test passes, 1 when any fails, 2 when the file
cannot be checked. Hidden tests run only at grading, so a full pass here is necessary, not
sufficient. In a notebook, call :func:`check` instead.

It also tells you about things that make a PASS here meaningless, each reported as a FAIL,
because grading ignores them: a test cell that differs from the one handed out (grading puts the
original back; the release records a checksum of every test cell), code that changes how IPython
runs or reports cells (input or AST transformers, custom exception handlers, a replaced
``showtraceback``, a trace function), and a notebook of another assignment than its file name says.

It needs only ``nbclient`` and a Python kernel, not the instructor's grading tools.
(``nbgrader validate`` exits 0 even when tests fail, so it cannot be used in scripts.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

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


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_test(cell) -> bool:
    return cell.cell_type == "code" and bool(_meta(cell).get("grade")) and not _meta(cell).get("solution")


def _checksum(cell) -> str:
    """nbgrader's checksum of a cell (``nbgrader.utils.compute_checksum``), as the release records it."""
    meta = _meta(cell)
    grade, solution = bool(meta.get("grade")), bool(meta.get("solution"))
    locked = False if solution else True if grade else bool(meta.get("locked", False))
    digest = hashlib.md5()
    for part in (cell.source, cell.cell_type, str(grade), str(solution), str(locked), meta["grade_id"]):
        digest.update(part.encode("utf-8"))
    if grade:
        digest.update(str(float(meta["points"])).encode("utf-8"))
    return digest.hexdigest()


# What the kernel reports after the run: is IPython still running and reporting cells as usual?
_PROBE = ("(lambda ip, sys: {'input_transformers_post': len(ip.input_transformers_post), "
          "'ast_transformers': len(ip.ast_transformers), "
          "'input_transformers_cleanup': [getattr(f, '__name__', type(f).__name__) for f in "
          "ip.input_transformers_cleanup], 'custom_exceptions': len(ip.custom_exceptions), "
          "'showtraceback': sorted(k for k in ('showtraceback', '_showtraceback', 'run_cell', 'run_ast_nodes', "
          "'run_code', 'transform_cell') if k in vars(ip) and not str(getattr(getattr(vars(ip)[k], '__func__', "
          "vars(ip)[k]), '__module__', '')).startswith(('IPython', 'ipykernel'))), 'settrace': sys.gettrace() is not None})"
          "(get_ipython(), __import__('sys'))")
_CLEANUP = ["leading_empty_lines", "leading_indent", "PromptStripper", "PromptStripper"]


def _hook_problems(report: dict | None) -> list[str]:
    if report is None:
        return ["the kernel did not answer a check after the run (is IPython's input hooked?)"]
    problems = []
    if report.get("input_transformers_post"):
        problems.append("adds IPython input transformers (get_ipython().input_transformers_post)")
    if report.get("ast_transformers"):
        problems.append("adds IPython AST transformers (get_ipython().ast_transformers)")
    if report.get("input_transformers_cleanup") != _CLEANUP:
        problems.append("changes IPython's input_transformers_cleanup")
    if report.get("custom_exceptions"):
        problems.append("installs a custom exception handler (set_custom_exc)")
    if report.get("showtraceback"):
        problems.append("replaces IPython methods: " + ", ".join(report["showtraceback"]))
    if report.get("settrace"):
        problems.append("leaves a trace function set (sys.settrace)")
    return problems


def _execute(nb, path: Path, timeout: int) -> dict | None:
    """Run the notebook's code cells in a fresh kernel (stop at a hang or a dead kernel); probe IPython."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=False, resources={"metadata": {"path": str(path.parent.resolve())}})
    stopped = None
    probe = None
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if stopped:
                cell.outputs = [nbformat.v4.new_output("error", ename="NotRun", evalue=f"not run: {stopped}",
                                                       traceback=[])]
                continue
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                stopped = f"cell {index} ran longer than {timeout} s"
                cell.outputs.append(nbformat.v4.new_output("error", ename="CellTimeoutError", evalue=stopped,
                                                           traceback=[]))
            except DeadKernelError:
                stopped = f"the kernel died in cell {index}"
                cell.outputs.append(nbformat.v4.new_output("error", ename="DeadKernelError", evalue=stopped,
                                                           traceback=[]))
        if not stopped:
            try:
                msg_id = client.kc.execute("", silent=True, store_history=False, user_expressions={"probe": _PROBE})
                reply = client.wait_for_reply(msg_id)
                data = reply["content"]["user_expressions"]["probe"]["data"]["text/plain"]
                probe = _literal(data)
            except Exception:  # noqa: BLE001 - no answer is itself the finding
                probe = None
    return probe if not stopped else {}


def _literal(text: str):
    import ast

    return ast.literal_eval(text)


def _chapter(text: str) -> str | None:
    match = re.match(r"(ch\d\d)", text)
    return match.group(1) if match else None


def run_checks(path: str | os.PathLike, timeout: int = 60) -> list[PartResult]:
    """Execute a copy of the notebook and return the result of each graded test cell.

    Besides one result per test cell, the list holds a failing result (grade id ``notebook``) for
    each thing that would make the report untrue: an edited test cell, IPython hooks, a notebook
    of another assignment.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook (give the path to your .ipynb file)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for broken files
        raise ValueError(f"{path} is not a readable notebook ({exc.__class__.__name__}: {exc})") from exc
    tests = [i for i, c in enumerate(nb.cells) if _is_test(c)]
    if not tests:
        raise ValueError(f"{path} has no graded test cells: is it an exercise notebook of this course?")
    problems: list[PartResult] = []

    def problem(message: str) -> None:
        problems.append(PartResult("Before you hand in", "notebook", 0.0, False, message))

    released = any("checksum" in _meta(c) for c in nb.cells)  # the instructor's source has no checksums
    edited = [_meta(nb.cells[i])["grade_id"] for i in tests
              if released and _meta(nb.cells[i]).get("checksum") != _checksum(nb.cells[i])]
    if edited:
        problem(f"test cell(s) {', '.join(edited)} differ from the ones handed out: grading puts the original "
                "tests back, so a PASS of an edited test means nothing. Copy the original test cells back "
                "from a fresh copy of the exercise.")
    ids = {_chapter(str(_meta(c).get("grade_id", ""))) for c in nb.cells if _meta(c)} - {None}
    named = _chapter(path.name) or _chapter(path.parent.name)
    if named and ids and ids != {named}:
        problem(f"{path.name} holds the exercises of {', '.join(sorted(ids))}, not {named}: "
                "check that you hand in the right notebook.")
    os.environ[_NESTED] = "1"
    try:
        probe = _execute(nb, path, timeout)
    finally:
        os.environ.pop(_NESTED, None)
    if probe != {}:  # {}: the run stopped early (a hang or a crash), which the results already show
        hooks = _hook_problems(probe)
        if hooks:
            problem("the notebook changes how IPython runs or reports cells, so these results cannot be "
                    "trusted (grading runs the tests where your code cannot reach them): " + "; ".join(hooks))
    results = []
    for i in tests:
        meta = nb.cells[i].metadata.nbgrader
        failure = _failure(nb.cells[i])
        results.append(PartResult(_title_before(nb.cells, i), meta["grade_id"], float(meta.get("points", 0)),
                                  failure is None, failure or ""))
    return results + problems


def report(results: list[PartResult]) -> str:
    lines = []
    parts = [r for r in results if r.grade_id != "notebook"]
    for r in results:
        status = "PASS" if r.passed else "FAIL"
        title = f"{r.title} ({r.grade_id})" if r.title else r.grade_id
        lines.append(f"{status}  {title}  [{r.points:g} pt]" if r.grade_id != "notebook" else f"{status}  {r.title}")
        if not r.passed:
            lines.extend(f"        {line}" for line in r.message.splitlines()[:8])
    passed = sum(r.passed for r in parts)
    got, total = sum(r.points for r in parts if r.passed), sum(r.points for r in parts)
    lines.append(f"{passed} of {len(parts)} parts pass their visible tests ({got:g} of {total:g} points; "
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
