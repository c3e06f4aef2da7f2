"""Instructor side: autograde a whole class with several processes, with the result of ``nbgrader autograde``.

    python -m course_grading.parallel_grading ASSIGNMENT [--jobs N] [--student ID ...] [--force]

Run it from the course directory (the folder with ``nbgrader_config.py``), or pass ``--course-dir``.
``nbgrader autograde`` grades one student after another; this command runs N worker processes
(default: one per CPU) and leaves the same gradebook rows, the same ``nbgrader export`` CSV and
the same files in ``autograded/`` as the sequential command would.

How it stays safe for the sqlite gradebook: no two processes ever write one sqlite file.

1. The parent opens the gradebook once (nbgrader creates or migrates it, as ``autograde`` does),
   checks that the assignment is in it, and takes a consistent snapshot (sqlite's backup API).
2. Each worker process copies the snapshot to a file of its own, loads the course's nbgrader
   configuration exactly as ``nbgrader autograde`` does, and grades the students it is handed
   in-process with nbgrader's ``Autograde`` converter against its own copy. It writes the graded
   notebooks straight to ``autograded/<student>/``: every student has their own folder.
3. When all students are done, the parent copies each graded student's rows (student, submission,
   submitted notebooks, grades, comments) from the worker's copy into the main gradebook, in
   nbgrader's own student order, in one transaction. The rows of a student whose submission was
   already in the gradebook (re-grading with ``--force``) are updated in place, keeping their ids.

Why the result is identical: every student is graded by the same nbgrader code with the same
configuration, reading a gradebook that holds what the sequential run would have held for that
student (autograde reads only the assignment and that student's own rows). Timestamps
(``timestamp.txt``) and late penalties are computed by nbgrader in the worker, as in a sequential
run. Students created on the fly are inserted in the order the sequential run creates them,
which is the order ``nbgrader export`` lists students in when they have no names. Only the row
ids, random uuids in both cases, differ; :func:`dump_gradebook` compares gradebooks without them.

Failures: a notebook that crashes its kernel or hangs is graded by the course's rules (see
``course_grading/preprocessors.py``; each kernel runs in the sandbox of
``course_grading/sandbox.py``). When nbgrader cannot grade a student at all (say the file is not a
notebook), that student's rows are merged exactly as nbgrader left them (nbgrader has already
removed the half-written ``autograded/`` folder), the others are unaffected, the student is named
with nbgrader's own message, and the exit status is 1, as with ``nbgrader autograde``. Where the
sequential command stops the whole batch (a database error, an invalid ``timestamp.txt``), this
command reports that one student and goes on with the rest. If the final merge itself fails,
the main gradebook is left untouched and the ``autograded/`` folders written by this run are
removed, so that running the command again grades those students again. Ctrl-C stops handing
out students; the ones being graded finish and everything graded is recorded (exit status 130).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

__all__ = ["GradingSetupError", "StudentResult", "default_jobs", "dump_gradebook", "grade_in_parallel", "main"]

# The gradebook tables that hold one student's grading of one assignment, parents before children.
# Besides the student's own row, these are what ``nbgrader autograde`` writes for a student; other
# tables it only reads, or adds a shared row to (the default course). tests/test_parallel_grading.py
# checks this by comparing whole gradebooks.
_SUBMISSION_TABLES = ("submitted_assignment", "submitted_notebook", "grade", "comment")


class GradingSetupError(Exception):
    """The command cannot start: the message says what is wrong with the course or the arguments."""


@dataclass
class StudentResult:
    """What happened to one student's submission in a worker process."""

    student: str
    status: str  # "graded", "failed" (nbgrader could not grade it), or "skipped" (already graded)
    seconds: float
    messages: list[tuple[int, str]] = field(default_factory=list)  # (logging level, message)
    database: str | None = None  # the worker's gradebook copy that holds this student's rows


# ---------------------------------------------------------------------------------------------
# Worker processes


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


_worker: dict[str, Any] = {}


