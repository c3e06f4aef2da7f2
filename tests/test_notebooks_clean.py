"""Notebooks are committed without outputs: the website build executes them, and is the proof that they run."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import ROOT


def _committed_notebooks() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [path for path in listed.stdout.splitlines() if path]


def test_there_are_notebooks_to_check():
    assert len(_committed_notebooks()) >= 18  # nine chapters, their exercises and solutions


@pytest.mark.parametrize("path", _committed_notebooks() if (ROOT / ".git").exists() else [])
def test_committed_notebook_has_no_outputs(path):
    nb = json.loads((ROOT / path).read_text())
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path}: code cells {dirty} have outputs or execution counts; clear them before committing"
