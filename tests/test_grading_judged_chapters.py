"""Every chapter is judged outside the student's process, not only the pilot (chapter 5).

Chapters 2, 6, 7, 8, 9 and 10 hand the student's code models, optimizers, parameters with gradients and
stand-in functions, and differentiate what it returns; chapter 11 hands it the chat template's `Turn`
objects and token counters, and expects a `ValueError` back. For each, a small class is graded with
``nbgrader autograde`` and with the parallel grader: an honest notebook, a half-wrong one, the same
half-wrong one that patches torch's comparisons and the course's checks in its own kernel (in a
single process that would pass every test), and a correct one that warns and prints to stderr.
Each must get exactly the points the rules give, in both modes.
"""

from __future__ import annotations

import copy
import shutil
import sys

import nbformat
import pytest
from nbgrader.api import Gradebook

from conftest import ROOT, SOLUTIONS, run
from test_nbgrader import _nbgrader, _points, _tests, warnings_on_stderr

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")

CHAPTERS = ["ch02_learning_with_pytorch", "ch06_inside_the_transformer", "ch07_training_an_llm",
            "ch08_finetuning_and_using_llms", "ch09_modern_llms", "ch10_aligning_llms", "ch11_chatbots_and_scale"]

PATCH = ("import sys, torch, course_lib.testing as t\n"
         "for n in dir(t):\n    if n.startswith('check_'): setattr(t, n, lambda *a, **k: None)\n"
         "torch.isclose = lambda a, b, **k: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)\n"
         "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
         "torch.testing.assert_close = lambda *a, **k: None\n"
         "ip = get_ipython()\nip.set_custom_exc((BaseException,), lambda *a, **k: None)\n")


def _answers(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")]


# Parts whose task is to use the learner's own answers to earlier parts (chapter 10's part 5 trains
# with the log-probability of part 1 and the DPO loss of part 3, as its task says): a blank earlier
# part makes these fail too.
USES_EARLIER = {"ch10_p5_tests": ("ch10_p1_answer", "ch10_p3_answer")}


def _grade_id(nb, i) -> str:
    return nb.cells[i].metadata.get("nbgrader", {}).get("grade_id", "")


def make_class(sol, rel) -> dict[str, tuple[object, float]]:
    tests = _tests(sol)
    n_wrong = len(tests) // 2
    half = copy.deepcopy(sol)
    blanked = _answers(sol)[:n_wrong]  # each part's answer cell comes before its test cell
    for i in blanked:
        half.cells[i] = copy.deepcopy(rel.cells[i])
    patched = copy.deepcopy(half)
    patched.cells.insert(1, nbformat.v4.new_code_cell(PATCH))
    noisy, _ = warnings_on_stderr(sol, rel)
    full = _points(sol, tests)
    blank_ids = {_grade_id(sol, i) for i in blanked}
    passing = [t for t in tests[n_wrong:] if not blank_ids & set(USES_EARLIER.get(_grade_id(sol, t), ()))]
    right_half = _points(sol, passing)
    return {"honest": (sol, full), "half_wrong": (half, right_half), "half_wrong_patched": (patched, right_half),
            "noisy": (noisy, full)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("judged") / "course"
    base.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", base)
    for chapter in CHAPTERS:
        shutil.copytree(SOLUTIONS / chapter, base / "solutions" / chapter)
        assert _nbgrader(base, "generate_assignment", chapter, "--force").returncode == 0
    results = {}
    for mode in ("sequential", "parallel"):
        course = base.with_name(mode)
        shutil.copytree(base, course)
        expected = {}
        for chapter in CHAPTERS:
            (path,) = (SOLUTIONS / chapter).glob("*.ipynb")
            sol = nbformat.read(path, as_version=4)
            rel = nbformat.read(course / "exercises" / chapter / path.name, as_version=4)
            for student, (nb, score) in make_class(sol, rel).items():
                folder = course / "submitted" / student / chapter
                folder.mkdir(parents=True)
                nbformat.write(nb, folder / path.name)
                expected[(chapter, student)] = score
        for chapter in CHAPTERS:
            if mode == "sequential":
                log = _nbgrader(course, "autograde", chapter)
            else:
                log = run([sys.executable, "-m", "course_grading.parallel_grading", chapter, "--jobs", "2"],
                          cwd=course, timeout=900)
            assert log.returncode == 0, (log.stdout + log.stderr)[-3000:]
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "llm-from-scratch") as gb:
            scores = {(c, s): gb.find_submission(c, s).score for (c, s) in expected}
        results[mode] = dict(expected=expected, scores=scores)
    return results


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_every_student_gets_the_points_the_rules_give(graded, mode):
    got, expected = graded[mode]["scores"], graded[mode]["expected"]
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != pytest.approx(v)}
    assert not wrong, f"(chapter, student): (got, expected) {wrong}"
    assert all(expected[(c, "half_wrong")] < expected[(c, "honest")] for c in CHAPTERS)