def _init_worker(course_dir: str, snapshot: str, work_dir: str, assignment: str, force: bool,
                 kernel_threads: int | None) -> None:
    """Give this worker process its own gradebook copy and the course's nbgrader configuration."""
    from nbgrader.apps.autogradeapp import AutogradeApp

    if kernel_threads is not None:
        # The kernels started from here inherit this. PyTorch (and NumPy's BLAS) otherwise start one
        # thread per CPU in every kernel: N kernels on N CPUs then run N x N busy-waiting threads,
        # which made a 2-worker run on 2 cores hardly faster than one worker.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(kernel_threads)

    # Ctrl-C in the terminal reaches every process of the command: the parent decides what stops
    # (see _run_workers). A handler, unlike SIG_IGN, is not inherited by the kernels started from here.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    os.chdir(course_dir)
    database = Path(work_dir) / f"worker-{os.getpid()}-{uuid.uuid4().hex[:8]}.sqlite"
    shutil.copyfile(snapshot, database)
    app = AutogradeApp()
    # The same configuration files and the same --force flag as `nbgrader autograde ASSIGNMENT --force`.
    app.initialize(["--force"] if force else [])
    app.coursedir.assignment_id = assignment
    app.coursedir.db_url = f"sqlite:///{database}"
    # Logs go back to the parent with each result (and are printed there in one piece), not to
    # this process's stderr, where N workers would interleave them.
    for handler in list(app.log.handlers):
        app.log.removeHandler(handler)
    app.log.propagate = False
    _worker.update(app=app, database=str(database))


def _grade_student(student: str) -> StudentResult:
    """Autograde one student's submission in this worker, against the worker's gradebook copy."""
    from nbgrader.converters import NbGraderException

    from course_grading.autograde import CourseAutograde

    class RecordingAutograde(CourseAutograde):
        processed = False

        def init_destination(self, assignment_id: str, student_id: str) -> bool:
            # nbgrader decides here whether to skip an already graded submission; remember it.
            self.processed = super().init_destination(assignment_id, student_id)
            return self.processed

    app = _worker["app"]
    handler = _ListHandler()
    app.log.addHandler(handler)
    start = time.perf_counter()
    app.coursedir.student_id = glob.escape(student)  # nbgrader reads it as a pattern
    converter = RecordingAutograde(coursedir=app.coursedir, parent=app)
    try:
        converter.start()
        status = "graded" if converter.processed else "skipped"
    except NbGraderException:
        status = "failed"  # nbgrader has logged which student failed and why
    except Exception:
        handler.messages.append((logging.ERROR, traceback.format_exc().rstrip()))
        status = "failed"
    except SystemExit as stop:  # some nbgrader checks (an invalid timestamp.txt) call sys.exit()
        handler.messages.append((logging.ERROR, f"nbgrader stopped with exit status {stop.code}"))
        status = "failed"
    finally:
        app.log.removeHandler(handler)
    return StudentResult(student, status, time.perf_counter() - start, handler.messages, _worker["database"])


# ---------------------------------------------------------------------------------------------
# The parent: checks, listing the submissions, running the workers, merging.


def _sqlite_path(db_url: str) -> Path:
    if not db_url.startswith("sqlite:///"):
        raise GradingSetupError(
            f"the gradebook is {db_url!r}, not a sqlite file: parallel grading merges sqlite "
            "gradebooks only; use `nbgrader autograde` for this course")
    return Path(db_url[len("sqlite:///"):])


def _course_app() -> Any:
    from nbgrader.apps.autogradeapp import AutogradeApp

    app = AutogradeApp()
    app.initialize([])
    for handler in list(app.log.handlers):  # nbgrader's INFO chatter while we only look things up
        handler.setLevel(logging.WARNING)
    return app


def _check_assignment(app: Any, assignment: str) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    coursedir = app.coursedir
    source = Path(coursedir.format_path(coursedir.source_directory, ".", assignment))
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:  # creates or migrates, as autograde does
        try:
            gb.find_assignment(assignment)
            return
        except MissingEntry:
            known = sorted(a.name for a in gb.assignments)
    if not source.is_dir():
        raise GradingSetupError(
            f"no assignment {assignment!r}: {source} does not exist and the gradebook does not list it "
            f"(the gradebook has: {', '.join(known) or 'no assignments'})")
    raise GradingSetupError(
        f"assignment {assignment!r} is not in the gradebook {coursedir.db_url}: run "
        f"`nbgrader generate_assignment {assignment}` first (nbgrader autograde needs it too)")


