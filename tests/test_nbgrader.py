"""The instructor workflow, run with nbgrader's real commands on a copy of the course.

1. Generating the release from solutions/ reproduces exercises/ exactly.
2. A submitted solution notebook autogrades to full marks; the untouched release to 0.
3. Hostile submissions in one batch (pilot chapter) are each graded by the rules in the
   instructor guide, the others are unaffected, and no submitted file changes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from conftest import EXERCISES, PILOT, ROOT, SOLUTIONS, assignments, run

NBGRADER = str(Path(sys.executable).with_name("nbgrader"))


def _nbgrader(course: Path, *args: str, timeout: int = 900):
    return run([NBGRADER, *args], cwd=course, timeout=timeout)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A scratch course directory with the real config and sources, and a freshly generated release."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(SOLUTIONS, course / "solutions", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for assignment in assignments():
        result = _nbgrader(course, "generate_assignment", assignment, "--force")
        assert result.returncode == 0, result.stderr[-4000:]
    return course


@pytest.mark.parametrize("assignment", assignments())
def test_release_is_generated_from_solutions(course, assignment):
    generated = {p.relative_to(course / "exercises"): p.read_bytes()
                 for p in (course / "exercises" / assignment).rglob("*") if p.is_file()}
    committed = {p.relative_to(EXERCISES): p.read_bytes()
                 for p in (EXERCISES / assignment).rglob("*") if p.is_file()}
    assert generated.keys() == committed.keys(), "exercises/ and solutions/ list different files"
    stale = [str(name) for name in generated if generated[name] != committed[name]]
    assert not stale, f"exercises/ is out of date for {stale}: run `make exercises` and commit the result"


# ---------------------------------------------------------------------------------------------
# Submissions. Each maker takes (solution notebook, release notebook) and returns the notebook a
# student hands in (or raw bytes), together with the score the grading rules give it.

def _tests(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata.nbgrader.get("solution")]


def _points(nb, test_indices) -> float:
    return sum(float(nb.cells[i].metadata.nbgrader["points"]) for i in test_indices)


def solution_as_is(sol, rel):
    return sol, _points(sol, _tests(sol))


def release_untouched(sol, rel):
    return rel, 0.0


def edited_tests_to_pass(sol, rel):
    nb = copy.deepcopy(rel)  # no answers; if the edited tests were kept, `pass` would score full marks
    for i in _tests(nb):
        nb.cells[i].source = "pass"
    return nb, 0.0


def deleted_tests(sol, rel):
    nb = copy.deepcopy(sol)  # right answers; the restored tests must run and give full marks
    nb.cells = [c for i, c in enumerate(nb.cells) if i not in _tests(sol)]
    return nb, _points(sol, _tests(sol))


def answer_and_test_deleted(sol, rel):
    nb = copy.deepcopy(sol)  # first part's answer cell and its test both gone: only that part is lost
    first_test = _tests(sol)[0]
    answer = max(i for i in range(first_test) if sol.cells[i].metadata.get("nbgrader", {}).get("solution"))
    nb.cells = [c for i, c in enumerate(nb.cells) if i not in (answer, first_test)]
    return nb, _points(sol, _tests(sol)[1:])


def graded_cell_copied(sol, rel):
    nb = copy.deepcopy(sol)
    first_answer = next(i for i, c in enumerate(sol.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    first_test = _tests(sol)[0]
    nb.cells.insert(first_answer + 1, copy.deepcopy(sol.cells[first_answer]))  # same grade id twice
    nb.cells.insert(first_test + 2, copy.deepcopy(sol.cells[first_test]))
    for number, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{number}"  # a copy made in Jupyter gets a fresh cell id, but keeps nbgrader's grade id
    return nb, _points(sol, _tests(sol))


def _insert_after_test(sol, k: int, code: str):
    nb = copy.deepcopy(sol)
    nb.cells.insert(_tests(sol)[k] + 1, nbformat.v4.new_code_cell(code))
    return nb, _points(sol, _tests(sol)[: k + 1])


def loop_ignoring_interrupts(sol, rel):
    return _insert_after_test(sol, 1, "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n"
                                      "    except KeyboardInterrupt:\n        pass")


def kernel_killer(sol, rel):
    return _insert_after_test(sol, 2, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")


def not_a_notebook(sol, rel):
    return b'{"cells": [ this is not JSON', 0.0


def warnings_on_stderr(sol, rel):
    """Right answers that print to stderr and warn while the test cells call them: full marks."""
    nb = copy.deepcopy(sol)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution") and "### BEGIN SOLUTION" in cell.source:
            lines = cell.source.split("\n")
            at = next(i for i, line in enumerate(lines) if line.strip() == "### BEGIN SOLUTION")
            indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
            lines.insert(at + 1, f"{indent}import sys, warnings; print('note', file=sys.stderr); "
                                 "warnings.warn('a harmless warning')")
            cell.source = "\n".join(lines)
    return nb, _points(sol, _tests(sol))


ROUND_TRIP = [solution_as_is, release_untouched]
STDERR_CHAPTER = "ch02_learning_with_pytorch"  # a correct answer that warns and prints to stderr keeps its points
HOSTILE = [edited_tests_to_pass, deleted_tests, answer_and_test_deleted, graded_cell_copied,
           loop_ignoring_interrupts, kernel_killer, not_a_notebook]


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(course):
    """Submit every maker's notebook for every assignment (hostile ones for the pilot), grade, export."""
    expected: dict[tuple[str, str], float] = {}
    for assignment in assignments():
        (notebook,) = [p.name for p in (SOLUTIONS / assignment).glob("*.ipynb")]
        sol = nbformat.read(SOLUTIONS / assignment / notebook, as_version=4)
        rel = nbformat.read(course / "exercises" / assignment / notebook, as_version=4)
        makers = ROUND_TRIP + (HOSTILE if assignment == PILOT else []) + \
            ([warnings_on_stderr] if assignment == STDERR_CHAPTER else [])
        for maker in makers:
            content, score = maker(sol, rel)
            target = course / "submitted" / maker.__name__ / assignment / notebook
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                nbformat.write(content, target)
            expected[(assignment, maker.__name__)] = score
    before = _fingerprint(course / "submitted")
    logs = {a: _nbgrader(course, "autograde", a) for a in assignments()}
    feedback = {a: _nbgrader(course, "generate_feedback", a) for a in assignments()}
    export = _nbgrader(course, "export", "--to", "grades.csv")
    return dict(course=course, expected=expected, before=before, logs=logs, feedback=feedback, export=export)


