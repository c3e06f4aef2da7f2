"""The learner's self-check: one command, a per-part report, and an exit status scripts can trust."""

from __future__ import annotations

import subprocess
import sys

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
    assert sum(line.startswith("FAIL") for line in lines) >= 4 and not any(line.startswith("PASS") for line in lines)
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
