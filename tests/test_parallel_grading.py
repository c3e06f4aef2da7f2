"""`python -m course_grading.parallel_grading` leaves exactly what `nbgrader autograde` leaves.

One small class of the pilot chapter (right, partly wrong, blank, a copied graded cell, a notebook
that kills its kernel, a file that is not a notebook; one submission on time and one late, with a
late penalty) is graded sequentially by nbgrader in one copy of a course and with the parallel
command (2 jobs) in another. The two gradebooks, the exported CSVs and the autograded notebooks
must be the same; the unreadable submission must be named and make the exit status 1. Then one
student with a manual score is re-graded with --force in both copies.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
import stat
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from conftest import PILOT, ROOT, SOLUTIONS, run
from course_grading.parallel_grading import dump_gradebook
from test_nbgrader import (_nbgrader, _points, _tests, graded_cell_copied, kernel_killer, not_a_notebook,
                           release_untouched, solution_as_is)

DUE = "2030-01-15 12:00:00"
ON_TIME = "2030-01-15 11:00:00"
LATE = "2030-01-16 12:00:00"


def partly_wrong(sol, rel):
    """The solution with the first answer left as handed out: that part's tests fail, the rest pass."""
    nb = copy.deepcopy(sol)
    first_answer = next(i for i, c in enumerate(sol.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    assert rel.cells[first_answer].metadata.nbgrader.grade_id == sol.cells[first_answer].metadata.nbgrader.grade_id
    nb.cells[first_answer] = copy.deepcopy(rel.cells[first_answer])
    return nb, _points(sol, _tests(sol)[1:])


CLASS = [solution_as_is, partly_wrong, release_untouched, graded_cell_copied, kernel_killer, not_a_notebook]
TIMESTAMPS = {"solution_as_is": ON_TIME, "partly_wrong": LATE}


def _parallel(course: Path, *args: str):
    return run([sys.executable, "-m", "course_grading.parallel_grading", *args], cwd=course, timeout=600)


def _autograded(course: Path) -> dict[str, tuple[int, object]]:
    """Every file under autograded/ with its permissions and content.

    Three things in them depend on the run, not on the grading (two sequential runs differ in
    them too), and are normalised: the wall-clock times each cell ran (nbclient's
    ``metadata.execution``) are dropped; so is the execution count of a cell whose kernel died in
    it (whether the dying kernel's "execute_input" message, which carries the count, arrives first
    is a race); and consecutive pieces of one stream are joined (ipykernel sends a print's text and
    its newline in one message or two, depending on when its flush timer fires). Everything else,
    output text included, must be the same.
    """
    files: dict[str, tuple[int, object]] = {}
    for path in sorted((course / "autograded").rglob("*")):
        if path.is_file():
            content: object = path.read_bytes()
            if path.suffix == ".ipynb":
                nb = json.loads(content)
                for cell in nb["cells"]:
                    cell.get("metadata", {}).pop("execution", None)
                    if any(o.get("ename") == "DeadKernelError" for o in cell.get("outputs", [])):
                        cell["execution_count"] = None
                    if "outputs" in cell:
                        cell["outputs"] = _join_streams(cell["outputs"])
                content = nb
            files[str(path.relative_to(course))] = (stat.S_IMODE(path.stat().st_mode), content)
    return files


def _join_streams(outputs: list[dict]) -> list[dict]:
    joined: list[dict] = []
    for output in outputs:
        if output["output_type"] == "stream" and joined and joined[-1]["output_type"] == "stream" \
                and joined[-1]["name"] == output["name"]:
            joined[-1] = dict(joined[-1], text="".join(joined[-1]["text"]) + "".join(output["text"]))
        else:
            joined.append(dict(output, text="".join(output["text"])) if output["output_type"] == "stream" else output)
    return joined


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """The same class graded sequentially and in parallel, each in its own copy of a small course."""
    base = tmp_path_factory.mktemp("class") / "course"
    base.mkdir()
    config = (ROOT / "nbgrader_config.py").read_text()
    (base / "nbgrader_config.py").write_text(config + '\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    shutil.copytree(SOLUTIONS / PILOT, base / "solutions" / PILOT, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    result = _nbgrader(base, "generate_assignment", PILOT, "--force")
    assert result.returncode == 0, result.stderr[-4000:]
    with Gradebook(f"sqlite:///{base / 'gradebook.db'}", "llm-from-scratch") as gb:
        gb.update_or_create_assignment(PILOT, duedate=DUE)
    (notebook,) = [p.name for p in (SOLUTIONS / PILOT).glob("*.ipynb")]
    sol = nbformat.read(SOLUTIONS / PILOT / notebook, as_version=4)
    rel = nbformat.read(base / "exercises" / PILOT / notebook, as_version=4)
    expected = {}
    for maker in CLASS:
        content, expected[maker.__name__] = maker(sol, rel)
        folder = base / "submitted" / maker.__name__ / PILOT
        folder.mkdir(parents=True)
        if isinstance(content, bytes):
            (folder / notebook).write_bytes(content)
        else:
            nbformat.write(content, folder / notebook)
        if maker.__name__ in TIMESTAMPS:
            (folder / "timestamp.txt").write_text(TIMESTAMPS[maker.__name__])
    sequential, parallel = base.with_name("sequential"), base.with_name("parallel")
    shutil.copytree(base, sequential)
    shutil.copytree(base, parallel)
    logs = {"sequential": _nbgrader(sequential, "autograde", PILOT), "parallel": _parallel(parallel, PILOT, "--jobs", "2")}
    for course in (sequential, parallel):
        export = _nbgrader(course, "export", "--to", "grades.csv")
        assert export.returncode == 0, export.stderr[-3000:]
    return dict(sequential=sequential, parallel=parallel, logs=logs, expected=expected, notebook=notebook)


def test_same_gradebook(graded):
    dumps = [dump_gradebook(graded[name] / "gradebook.db") for name in ("sequential", "parallel")]
    assert len(dumps[0]["submitted_assignment"]) == len(CLASS)
    for table in dumps[0]:
        assert dumps[1][table] == dumps[0][table], f"table {table} differs"
    assert dumps[1] == dumps[0]
    # ... and the grades are the ones the course's rules give (not both empty, say).
    with Gradebook(f"sqlite:///{graded['parallel'] / 'gradebook.db'}", "llm-from-scratch") as gb:
        got = {s: gb.find_submission(PILOT, s).score for s in graded["expected"]}
        late = gb.find_submission(PILOT, "partly_wrong")
        assert late.total_seconds_late == 24 * 3600 and late.late_submission_penalty == late.score > 0
        assert gb.find_submission(PILOT, "solution_as_is").total_seconds_late == 0
    assert got == pytest.approx(graded["expected"])


def test_same_export_csv(graded):
    csvs = [(graded[name] / "grades.csv").read_bytes() for name in ("sequential", "parallel")]
    assert csvs[1] == csvs[0]
    rows = list(csv.DictReader(csvs[1].decode().splitlines()))
    assert sorted(r["student_id"] for r in rows) == sorted(m.__name__ for m in CLASS)
    late = next(r for r in rows if r["student_id"] == "partly_wrong")
    assert float(late["score"]) == 0 < float(late["raw_score"]) == float(late["late_submission_penalty"])


def test_same_autograded_files(graded):
    files = [_autograded(graded[name]) for name in ("sequential", "parallel")]
    assert sorted(files[1]) == sorted(files[0])
    students = {Path(name).parts[1] for name in files[0]}
    assert students == {m.__name__ for m in CLASS} - {"not_a_notebook"}  # nbgrader removes what it cannot grade
    different = [name for name in files[0] if files[1][name] != files[0][name]]
    assert not different, f"autograded files differ: {different}"


def test_ungradable_submission_is_named_and_fails_the_run(graded):
    for name in ("sequential", "parallel"):
        log = graded["logs"][name].stdout + graded["logs"][name].stderr
        assert graded["logs"][name].returncode == 1, log[-3000:]
        assert f"There was an error processing assignment '{PILOT}' for student 'not_a_notebook'" in log
    summary = graded["logs"]["parallel"].stdout.splitlines()[-1]
    assert summary.startswith(f"summary: {PILOT}: 5 graded, 1 failed, 0 skipped") and "with 2 jobs" in summary


def test_regrade_with_force_keeps_manual_scores(graded, tmp_path):
    """Re-grading updates the existing rows (a grader's manual score stays) exactly as nbgrader does."""
    graded = dict(graded)
    for name in ("sequential", "parallel"):  # fresh copies: the other tests keep the first grading
        graded[name] = shutil.copytree(graded[name], tmp_path / name)
        with Gradebook(f"sqlite:///{graded[name] / 'gradebook.db'}", "llm-from-scratch") as gb:
            grade = gb.find_grade(_first_test_id(graded), graded["notebook"].removesuffix(".ipynb"),
                                  PILOT, "solution_as_is")
            grade.manual_score = 1.5
            gb.db.commit()
    before = dump_gradebook(graded["parallel"] / "gradebook.db")
    skipped = _parallel(graded["parallel"], PILOT, "--student", "solution_as_is", "--jobs", "2")
    assert skipped.returncode == 0, skipped.stdout[-3000:] + skipped.stderr[-3000:]
    assert "0 graded, 0 failed, 1 skipped" in skipped.stdout
    assert dump_gradebook(graded["parallel"] / "gradebook.db") == before

    sequential = _nbgrader(graded["sequential"], "autograde", PILOT, "--force", "--student", "solution_as_is")
    parallel = _parallel(graded["parallel"], PILOT, "--force", "--student", "solution_as_is")
    assert sequential.returncode == parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-3000:]
    dumps = [dump_gradebook(graded[name] / "gradebook.db") for name in ("sequential", "parallel")]
    assert dumps[1] == dumps[0] != before  # needs_manual_grade is now set, in both
    with Gradebook(f"sqlite:///{graded['parallel'] / 'gradebook.db'}", "llm-from-scratch") as gb:
        grade = gb.find_grade(_first_test_id(graded), graded["notebook"].removesuffix(".ipynb"),
                              PILOT, "solution_as_is")
        assert (grade.manual_score, grade.needs_manual_grade) == (1.5, True)
    assert _autograded(graded["parallel"]) == _autograded(graded["sequential"])


def _first_test_id(graded) -> str:
    sol = nbformat.read(SOLUTIONS / PILOT / graded["notebook"], as_version=4)
    return sol.cells[_tests(sol)[0]].metadata.nbgrader.grade_id


def test_clear_errors_for_bad_arguments(graded):
    bad_jobs = _parallel(graded["parallel"], PILOT, "--jobs", "0")
    assert bad_jobs.returncode == 2 and "--jobs must be at least 1, not 0" in bad_jobs.stderr
    unknown = _parallel(graded["parallel"], "ch99_nothing")
    assert unknown.returncode == 2 and "no assignment 'ch99_nothing'" in unknown.stderr, unknown.stderr[-3000:]
    nobody = _parallel(graded["parallel"], PILOT, "--student", "nobody")
    assert nobody.returncode == 2 and "by student(s) 'nobody'" in nobody.stderr, nobody.stderr[-3000:]
    no_course = _parallel(graded["parallel"] / "submitted", PILOT)
    assert no_course.returncode == 2 and "has no nbgrader_config.py" in no_course.stderr


def test_a_submission_that_kills_its_worker_costs_no_one_else_a_grade(tmp_path):
    """Without the sandbox (COURSE_GRADING_NO_SANDBOX=1) a kernel can kill the worker that grades it;
    the others are still graded, and the killer is named as not graded."""
    import os

    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(SOLUTIONS / PILOT, course / "solutions" / PILOT)
    assert _nbgrader(course, "generate_assignment", PILOT, "--force").returncode == 0
    (notebook,) = [p.name for p in (SOLUTIONS / PILOT).glob("*.ipynb")]
    sol = nbformat.read(SOLUTIONS / PILOT / notebook, as_version=4)
    killer = copy.deepcopy(sol)
    killer.cells.insert(2, nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    for student, nb in (("a_first", sol), ("b_killer", killer), ("c_last", sol)):
        folder = course / "submitted" / student / PILOT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / notebook)
    env = dict(os.environ, COURSE_GRADING_NO_SANDBOX="1")
    import subprocess

    result = subprocess.run([sys.executable, "-m", "course_grading.parallel_grading", PILOT, "--jobs", "1"],
                            cwd=course, capture_output=True, text=True, timeout=600, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    assert "run the command again to grade them: b_killer" in result.stdout, result.stdout
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "llm-from-scratch") as gb:
        assert gb.find_submission(PILOT, "a_first").score == 12
        assert gb.find_submission(PILOT, "c_last").score == 12
