"""Execute the chapters under other CPU code paths and seeds, and report every claim they assert.

A chapter states its claims as ``assert`` statements ("LoRA is within 10 points of full
fine-tuning", "Adam beats SGD after 50 steps"). Floating-point rounding differs from one CPU to
the next (AVX-512 or AVX2 kernels, AMX or not, one thread or two), and a small model trained for a
few hundred steps can end in a different place. A claim that flips with the last bits is a claim
about luck. This script runs each chapter notebook in a fresh kernel under every *variant* and
*seed* and records, for every ``assert`` the chapter executes, the values it compared::

    .venv/bin/python scripts/check_claims.py                       # all chapters, all variants, seeds 0 1 2
    .venv/bin/python scripts/check_claims.py --chapters ch08 --variants default avx2 --seeds 0
    .venv/bin/python scripts/check_claims.py --save                # also write bench/results/claims.json

Variants (each changes which kernels PyTorch runs, and so the rounding):

- ``default``: this machine as it is;
- ``avx2``: ``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``
  (a CPU without AVX-512 or AMX, like most laptops);
- ``novec``: ``ATEN_CPU_CAPABILITY=default`` (PyTorch's portable, non-vectorised kernels);
- ``threads2``: two threads even where a chapter asks for one (reductions split differently).

Seed ``s`` adds ``1000 * s`` to every seed the chapter passes to ``torch.manual_seed`` (the model
initialisation, dropout and sampling); seed 0 is the chapter exactly as written. Data splits and
batch orders, drawn from their own seeded generators, stay as written.

How the values are captured: an IPython AST transformer rewrites each ``assert`` so that every
comparison in it (``a < b``, ``a < b < c``, and each comparison joined by ``and``) records its
operands before the assert runs as usual; any other assert (``assert torch.equal(a, b)``) records
whether it was true. A failing assert is recorded as failing and the chapter
goes on with its next cell, so one run reports every claim. The chapters themselves are not
changed: the learner sees plain asserts.

The report lists, per chapter, each assert whose values differ between runs with the smallest
margin seen (how far the closest run stayed from the threshold), and counts the asserts that gave
identical values in every run. Exit status: 0 when every claim held in every run, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
RESULTS = ROOT / "bench" / "results" / "claims.json"

VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "novec": {"ATEN_CPU_CAPABILITY": "default"},
    # PASSIVE: waiting threads sleep instead of spinning, which only matters when cores are shared.
    "threads2": {"COURSE_CLAIMS_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}

# Runs in the chapter's kernel before its first cell. It installs the assert recorder, the seed
# offset and (for threads2) a fixed thread count. Names start with "_claims" to stay out of the way.
PRELUDE = r'''
import ast as _claims_ast, json as _claims_json, os as _claims_os, torch as _claims_torch

import operator as _claims_operator

_claims_ops = {"<": _claims_operator.lt, "<=": _claims_operator.le, ">": _claims_operator.gt,
               ">=": _claims_operator.ge, "==": _claims_operator.eq, "!=": _claims_operator.ne,
               "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
               "is": _claims_operator.is_, "is not": _claims_operator.is_not}
_claims_records = []
_claims_cell = [-1]
_claims_sources = {}


def _claims_number(value):
    try:
        if isinstance(value, _claims_torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value
    except Exception:
        pass
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _claims_compare(key, operands, ops):
    # Evaluate a (possibly chained) comparison lazily, as Python would, recording the operands.
    values = [operands[0]()]
    result = True
    for op, operand in zip(ops, operands[1:]):
        values.append(operand())
        left, right = values[-2], values[-1]
        if not _claims_ops[op](left, right):
            result = False
            break
    _claims_records.append({"cell": _claims_cell[0], "key": key, "values": [_claims_number(v) for v in values],
                            "ops": ops[:len(values) - 1], "held": bool(result)})
    return result


def _claims_truth(key, operand):
    value = operand()
    _claims_records.append({"cell": _claims_cell[0], "key": key, "values": [bool(value)], "ops": [],
                            "held": bool(value)})
    return value


class _ClaimsRewriter(_claims_ast.NodeTransformer):
    _OPS = {_claims_ast.Lt: "<", _claims_ast.LtE: "<=", _claims_ast.Gt: ">", _claims_ast.GtE: ">=",
            _claims_ast.Eq: "==", _claims_ast.NotEq: "!=", _claims_ast.In: "in", _claims_ast.NotIn: "not in",
            _claims_ast.Is: "is", _claims_ast.IsNot: "is not"}

    def _wrap(self, node, key):
        lam = lambda e: _claims_ast.Lambda(args=_claims_ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                                                                      kw_defaults=[], defaults=[]), body=e)
        if not isinstance(node, _claims_ast.Compare):  # a plain truth value: record it as "value is true"
            call = _claims_ast.Call(func=_claims_ast.Name("_claims_truth", _claims_ast.Load()),
                                    args=[_claims_ast.Constant(key), lam(node)], keywords=[])
            return _claims_ast.copy_location(call, node)
        call = _claims_ast.Call(
            func=_claims_ast.Name("_claims_compare", _claims_ast.Load()),
            args=[_claims_ast.Constant(key),
                  _claims_ast.List([lam(e) for e in [node.left, *node.comparators]], _claims_ast.Load()),
                  _claims_ast.List([_claims_ast.Constant(self._OPS[type(o)]) for o in node.ops], _claims_ast.Load())],
            keywords=[])
        return _claims_ast.copy_location(call, node)

    def visit_Assert(self, node):
        source = _claims_ast.unparse(node.test)
        parts = node.test.values if isinstance(node.test, _claims_ast.BoolOp) and isinstance(
            node.test.op, _claims_ast.And) else [node.test]
        wrapped = []
        for i, part in enumerate(parts):
            key = f"{_claims_cell[0]}:{node.lineno}:{i}"
            _claims_sources[key] = _claims_ast.unparse(part) if len(parts) > 1 else source
            wrapped.append(self._wrap(part, key))
        node.test = (_claims_ast.BoolOp(_claims_ast.And(), wrapped) if len(parts) > 1 else wrapped[0])
        _claims_ast.fix_missing_locations(node)
        return node


get_ipython().ast_transformers.append(_ClaimsRewriter())

_claims_offset = 1000 * int(_claims_os.environ.get("COURSE_CLAIMS_SEED", "0"))
if _claims_offset:
    _claims_manual_seed = _claims_torch.manual_seed
    _claims_torch.manual_seed = lambda seed: _claims_manual_seed(int(seed) + _claims_offset)
_claims_threads = _claims_os.environ.get("COURSE_CLAIMS_THREADS")
if _claims_threads:
    _claims_torch.set_num_threads(int(_claims_threads))
    _claims_torch.set_num_threads = lambda n: None      # the chapter's own setting is overridden
'''

DUMP = "print('__CLAIMS__' + _claims_json.dumps({'records': _claims_records, 'sources': _claims_sources}))"


def chapter_paths(selected: list[str] | None) -> list[Path]:
    """The chapters, then the project notebooks (appendix "Projects"); ``selected`` keeps names starting so."""
    chapters = sorted(BOOK.glob("ch*.ipynb")) + sorted((BOOK / "projects").glob("*.ipynb"))
    if selected:
        chapters = [p for p in chapters if any(p.stem.startswith(s) for s in selected)]
    return chapters


def run_chapter(path: Path, timeout: int = 900) -> dict:
    """Execute one chapter in a fresh kernel (this process's environment) and return its claim records."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    # As the website build does: cells tagged skip-execution (they need a network) do not run, and
    # an error in a cell tagged raises-exception is what the chapter shows, not a failure.
    tags = {i: set(c.get("metadata", {}).get("tags", [])) for i, c in enumerate(cells)}
    code_cells = [i for i, c in enumerate(cells) if c.cell_type == "code" and "skip-execution" not in tags[i]]
    nb.cells = [nbformat.v4.new_code_cell(PRELUDE)]
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    errors = []
    start = time.perf_counter()
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        for index in code_cells:
            marker = nbformat.v4.new_code_cell(f"_claims_cell[0] = {index}")
            nb.cells.append(marker)
            client.execute_cell(marker, len(nb.cells) - 1)
            cell = nbformat.v4.new_code_cell(cells[index].source)
            nb.cells.append(cell)
            try:
                client.execute_cell(cell, len(nb.cells) - 1)
            except Exception as exc:  # a failing claim (or anything else): note it, run the next cell
                if "raises-exception" in tags[index]:
                    continue
                errors.append({"cell": index, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"})
        dump = nbformat.v4.new_code_cell(DUMP)
        nb.cells.append(dump)
        client.execute_cell(dump, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in dump.outputs if o.get("name") == "stdout")
    found = json.loads(text.split("__CLAIMS__", 1)[1])
    return {"records": found["records"], "sources": found["sources"], "errors": errors,
            "seconds": round(time.perf_counter() - start, 1)}


def run_in_subprocess(chapter: Path, variant: str, seed: int) -> dict:
    env = dict(os.environ, COURSE_CLAIMS_SEED=str(seed), **VARIANTS[variant])
    env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run([sys.executable, __file__, "--worker", str(chapter)], env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"records": [], "sources": {}, "seconds": None,
                "errors": [{"cell": None, "error": f"the run itself failed: {proc.stderr.strip()[-600:]}"}]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(chapter=chapter.stem, variant=variant, seed=seed)
    return result


def margin(record: dict) -> float | None:
    """How far the closest comparison stayed on the right side (negative: it failed)."""
    values, ops = record["values"], record["ops"]
    best = None
    for (left, right), op in zip(zip(values, values[1:]), ops):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            return None
        gap = {"<": right - left, "<=": right - left, ">": left - right, ">=": left - right}.get(op)
        if gap is None:
            return None
        best = gap if best is None else min(best, gap)
    return best


def _worse(a: dict, b: dict) -> bool:
    if a["held"] != b["held"]:
        return not a["held"]
    return a["margin"] is not None and (b["margin"] is None or a["margin"] < b["margin"])


def summarise(runs: list[dict]) -> dict:
    """Group the records of all runs by chapter and assert: values per run, smallest margin, held everywhere?"""
    chapters: dict[str, dict] = {}
    for run in runs:
        chapter = chapters.setdefault(run["chapter"], {"claims": {}, "errors": [], "seconds": {}})
        chapter["seconds"][f"{run['variant']}/{run['seed']}"] = run["seconds"]
        chapter["errors"] += [dict(e, variant=run["variant"], seed=run["seed"]) for e in run["errors"]]
        for record in run["records"]:
            claim = chapter["claims"].setdefault(record["key"], {
                "cell": record["cell"], "source": run["sources"].get(record["key"], "?"), "runs": {}})
            outcome = {"values": record["values"], "held": record["held"], "margin": margin(record)}
            key = f"{run['variant']}/{run['seed']}"
            earlier = claim["runs"].get(key)  # an assert in a loop: keep its worst outcome of the run
            if earlier is None or _worse(outcome, earlier):
                claim["runs"][key] = outcome
    for chapter in chapters.values():
        for claim in chapter["claims"].values():
            outcomes = list(claim["runs"].values())
            claim["held_everywhere"] = all(o["held"] for o in outcomes)
            claim["varies"] = len({json.dumps(o["values"]) for o in outcomes}) > 1
            margins = [o["margin"] for o in outcomes if o["margin"] is not None]
            claim["smallest_margin"] = min(margins) if margins else None
    return chapters


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(summary: dict, out=print) -> bool:
    ok = True
    for name, chapter in summary.items():
        claims = chapter["claims"]
        varying = {k: c for k, c in claims.items() if c["varies"]}
        steady = len(claims) - len(varying)
        failed_steady = [c for c in claims.values() if not c["varies"] and not c["held_everywhere"]]
        out(f"\n## {name}: {len(claims)} asserted comparisons, {steady} identical in every run, "
            f"{len(varying)} that vary")
        for claim in list(varying.values()) + failed_steady:
            status = "holds" if claim["held_everywhere"] else "FAILS"
            ok &= claim["held_everywhere"]
            m = claim["smallest_margin"]
            out(f"- [{status}] cell {claim['cell']}: {claim['source']}"
                + (f"  (smallest margin {m:.4g})" if m is not None else ""))
            for key, run in claim["runs"].items():
                out(f"    {key:<12} {' | '.join(_fmt(v) for v in run['values'])}" + ("" if run["held"] else "  <- fails"))
        for error in chapter["errors"]:
            ok = False
            out(f"- [ERROR] {error['variant']}/{error['seed']} cell {error['cell']}: {error['error']}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="*", help="notebook name prefixes, e.g. ch07 ch08 name_generator (default: every chapter and project)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="chapters run at the same time (default 2)")
    parser.add_argument("--save", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_chapter(Path(args.worker))))
        return 0

    chapters = chapter_paths(args.chapters)
    if not chapters:
        parser.error(f"no chapter matches {args.chapters}")
    jobs = [(c, v, s) for c in chapters for v in args.variants for s in args.seeds]
    start = time.perf_counter()
    print(f"check_claims: {len(jobs)} runs ({len(chapters)} chapters x {len(args.variants)} variants x "
          f"{len(args.seeds)} seeds), {args.jobs} at a time", flush=True)

    def one(job):
        result = run_in_subprocess(*job)
        failed = [r for r in result["records"] if not r["held"]]
        print(f"  {job[0].stem} {job[1]}/{job[2]}: {result['seconds']} s, "
              f"{len(failed)} failed asserts, {len(result['errors'])} errors", flush=True)
        for r in failed:
            print(f"      fails: cell {r['cell']}: {result['sources'].get(r['key'])}: "
                  f"{' | '.join(_fmt(v) for v in r['values'])}", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(one, jobs))
    summary = summarise(runs)
    ok = report(summary)
    print(f"\ncheck_claims: {'every claim held in every run' if ok else 'SOME CLAIMS FAILED'} "
          f"({time.perf_counter() - start:.0f} s)")
    if args.save:
        sys.path.insert(0, str(ROOT / "bench"))
        from machine import describe  # bench/machine.py: the CPU, as every saved result names it

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"chapters": {}}
        existing.setdefault("chapters", {}).update(summary)
        existing["machine"] = dict(describe(), variants={v: VARIANTS[v] for v in args.variants}, seeds=args.seeds)
        RESULTS.write_text(json.dumps(existing, indent=1) + "\n")
        print(f"saved {RESULTS.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