def _submitted_students(app: Any, assignment: str, patterns: list[str]) -> list[str]:
    """The students with a submitted notebook, in the order ``nbgrader autograde`` grades them."""
    from nbgrader.converters import NbGraderException

    from course_grading.autograde import CourseAutograde

    coursedir = app.coursedir
    coursedir.assignment_id = assignment
    coursedir.student_id = "*"
    lister = CourseAutograde(coursedir=coursedir, parent=app)
    try:
        lister.init_notebooks()  # nbgrader's own selection of submissions (with notebooks in them)
    except NbGraderException:
        folder = coursedir.format_path(coursedir.submitted_directory, "*", assignment)
        raise GradingSetupError(f"no submitted notebooks of {assignment!r}: nothing matches {folder}/*.ipynb")
    pattern = re.compile(coursedir.format_path(
        coursedir.submitted_directory, "(?P<student_id>.*)", re.escape(assignment), escape=True))
    # nbgrader grades submissions sorted by folder path, which is not always the order of the ids.
    students = [pattern.fullmatch(path)["student_id"] for path in sorted(lister.assignments)]
    if not patterns:
        return students
    def matches(student: str, pattern: str) -> bool:  # an id is also matched literally: ana[1] is a folder name
        return student == pattern or fnmatch.fnmatchcase(student, pattern)

    unmatched = [p for p in patterns if not any(matches(s, p) for s in students)]
    if unmatched:
        raise GradingSetupError(
            f"no submission of {assignment!r} by student(s) {', '.join(map(repr, unmatched))} in "
            f"{coursedir.format_path(coursedir.submitted_directory, '*', assignment)}")
    return [s for s in students if any(matches(s, p) for p in patterns)]


def _rows(con: sqlite3.Connection, table: str, where: str, args: list) -> list[sqlite3.Row]:
    # ORDER BY rowid: inserting in the order nbgrader inserted keeps the same row order as a sequential run.
    return con.execute(f'SELECT * FROM "{table}" WHERE {where} ORDER BY rowid', args).fetchall()


def _in(ids: list[str]) -> str:
    return "(" + ",".join("?" * len(ids)) + ")"


def _student_rows(con: sqlite3.Connection, assignment: str, student: str) -> dict[str, list[sqlite3.Row]]:
    """One student's row and all the rows of their submission of one assignment."""
    rows = {"student": _rows(con, "student", "id = ?", [student])}
    rows["submitted_assignment"] = _rows(
        con, "submitted_assignment",
        "student_id = ? AND assignment_id IN (SELECT id FROM assignment WHERE name = ?)", [student, assignment])
    ids = [r["id"] for r in rows["submitted_assignment"]]
    rows["submitted_notebook"] = _rows(con, "submitted_notebook", f"assignment_id IN {_in(ids)}", ids)
    ids = [r["id"] for r in rows["submitted_notebook"]]
    for table in ("grade", "comment"):
        rows[table] = _rows(con, table, f"notebook_id IN {_in(ids)}", ids)
    return rows


def _upsert(con: sqlite3.Connection, table: str, row: sqlite3.Row) -> None:
    columns = row.keys()
    names = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != "id")
    # An update keeps the row where it is (its rowid), as nbgrader's own update would.
    con.execute(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))}) '
                f'ON CONFLICT(id) DO {"UPDATE SET " + updates if updates else "NOTHING"}', tuple(row))


