"""The learner's self-check: one command, a per-part report, and an exit status scripts can trust."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from conftest import EXERCISES, SOLUTIONS, assignments


def selfcheck(path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "course_lib.selfcheck", str(path), *extra],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("assignment", assignments())
def test_release_fails_every_part_and_exits_nonzero(assignment):
    (notebook,) = (EXERCISES / assignment).glob("*.ipynb")
    result = selfcheck(notebook)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    graded = sum(bool(c.metadata.get("nbgrader", {}).get("grade")) for c in nbformat.read(notebook, as_version=4).cells)
    assert graded >= 3
    assert sum(line.startswith("FAIL") for line in lines) == graded  # one FAIL line per graded part
    assert not any(line.startswith("PASS") for line in lines)
    assert "part not implemented yet" in result.stdout
    assert "0 of" in lines[-1]


@pytest.mark.parametrize("assignment", assignments())
def test_solution_passes_every_part(assignment):
    (notebook,) = (SOLUTIONS / assignment).glob("*.ipynb")
    result = selfcheck(notebook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def test_unusable_input_exits_2_with_a_reason(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    result = selfcheck(broken)
    assert result.returncode == 2 and "is not a readable notebook" in result.stderr
    result = selfcheck(tmp_path / "missing.ipynb")
    assert result.returncode == 2 and "no such notebook" in result.stderr


# ---------------------------------------------------------------------------------------------
# The self-check tells the truth: what grading ignores is reported, not counted as a pass.

def _answered_release(assignment: str):
    """The release with the solution's answers in it: every visible test passes."""
    import nbformat

    (notebook,) = (EXERCISES / assignment).glob("*.ipynb")
    rel = nbformat.read(notebook, as_version=4)
    sol = nbformat.read(SOLUTIONS / assignment / notebook.name, as_version=4)
    for cell, source in zip(rel.cells, sol.cells):
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = source.source
    return rel, notebook.name


def _write(nb, folder, name):
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def test_answered_release_passes(tmp_path):
    nb, name = _answered_release("ch05_attention")
    result = selfcheck(_write(nb, tmp_path / "ch05_attention", name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_edited_tests_and_ipython_hooks_are_reported(tmp_path):
    import nbformat

    nb, name = _answered_release("ch05_attention")
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    tests[0].source = "pass"
    result = selfcheck(_write(nb, tmp_path / "edited" / "ch05_attention", name))
    assert result.returncode == 1 and "ch05_p1_tests differ from the ones handed out" in result.stdout, result.stdout
    for hook in ("get_ipython().input_transformers_post.append(lambda lines: lines)",
                 "import ast\nclass T(ast.NodeTransformer):\n    pass\nget_ipython().ast_transformers.append(T())",
                 "get_ipython().set_custom_exc((AssertionError,), lambda *a, **k: None)"):
        nb, name = _answered_release("ch05_attention")
        nb.cells.insert(3, nbformat.v4.new_code_cell(hook))
        result = selfcheck(_write(nb, tmp_path / str(abs(hash(hook))) / "ch05_attention", name))
        assert result.returncode == 1 and "changes how IPython runs or reports cells" in result.stdout, result.stdout


def test_notebook_of_another_assignment_is_reported(tmp_path):
    nb, _ = _answered_release("ch04_tokens_and_embeddings")
    result = selfcheck(_write(nb, tmp_path / "ch05_attention", "ch05_exercises.ipynb"))
    assert result.returncode == 1 and "holds the exercises of ch04, not ch05" in result.stdout, result.stdout
