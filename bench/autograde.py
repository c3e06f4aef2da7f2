"""Autograding speed and memory (issue: performance and scale).

(a) Every chapter's exercise: a few correct submissions graded by ``nbgrader autograde``; seconds
    per submission (the goal is at most 8 s), with and without nbgrader's own start-up.
(b) A class of generated submissions of one assignment (a fixed mix of correct, partly wrong and
    blank notebooks), graded sequentially by ``nbgrader autograde`` and in parallel by
    ``python -m course_grading.parallel_grading``: wall seconds, seconds per submission, speed-up, and
    whether the two gradebooks and exported CSVs are identical.
(c) For every run, the peak memory of the grading command's process tree (nbgrader, its worker
    processes and the kernels), sampled every 0.1 s: the largest total and the largest process.
(d) The median seconds one submission of chapter 5 takes on one core, sandbox and judge included
    (goal: at most 4 s): a mix of correct, partly wrong and blank submissions graded by
    ``course_grading.parallel_grading --jobs 1``, which times every submission it grades.

Everything runs in a temporary course directory (the repository's gradebook is never touched).
Prints one JSON object per measurement and a one-line summary. A benchmark, not a test: it
reports timings and never judges them.

    python bench/autograde.py [--per-chapter 2] [--assignments ch01_what_is_an_llm ...]
                              [--class-size 100] [--class-assignment ch05_attention] [--jobs N]
                              [--median-count 9] [--save]

``--save`` writes every measurement to ``bench/results/autograde.json`` (read by the book's
performance page).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil

from course_grading.parallel_grading import default_jobs, dump_gradebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402  (bench/machine.py; this script runs as a file)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
GOAL_S = 8.0
MIB = 1024 * 1024


def run_measured(cmd: list[str], cwd: Path) -> dict:
    """Run a command; return its exit status, output, wall seconds and peak memory of its process tree."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"tree": 0, "process": 0}
    cpu: dict[int, float] = {}  # CPU seconds of every process of the tree, as last seen
    finished = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not finished.is_set():
            try:
                rss = []
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss.append(p.memory_info().rss)
                        times = p.cpu_times()
                        cpu[p.pid] = max(cpu.get(p.pid, 0.0), times.user + times.system)
                    except psutil.Error:  # a kernel that ended between listing and reading
                        pass
                peak["tree"] = max(peak["tree"], sum(rss))
                peak["process"] = max(peak["process"], max(rss, default=0))
            except psutil.Error:
                return
            finished.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    finished.set()
    sampler.join()
    return dict(returncode=proc.returncode, stdout=stdout, stderr=stderr, seconds=seconds, tree_cpu_s=sum(cpu.values()),
                peak_tree_rss_mib=round(peak["tree"] / MIB), peak_process_rss_mib=round(peak["process"] / MIB))


def nbgrader(course: Path, *args: str) -> dict:
    return run_measured([str(Path(sys.executable).with_name("nbgrader")), *args], course)