def _shared_rows(database: str) -> dict[str, list[tuple]]:
    """Every row of the tables that do not belong to one student (assignments, cells, courses)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        rows = {t: con.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables
                if t not in ("student", *_SUBMISSION_TABLES)}
    con.close()
    return rows


def _merge(main_db: Path, snapshot: Path, assignment: str, results: list[StudentResult]) -> None:
    """Make each student's rows in the main gradebook equal to their rows in their worker's copy.

    ``results`` must be in nbgrader's grading order. All reads from the workers' copies happen
    first; then the main gradebook is written by this process alone, in one transaction. Rows
    that a worker added to the other tables (nbgrader adds a "default_course" where it is missing)
    are added too.
    """
    before = {t: set(rows) for t, rows in _shared_rows(str(snapshot)).items()}
    graded: list[tuple[str, dict[str, list[sqlite3.Row]]]] = []
    shared: list[tuple[str, tuple]] = []
    for database in dict.fromkeys(r.database for r in results):  # each worker's copy once, in order
        shared += [(t, row) for t, rows in _shared_rows(database).items() for row in rows
                   if row not in before.get(t, ()) and (t, row) not in shared]
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as worker:
            worker.row_factory = sqlite3.Row
            graded += [(r.student, _student_rows(worker, assignment, r.student)) for r in results
                       if r.database == database]
        worker.close()
    graded.sort(key=lambda item: [r.student for r in results].index(item[0]))
    con = sqlite3.connect(main_db, timeout=60, isolation_level=None)
    con.row_factory = sqlite3.Row
    try:
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: readers may go on, no other writer
        for table, row in shared:
            con.execute(f'INSERT OR IGNORE INTO "{table}" VALUES ({", ".join("?" * len(row))})', row)
        for student, new in graded:
            old = _student_rows(con, assignment, student)
            for table in reversed(_SUBMISSION_TABLES):  # rows nbgrader no longer has: children first
                keep = {r["id"] for r in new[table]}
                gone = [r["id"] for r in old[table] if r["id"] not in keep]
                if gone:
                    con.execute(f'DELETE FROM "{table}" WHERE id IN {_in(gone)}', gone)
            for table in ("student", *_SUBMISSION_TABLES):
                for row in new[table]:
                    _upsert(con, table, row)
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _report(result: StudentResult, out: Callable[[str], None]) -> None:
    out(f"{result.status:8} {result.student}  ({result.seconds:.1f} s)")
    for level, message in result.messages:
        if level >= logging.WARNING:
            prefix = "  error: " if level >= logging.ERROR else "  warning: "
            out(prefix + message.replace("\n", "\n    "))


def default_jobs() -> int:
    """The number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _print(line: str) -> None:
    print(line, flush=True)  # progress should show at once, also through a pipe (make grade | tee)


