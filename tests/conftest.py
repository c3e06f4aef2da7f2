"""Shared fixtures: repository paths, the built website, the exercise notebooks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
BUILD_HTML = ROOT / "_build" / "html"
PILOT = "ch05_attention"


def assignments() -> list[str]:
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command with this environment's bin/ first on PATH (nbgrader calls `alembic` by name)."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def built_site() -> Path:
    """Build the website exactly as the README says (warnings are errors); warm builds are quick."""
    jb = Path(sys.executable).with_name("jupyter-book")
    result = run([str(jb), "build", ".", "-W", "-n", "--keep-going"], cwd=ROOT, timeout=1200)
    assert result.returncode == 0, (
        "the book build failed:\n" + result.stdout[-6000:] + "\n" + result.stderr[-6000:]
    )
    assert (BUILD_HTML / "index.html").exists()
    return BUILD_HTML