def new_course(folder: Path, assignments: list[str]) -> Path:
    """A course directory with the real configuration and the given assignments generated."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    for assignment in assignments:
        shutil.copytree(SOLUTIONS / assignment, folder / "solutions" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        result = nbgrader(folder, "generate_assignment", assignment, "--force")
        if result["returncode"] != 0:
            sys.exit(f"nbgrader generate_assignment {assignment} failed:\n{result['stderr'][-3000:]}")
    return folder


def notebooks(course: Path, assignment: str) -> tuple[str, nbformat.NotebookNode, nbformat.NotebookNode]:
    (name,) = [p.name for p in (SOLUTIONS / assignment).glob("*.ipynb")]
    return (name, nbformat.read(SOLUTIONS / assignment / name, as_version=4),
            nbformat.read(course / "exercises" / assignment / name, as_version=4))


def submission(index: int, sol: nbformat.NotebookNode, rel: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Student ``index``'s notebook: correct, partly wrong (1 to n-1 answers left blank) or blank, in turn."""
    answers = [i for i, c in enumerate(sol.cells) if c.metadata.get("nbgrader", {}).get("solution")]
    kind = index % 3
    if kind == 0:
        return sol
    if kind == 2:
        return rel
    nb = copy.deepcopy(sol)
    for i in answers[: 1 + (index // 3) % max(1, len(answers) - 1)]:
        nb.cells[i] = copy.deepcopy(rel.cells[i])
    return nb


def submit(course: Path, assignment: str, students: dict[str, nbformat.NotebookNode], name: str) -> None:
    for student, nb in students.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / name)


def per_chapter(work: Path, assignments: list[str], count: int) -> list[dict]:
    course = new_course(work / "chapters", assignments)
    startup = nbgrader(course, "autograde", assignments[0], "--student", "nobody")  # starts, finds nothing
    measurements = []
    for assignment in assignments:
        name, sol, _ = notebooks(course, assignment)
        submit(course, assignment, {f"correct{i}": sol for i in range(count)}, name)
        result = nbgrader(course, "autograde", assignment)
        per_submission = result["seconds"] / count
        measurement = dict(
            measurement="seconds_per_submission", assignment=assignment, submissions=count,
            wall_s=round(result["seconds"], 2), seconds_per_submission=round(per_submission, 2),
            without_startup_s=round((result["seconds"] - startup["seconds"]) / count, 2),
            nbgrader_startup_s=round(startup["seconds"], 2), goal_s=GOAL_S, within_goal=per_submission <= GOAL_S,
            peak_tree_rss_mib=result["peak_tree_rss_mib"], peak_process_rss_mib=result["peak_process_rss_mib"],
            returncode=result["returncode"])
        print(json.dumps(measurement), flush=True)
        measurements.append(measurement)
    return measurements


def whole_class(work: Path, assignment: str, size: int, jobs: int) -> list[dict]:
    base = new_course(work / "class" / "base", [assignment])
    name, sol, rel = notebooks(base, assignment)
    submit(base, assignment, {f"student{i:03d}": submission(i, sol, rel) for i in range(size)}, name)
    courses = {mode: shutil.copytree(base, base.with_name(mode)) for mode in ("sequential", "parallel")}
    commands = {
        "sequential": [str(Path(sys.executable).with_name("nbgrader")), "autograde", assignment],
        "parallel": [sys.executable, "-m", "course_grading.parallel_grading", assignment, "--jobs", str(jobs)],
    }
    measurements = []
    for mode, cmd in commands.items():
        result = run_measured(cmd, courses[mode])
        export = nbgrader(courses[mode], "export", "--to", "grades.csv")
        measurement = dict(
            measurement="class", mode=mode, assignment=assignment, submissions=size,
            jobs=1 if mode == "sequential" else jobs, wall_s=round(result["seconds"], 2),
            seconds_per_submission=round(result["seconds"] / size, 2),
            peak_tree_rss_mib=result["peak_tree_rss_mib"], peak_process_rss_mib=result["peak_process_rss_mib"],
            returncode=result["returncode"], export_returncode=export["returncode"])
        if result["returncode"] != 0:
            measurement["log_tail"] = (result["stdout"] + result["stderr"])[-2000:]
        measurements.append(measurement)
    sequential, parallel = measurements
    parallel["speedup"] = round(sequential["wall_s"] / parallel["wall_s"], 2)
    parallel["gradebook_identical"] = (dump_gradebook(courses["sequential"] / "gradebook.db")
                                       == dump_gradebook(courses["parallel"] / "gradebook.db"))
    parallel["csv_identical"] = ((courses["sequential"] / "grades.csv").read_bytes()
                                 == (courses["parallel"] / "grades.csv").read_bytes())
    for measurement in measurements:
        print(json.dumps(measurement), flush=True)
    return measurements


MEDIAN_GOAL_S = 4.0


def per_submission_median(work: Path, assignment: str, count: int) -> dict:
    """Median seconds per submission on one core (parallel_grading --jobs 1 times each submission)."""
    course = new_course(work / "median", [assignment])
    name, sol, rel = notebooks(course, assignment)
    submit(course, assignment, {f"student{i:03d}": submission(i, sol, rel) for i in range(count)}, name)
    load = os.getloadavg()[0]
    result = run_measured([sys.executable, "-m", "course_grading.parallel_grading", assignment, "--jobs", "1"], course)
    # CPU seconds of the whole grading run (the grader, its worker, every sandbox and kernel, sampled
    # every 0.1 s), per submission, start-up included: what one submission costs a core however busy
    # the machine is. The wall-clock median depends on what else runs at the same time.
    cpu = result["tree_cpu_s"]
    seconds = sorted(float(m) for m in re.findall(r"^graded\s+\S+\s+\(([\d.]+) s\)", result["stdout"], re.M))
    median = statistics.median(seconds) if seconds else None
    measurement = dict(measurement="median_seconds_per_submission", assignment=assignment, submissions=count,
                       graded=len(seconds), seconds=seconds, median_s=median, goal_s=MEDIAN_GOAL_S,
                       within_goal=median is not None and median <= MEDIAN_GOAL_S, sandboxed=True,
                       cpu_s_per_submission=round(cpu / count, 2), load_average_at_start=round(load, 2),
                       returncode=result["returncode"], peak_tree_rss_mib=result["peak_tree_rss_mib"])
    print(json.dumps(measurement), flush=True)
    return measurement


def main() -> None:
    all_assignments = sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-chapter", type=int, default=2, help="correct submissions per chapter (0: skip part a)")
    parser.add_argument("--assignments", nargs="+", default=all_assignments, choices=all_assignments, metavar="NAME",
                        help="chapters for part (a) (default: all)")
    parser.add_argument("--class-size", type=int, default=100, help="submissions in part (b) (0: skip it)")
    parser.add_argument("--class-assignment", default="ch05_attention", choices=all_assignments, metavar="NAME")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes for the parallel run")
    parser.add_argument("--median-count", type=int, default=9,
                        help="submissions for part (d), the median per submission (0: skip it)")
    parser.add_argument("--save", action="store_true", help="write bench/results/autograde.json")
    parser.add_argument("--keep", type=Path, default=None, help="work in this new folder and keep it")
    args = parser.parse_args()
    if args.jobs < 1 or args.per_chapter < 0 or args.class_size < 0:
        parser.error("--jobs must be at least 1; --per-chapter and --class-size at least 0")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} exists already; give a new folder")

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-autograde-"))
    context = dict(machine=platform.processor() or platform.machine(), cpu=cpu_name(), cpus=os.cpu_count(),
                   sandbox="bubblewrap")
    print(json.dumps(dict(measurement="context", **context, work_dir=str(work))), flush=True)
    try:
        chapters = per_chapter(work, args.assignments, args.per_chapter) if args.per_chapter else []
        klass = whole_class(work, args.class_assignment, args.class_size, args.jobs) if args.class_size else []
        median = per_submission_median(work, args.class_assignment, args.median_count) if args.median_count else None
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.save:
        out = ROOT / "bench" / "results" / "autograde.json"
        out.parent.mkdir(exist_ok=True)
        # Parts not measured in this run keep their saved results (each part records its own context).
        saved = json.loads(out.read_text()) if out.exists() else {}
        result = {"context": context if (chapters or klass) else saved.get("context", context),
                  "per_chapter": chapters or saved.get("per_chapter", []), "class": klass or saved.get("class", []),
                  "per_submission": dict(median, context=context) if median else saved.get("per_submission")}
        out.write_text(json.dumps(result, indent=1) + "\n")
    parts = []
    if chapters:
        parts.append("per submission " + ", ".join(f"{m['assignment'].split('_')[0]} {m['seconds_per_submission']} s"
                                                   for m in chapters) + f" (goal <= {GOAL_S:g} s)")
    if klass:
        seq, par = klass
        parts.append(f"class of {seq['submissions']} x {seq['assignment']}: sequential {seq['wall_s']} s, "
                     f"parallel ({par['jobs']} jobs) {par['wall_s']} s, speed-up {par['speedup']}x, "
                     f"peak memory {seq['peak_tree_rss_mib']} vs {par['peak_tree_rss_mib']} MiB, gradebook "
                     f"{'identical' if par['gradebook_identical'] else 'DIFFERENT'}, CSV "
                     f"{'identical' if par['csv_identical'] else 'DIFFERENT'}")
    if median:
        parts.append(f"median per submission on one core ({median['assignment']}, sandboxed): "
                     f"{median['median_s']} s wall (goal <= {MEDIAN_GOAL_S:g} s), {median['cpu_s_per_submission']} "
                     f"CPU s per submission, load average {median['load_average_at_start']} at the start")
    print("summary: " + "; ".join(parts))


if __name__ == "__main__":
    main()