def grade_in_parallel(assignment: str, jobs: int | None = None, students: list[str] | None = None,
                      force: bool = False, out: Callable[[str], None] = _print) -> int:
    """Autograde the submissions of ``assignment`` in the current directory; return the exit status.

    0: every selected submission was graded (or skipped as already graded); 1: nbgrader could
    not grade some student, or a worker process died (the others' grades are recorded); 130:
    interrupted with Ctrl-C (what was graded is recorded). Raises :class:`GradingSetupError`
    when nothing can be graded.
    """
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise GradingSetupError(f"--jobs must be at least 1, not {jobs}")
    if not Path("nbgrader_config.py").is_file():
        raise GradingSetupError(
            f"{Path.cwd()} has no nbgrader_config.py: run this from the course directory, or pass --course-dir")
    from course_grading import sandbox

    if sandbox.no_sandbox_requested():
        out("warning: COURSE_GRADING_NO_SANDBOX is set: student code runs WITHOUT a sandbox")
    else:
        try:
            sandbox.check_sandbox()
        except sandbox.SandboxUnavailable as problem:
            raise GradingSetupError(f"refusing to grade: {problem} (to grade without a sandbox, with student "
                                    "code running with your rights, set COURSE_GRADING_NO_SANDBOX=1)") from None
    start = time.perf_counter()
    app = _course_app()
    main_db = _sqlite_path(app.coursedir.db_url).resolve()
    _check_assignment(app, assignment)
    order = _submitted_students(app, assignment, students or [])
    jobs = min(jobs, len(order))
    # autograded/ itself is shared by the workers; make it before they race to.
    Path(app.coursedir.format_path(app.coursedir.autograded_directory, ".", ".")).mkdir(parents=True, exist_ok=True)

    def autograded(student: str) -> Path:
        return Path(app.coursedir.format_path(app.coursedir.autograded_directory, student, assignment))

    started_at = time.time()

    def remove_half_written(students: list[str]) -> None:
        for student in students:
            # A worker that died may have left a half-written folder, which a re-run would skip as
            # graded; a folder from an earlier run (older than this run) stays.
            folder = autograded(student)
            if folder.is_dir() and folder.stat().st_mtime >= started_at:
                shutil.rmtree(folder)
    with tempfile.TemporaryDirectory(prefix="parallel-grading-") as work_dir:
        snapshot = Path(work_dir) / "snapshot.sqlite"
        with sqlite3.connect(f"file:{main_db}?mode=ro", uri=True) as source, sqlite3.connect(snapshot) as copy:
            source.backup(copy)  # consistent even if someone reads or writes the gradebook meanwhile
        source.close()
        copy.close()
        out(f"autograding {len(order)} submission(s) of {assignment} with {jobs} worker process(es)")
        # Share the CPUs among the kernels, unless the instructor chose a thread count (OMP_NUM_THREADS).
        kernel_threads = None if jobs == 1 or "OMP_NUM_THREADS" in os.environ else max(1, default_jobs() // jobs)
        initargs = (str(Path.cwd()), str(snapshot), work_dir, assignment, force, kernel_threads)
        results, interrupted = _run_workers(order, jobs, initargs, out)
        lost = [s for s in order if s not in results]
        if lost and not interrupted:
            # A worker that died took its pool down. Grade each remaining submission in a pool of its
            # own, so that one submission that kills its worker again costs no one else a grade.
            remove_half_written(lost)
            out(f"a worker process died; grading the {len(lost)} remaining submission(s) one by one with new workers")
            for student in lost:
                more, interrupted = _run_workers([student], 1, initargs, out)
                results.update(more)
                if interrupted:
                    break
        lost = [s for s in order if s not in results]
        remove_half_written(lost)
        to_merge = [results[s] for s in order if s in results and results[s].status != "skipped"]
        try:
            if to_merge:
                _merge(main_db, snapshot, assignment, to_merge)
        except BaseException:
            for result in to_merge:  # their grades are not recorded: let the next run grade them again
                shutil.rmtree(autograded(result.student), ignore_errors=True)
            out(f"error: could not record the grades in {main_db}; nothing was changed there, and the "
                f"autograded/ folders of this run were removed so that a re-run grades those students again")
            raise

    failed = [s for s in order if s in results and results[s].status == "failed"]
    counts = {status: sum(r.status == status for r in results.values()) for status in ("graded", "skipped")}
    for student in failed:
        out(f"There was an error processing assignment '{assignment}' for student '{student}'")
    if lost:
        why = "the run was interrupted" if interrupted else "a worker process failed"
        out(f"not graded ({why}); run the command again to grade them: {', '.join(lost)}")
    out(f"summary: {assignment}: {counts['graded']} graded, {len(failed)} failed, {counts['skipped']} skipped "
        f"(already graded), {len(lost)} not graded, of {len(order)} submissions in "
        f"{time.perf_counter() - start:.1f} s with {jobs} jobs")
    return 130 if interrupted else 1 if failed or lost else 0


def _run_workers(order: list[str], jobs: int, initargs: tuple, out: Callable[[str], None],
                 ) -> tuple[dict[str, StudentResult], bool]:
    """Grade the students in ``order`` with ``jobs`` worker processes; return their results and
    whether the run was interrupted.

    Ctrl-C stops handing out students; the ones being graded finish (the workers ignore the
    interrupt, and nbgrader runs each kernel in a session of its own, so neither is disturbed).
    """
    results: dict[str, StudentResult] = {}
    broken: list[str] = []
    # spawn, not fork: each worker starts clean, without the parent's open database handles.
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=initargs)
    futures: dict[Future, str] = {pool.submit(_grade_student, s): s for s in order}

    def collect(pending: set[Future]) -> None:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: order.index(futures[f])):
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BrokenProcessPool as error:  # every student not yet done gets this
                    if not broken:
                        broken.append(str(error))
                        out(f"error: {error}")
                    continue  # reported as not graded
                except Exception as error:  # not nbgrader's doing: _grade_student catches those
                    out(f"error: {futures[future]}: {error!r}")
                    continue
                results[result.student] = result
                _report(result, out)

    interrupted = False
    try:
        collect(set(futures))
    except KeyboardInterrupt:
        interrupted = True
        out("interrupted: no more submissions are started; the ones being graded finish and are recorded")
        for future in futures:
            future.cancel()  # only those still waiting in the queue can be cancelled
        while True:  # abandoning a half-graded student would leave autograded/ and the gradebook out of step
            try:
                collect({f for f in futures if futures[f] not in results})
                break
            except KeyboardInterrupt:
                out("still waiting for the submissions being graded (at most one per worker process)")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results, interrupted