def test_every_submission_gets_the_score_the_rules_give(graded):
    with Gradebook(f"sqlite:///{graded['course'] / 'gradebook.db'}", "llm-from-scratch") as gb:
        got = {(a, s): gb.find_submission(a, s).score for (a, s) in graded["expected"]}
        maximum = {a: gb.find_assignment(a).max_score for a in assignments()}
    wrong = {k: (got[k], v) for k, v in graded["expected"].items() if got[k] != pytest.approx(v)}
    assert not wrong, f"(assignment, student): (got, expected) {wrong}"
    for a in assignments():
        assert graded["expected"][(a, "solution_as_is")] == maximum[a] >= 8


def test_batch_completes_and_names_the_unreadable_submission(graded):
    for assignment, result in graded["logs"].items():
        log = result.stdout + result.stderr
        graded_students = {s for (a, s) in graded["expected"] if a == assignment}
        for student in graded_students - {"not_a_notebook"}:
            assert (graded["course"] / "autograded" / student / assignment).is_dir(), log[-3000:]
        if assignment == PILOT:
            # nbgrader exits 1 when any notebook could not be read, and says whose it was.
            assert result.returncode == 1 and "for student 'not_a_notebook'" in log
        else:
            assert result.returncode == 0, log[-3000:]


def test_hostile_cells_are_reported_in_the_graded_notebook(graded):
    nb = nbformat.read(graded["course"] / "autograded" / "loop_ignoring_interrupts" / PILOT /
                       next((SOLUTIONS / PILOT).glob("*.ipynb")).name, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors[0].ename == "CellTimeoutError" and all(e.ename == "NotRun" for e in errors[1:])


def test_no_submitted_file_is_changed_or_lost(graded):
    assert _fingerprint(graded["course"] / "submitted") == graded["before"]


def test_feedback_and_csv_export(graded):
    course = graded["course"]
    assert graded["export"].returncode == 0, graded["export"].stderr[-3000:]
    with open(course / "grades.csv", newline="") as f:
        rows = {(r["assignment"], r["student_id"]): float(r["score"]) for r in csv.DictReader(f)}
    # nbgrader exports one row per student and assignment; an assignment not handed in scores 0.
    assert {k: rows[k] for k in graded["expected"]} == pytest.approx(graded["expected"])
    assert all(score == 0 for key, score in rows.items() if key not in graded["expected"])
    for (assignment, student) in graded["expected"]:
        if student != "not_a_notebook":
            assert list((course / "feedback" / student / assignment).glob("*.html")), (assignment, student)
