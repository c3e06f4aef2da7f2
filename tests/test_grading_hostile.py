"""Hostile and unlucky submissions of chapter 5, graded as an instructor grading for credit would.

One class of chapter 5 submissions, each trying one attack from issue 10 (or making one honest
mistake), is graded twice: sequentially with ``nbgrader autograde`` and with
``python -m course_grading.parallel_grading --jobs 2``, each in its own copy of a course. For both,
the tests check the exact score of every student, that no file outside the graders' own outputs
changed (submissions, the course library, the solutions), that no process a submission started
survives, that the batch completes and a rerun succeeds, and that feedback shows what failed
without any hidden test code.

The attacks: IPython input and AST transformers, swallowed tracebacks, patching torch, the checks
and the reference in the student's process, a Tensor subclass that lies in comparisons, reading
the solutions and the gradebook, deleting the gradebook, overwriting a classmate's submission and
the course library, a background process in its own session, killing the grader, the network and
memory. The honest cases: stderr output and warnings, edited cell metadata, a misnamed notebook,
a student id with glob characters.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from conftest import PILOT, ROOT, SOLUTIONS, run
from test_nbgrader import _nbgrader, _points, _tests

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")

MARKER = "hostile-background-7d1c"  # in the command line of the background process a submission starts


def _answers(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")]


def _with(nb, code: str, at: int = 2):
    nb = copy.deepcopy(nb)
    nb.cells.insert(at, nbformat.v4.new_code_cell(code))
    return nb


def _half(sol, rel):
    """Parts 1-3 left as handed out, parts 4-6 right: 6 of 12 points."""
    nb = copy.deepcopy(sol)
    for i in _answers(sol)[:3]:
        nb.cells[i] = copy.deepcopy(rel.cells[i])
    return nb


def make_class(sol, rel, course: Path) -> dict[str, tuple[object, float, str]]:
    """student id -> (notebook, expected score, file name)."""
    full = _points(sol, _tests(sol))
    half = full - _points(sol, _tests(sol)[:3])
    name = "ch05_exercises.ipynb"
    solutions = course / "solutions" / PILOT / name
    attention = Path(__import__("course_lib").__file__).parent / "attention.py"
    gradebook = course / "gradebook.db"
    classmate = course / "submitted" / "honest" / PILOT / name
    input_hook = 'get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])'
    ast_hook = ("import ast\nclass Nothing(ast.NodeTransformer):\n"
                "    def visit_Module(self, node):\n        return ast.Module(body=[], type_ignores=[])\n"
                "get_ipython().ast_transformers.append(Nothing())")
    read_solutions = (f"import json, glob\nfor path in ['../../../solutions/{PILOT}/{name}', {str(solutions)!r}] "
                      f"+ glob.glob('{course.parent}/**/*.ipynb', recursive=True) "
                      "+ glob.glob('/tmp/**/*.ipynb', recursive=True) + glob.glob('/work*/**/*.ipynb', recursive=True)"
                      ":\n    try:\n"
                      "        for cell in json.load(open(path))['cells']:\n"
                      "            if cell['cell_type'] == 'code': exec(''.join(cell['source']))\n"
                      "        print('READ', path)\n    except Exception as error:\n"
                      "        print('no', type(error).__name__)")
    swallow = ("ip = get_ipython()\nip.set_custom_exc((BaseException,), lambda *a, **k: None)\n"
               "ip.showtraceback = lambda *a, **k: None\n")
    patch_checks = ("import torch, sys, course_lib.testing as t\n"
                    "for n in dir(t):\n    if n.startswith('check_'): setattr(t, n, lambda *a, **k: None)\n"
                    "torch.isclose = lambda a, b, **k: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)\n"
                    "torch.allclose = lambda *a, **k: True\nsys.settrace(None)\n"
                    "try:\n    import course_lib.attention as ref\nexcept ImportError as e:\n    print('no reference:', e)\n"
                    "else:\n    attention_weights = ref.attention_weights\n")
    liar = ("import torch\nclass Liar(torch.Tensor):\n"
            "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
            "        out = super().__torch_function__(func, types, args, kwargs or {})\n"
            "        if func in (torch.isclose, torch.Tensor.__eq__, torch.Tensor.__ne__, torch.equal):\n"
            "            return torch.ones_like(out, dtype=torch.bool) if func is not torch.Tensor.__ne__ "
            "else torch.zeros_like(out, dtype=torch.bool)\n        return out\n"
            "def attention_weights(scores):\n    return torch.zeros_like(scores).as_subclass(Liar)\n")
    tamper = (f"import sqlite3, os\nfor path in ['../../../gradebook.db', {str(gradebook)!r}]:\n"
              "    try:\n        con = sqlite3.connect(path)\n"
              "        con.execute('UPDATE grade SET auto_score = 0'); con.commit()\n"
              "        os.remove(path); print('TAMPERED', path)\n"
              "    except Exception as error:\n        print('no', type(error).__name__)\n"
              f"for path in [{str(classmate)!r}, {str(attention)!r}, '../../honest/{PILOT}/{name}']:\n"
              "    try:\n        open(path, 'a').write('# overwritten\\n'); print('WROTE', path)\n"
              "    except Exception as error:\n        print('no', type(error).__name__)\n"
              "import subprocess, sys\n"
              f"subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)', '{MARKER}'], "
              "start_new_session=True)\n"
              "import signal\nfor pid in (os.getppid(), 1):\n    try:\n"
              "        os.kill(pid, signal.SIGKILL)\n    except Exception as error:\n"
              "        print('no', type(error).__name__)\n"
              "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n"
              "except OSError as error:\n    print('no network:', type(error).__name__)\n"
              "try:\n    hog = bytearray(64 * 2**30)\nexcept MemoryError:\n    print('no memory')\n")
    students: dict[str, tuple[object, float, str]] = {
        "honest": (sol, full, name),
        "half_wrong": (_half(sol, rel), half, name),
        # Blank notebooks that try to make every test pass.
        "input_transformer": (_with(rel, input_hook), 0.0, name),
        "ast_transformer": (_with(rel, ast_hook), 0.0, name),
        "exec_solutions": (_with(rel, read_solutions), 0.0, name),
        # Half-wrong notebooks that try to pass the wrong half.
        "patch_everything": (_with(_half(sol, rel), swallow + patch_checks), half, name),
        "tensor_subclass": (_with(_half(sol, rel), liar, at=4), half, name),
        # Reaching the gradebook, classmates, the course library, the grader, the network; outliving the run.
        "reach_out": (_with(sol, tamper), full, name),
        # Honest work that stock nbgrader would penalise.
        "honest_mistakes": (None, full, name),
        "misnamed_notebook": (sol, full, "ch05_exercises (1).ipynb"),
        "ana[1]": (sol, full, name),
    }
    noisy = copy.deepcopy(sol)
    first = _answers(sol)[0]
    noisy.cells[first].source = noisy.cells[first].source.replace(
        "    ### BEGIN SOLUTION\n", "    ### BEGIN SOLUTION\n    import sys, warnings\n"
        "    warnings.warn('a warning from a correct answer')\n    print('progress', file=sys.stderr)\n")
    noisy.cells.insert(_tests(sol)[0], nbformat.v4.new_code_cell(
        "import torch\nx = torch.ones(2, requires_grad=True)\nfloat(x.sum())\ntorch.tensor(x)"))
    tests = _tests(sol)
    noisy.cells[tests[0] + 1].metadata.nbgrader["grade_id"] = "renamed"  # tests[0] moved down by one
    noisy.cells[tests[1] + 1].metadata.nbgrader["solution"] = True
    noisy.cells[tests[2] + 1].metadata.nbgrader["grade"] = False
    noisy.cells[_answers(sol)[3] + 1].metadata.nbgrader.update(grade=True, points=5)
    students["honest_mistakes"] = (noisy, full, name)
    return students


def _fingerprint(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _survivors() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARKER in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(entry.name)
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("hostile") / "course"
    base.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", base)
    shutil.copytree(SOLUTIONS / PILOT, base / "solutions" / PILOT)
    assert _nbgrader(base, "generate_assignment", PILOT, "--force").returncode == 0
    results = {}
    for mode in ("sequential", "parallel"):
        course = base.with_name(mode)
        shutil.copytree(base, course)
        sol = nbformat.read(SOLUTIONS / PILOT / "ch05_exercises.ipynb", as_version=4)
        rel = nbformat.read(course / "exercises" / PILOT / "ch05_exercises.ipynb", as_version=4)
        students = make_class(sol, rel, course)
        for student, (nb, _, name) in students.items():
            folder = course / "submitted" / student / PILOT
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / name)
        library = Path(__import__("course_lib").__file__).parent
        before = _fingerprint(course / "submitted", course / "solutions", course / "exercises", library)
        if mode == "sequential":
            log = _nbgrader(course, "autograde", PILOT)
        else:
            log = run([sys.executable, "-m", "course_grading.parallel_grading", PILOT, "--jobs", "2"], cwd=course,
                      timeout=900)
        after = _fingerprint(course / "submitted", course / "solutions", course / "exercises", library)
        survivors = _survivors()
        rerun = _nbgrader(course, "autograde", PILOT)
        feedback = _nbgrader(course, "generate_feedback", PILOT)
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "llm-from-scratch") as gb:
            scores = {s: gb.find_submission(PILOT, s).score for s in students}
        results[mode] = dict(course=course, students=students, log=log, before=before, after=after,
                             survivors=survivors, rerun=rerun, feedback=feedback, scores=scores)
    return results


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_every_student_gets_the_grade_the_rules_give(graded, mode):
    result = graded[mode]
    expected = {s: score for s, (_, score, _) in result["students"].items()}
    wrong = {s: (result["scores"][s], expected[s]) for s in expected if result["scores"][s] != pytest.approx(expected[s])}
    assert not wrong, f"student: (got, expected) {wrong}\n" + (result["log"].stdout + result["log"].stderr)[-4000:]
    assert result["log"].returncode == 0, (result["log"].stdout + result["log"].stderr)[-4000:]


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_nothing_outside_the_graders_outputs_changes(graded, mode):
    result = graded[mode]
    assert result["after"] == result["before"]
    assert not result["survivors"], "a process started by a submission outlived its kernel"
    assert (result["course"] / "gradebook.db").is_file()
    for student in result["students"]:
        assert (result["course"] / "autograded" / student / PILOT / "ch05_exercises.ipynb").is_file(), student


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_rerun_succeeds_and_feedback_hides_the_hidden_tests(graded, mode):
    result = graded[mode]
    assert result["rerun"].returncode == 0, result["rerun"].stderr[-3000:]
    assert result["feedback"].returncode == 0, result["feedback"].stderr[-3000:]
    pages = {s: next((result["course"] / "feedback" / s / PILOT).glob("*.html")).read_text()
             for s in result["students"]}
    leaked = [str(p) for p in (result["course"] / "feedback").rglob("*") if p.is_file() and p.suffix != ".html"]
    assert not leaked, f"feedback holds more than the pages: {leaked}"
    for student, page in pages.items():
        assert "BEGIN HIDDEN TESTS" not in page and "p1_cases" not in page and "p6_ref" not in page, student
        if student in ("input_transformer", "ast_transformer", "exec_solutions"):  # blank notebooks
            assert "BEGIN SOLUTION" not in page, student
    # What failed and why is shown.
    assert "part not implemented yet" in pages["half_wrong"]
    assert "Part 4: the visible checks pass." in pages["half_wrong"]


def _outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(str(o.get("text", "")) + str(o.get("evalue", "")) for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs)


def test_attacks_saw_nothing(graded):
    for mode in ("sequential", "parallel"):
        course = graded[mode]["course"]
        for student in ("exec_solutions", "reach_out"):
            text = _outputs(course / "autograded" / student / PILOT / "ch05_exercises.ipynb")
            assert "no " in text, (mode, student, text[:2000])
            assert "READ" not in text and "TAMPERED" not in text and "WROTE" not in text, (mode, student, text[:2000])
        text = _outputs(course / "autograded" / "reach_out" / PILOT / "ch05_exercises.ipynb")
        assert "no network" in text and "no memory" in text, text[:2000]