# ---------------------------------------------------------------------------------------------
# Comparing gradebooks


def dump_gradebook(path: str | os.PathLike) -> dict[str, list[tuple]]:
    """Every table of a sqlite gradebook, with each random uuid replaced by its row's natural key.

    A row's natural key is built from the columns of its table's UNIQUE constraint (an assignment's
    name; a submission's assignment and student; a grade's cell and submitted notebook), following
    foreign keys to the parents' natural keys. Two gradebooks that record the same grades give equal
    dumps, whatever ids their rows got. Rows are sorted, so row order is not compared.
    """
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        rows = {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
        parents = {t: {fk["from"]: fk["table"] for fk in con.execute(f'PRAGMA foreign_key_list("{t}")')}
                   for t in tables}
        unique: dict[str, list[str]] = {}
        for t in tables:
            indexes = sorted(i["name"] for i in con.execute(f'PRAGMA index_list("{t}")') if i["origin"] == "u")
            if indexes:
                unique[t] = [c["name"] for c in con.execute(f'PRAGMA index_info("{indexes[0]}")')]
    finally:
        con.close()
    by_id = {t: {r["id"]: r for r in rows[t]} for t in tables if rows[t] and "id" in rows[t][0].keys()}

    @cache
    def key(table: str, row_id: Any) -> tuple:
        if row_id is None:
            return (table, None)
        if "id" in parents[table]:  # a subclass table shares its parent's id (grade_cells -> base_cell)
            return key(parents[table]["id"], row_id)
        columns = unique.get(table, ["id"])
        if columns == ["id"]:  # a natural id already (student, course)
            return (table, row_id)
        row = by_id[table][row_id]
        return (table, *(key(parents[table][c], row[c]) if c in parents[table] else row[c] for c in columns))

    def canonical(table: str, row: sqlite3.Row) -> tuple:
        return tuple((c, key(table, row[c]) if c == "id" else key(parents[table][c], row[c])
                      if c in parents[table] else row[c]) for c in row.keys())

    return {t: sorted((canonical(t, r) for r in rows[t]), key=repr) for t in tables}


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_grading.parallel_grading",
        description="Autograde every submission of an assignment with several processes; the gradebook, "
                    "the export and autograded/ end up exactly as after `nbgrader autograde ASSIGNMENT`.")
    parser.add_argument("assignment", help="the assignment to grade, e.g. ch05_attention")
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help=f"worker processes (default: one per CPU, here {default_jobs()})")
    parser.add_argument("--student", nargs="+", default=[], metavar="ID",
                        help="grade only these students (each may be a glob pattern, as in nbgrader)")
    parser.add_argument("--force", "-f", action="store_true",
                        help="re-grade submissions that are already graded (as nbgrader's --force)")
    parser.add_argument("--course-dir", default=".", type=Path,
                        help="the course directory, with nbgrader_config.py (default: the current directory)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    if not args.course_dir.is_dir():
        parser.error(f"--course-dir {args.course_dir} is not a directory")
    os.chdir(args.course_dir)
    try:
        return grade_in_parallel(args.assignment, args.jobs, args.student, args.force)
    except GradingSetupError as problem:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
