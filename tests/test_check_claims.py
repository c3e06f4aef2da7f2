"""scripts/check_claims.py records what every assert of a chapter compared, run after run (small notebooks)."""

from __future__ import annotations

import importlib.util

import nbformat
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("check_claims", ROOT / "scripts" / "check_claims.py")
check_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_claims)

CELLS = [
    "import torch\ntorch.manual_seed(3)\nx = torch.rand(1).item()\ncalls = []",
    "assert x < 2.0                      # holds",
    "assert x > 5, 'a claim that fails'\nprint('not reached')",
    "y = 1\nassert 0 < y < 2 and y == 1 and calls.append('evaluated once') is None",
    "def inside():\n    z = 4\n    assert z in (4, 5)\ninside()",
    "assert len(calls) == 1             # the recorder evaluated each operand exactly once",
    "assert x and not calls[1:]         # plain truth values are recorded too",
]


@pytest.fixture(scope="module")
def chapter(tmp_path_factory):
    path = tmp_path_factory.mktemp("book") / "ch99_test.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _by_source(result):
    return {result["sources"][r["key"]]: r for r in result["records"]}


def test_every_comparison_is_recorded_and_a_failing_claim_does_not_stop_the_run(chapter):
    result = check_claims.run_in_subprocess(chapter, "default", 0)
    records = _by_source(result)
    assert records["x < 2.0"]["held"] and records["x < 2.0"]["values"][1] == 2.0
    assert not records["x > 5"]["held"] and records["x > 5"]["values"][1] == 5
    assert [e["cell"] for e in result["errors"]] == [2]        # the failing cell, and only it
    assert records["0 < y < 2"]["values"] == [0, 1, 2] and records["0 < y < 2"]["ops"] == ["<", "<"]
    assert records["z in (4, 5)"]["held"]                      # asserts inside functions too
    assert records["len(calls) == 1"]["held"]                  # no operand evaluated twice
    assert records["x"]["values"] == [True] and records["not calls[1:]"]["held"]
    assert check_claims.margin(records["x < 2.0"]) == pytest.approx(2.0 - records["x < 2.0"]["values"][0])


def test_seeds_and_variants_change_the_run_and_the_summary_says_so(chapter):
    runs = [check_claims.run_in_subprocess(chapter, variant, seed)
            for variant, seed in (("default", 0), ("default", 1), ("threads2", 0))]
    xs = [_by_source(run)["x < 2.0"]["values"][0] for run in runs]
    assert xs[0] != xs[1] and xs[0] == xs[2]                   # seed 1 offsets torch.manual_seed; threads don't
    summary = check_claims.summarise([dict(run, chapter="ch99", variant=v, seed=s)
                                      for run, (v, s) in zip(runs, (("default", 0), ("default", 1), ("threads2", 0)))])
    claims = {c["source"]: c for c in summary["ch99"]["claims"].values()}
    assert claims["x < 2.0"]["varies"] and claims["x < 2.0"]["held_everywhere"]
    assert not claims["x > 5"]["held_everywhere"] and not claims["y == 1"]["varies"]
    lines = []
    assert check_claims.report(summary, out=lines.append) is False  # a failing claim makes the check fail
    assert any("[FAILS]" in line and "x > 5" in line for line in lines)
