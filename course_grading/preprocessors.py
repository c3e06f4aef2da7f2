"""nbgrader preprocessors that grade every submission fairly, in a sandbox, judged outside it.

Stock nbgrader 0.9 gives up on a whole submission (score 0, autograded copy removed) when a
student duplicated a graded cell, deleted a test cell in an unlucky place, wrote a loop that
ignores interrupts, or crashed their kernel; it scores 0 for a test cell that printed a warning,
and for a whole notebook whose cell metadata an editor changed. It also runs the student's code,
and the hidden tests, in one process on the grading machine. ``nbgrader_config.py`` swaps in the
classes below, which apply the rules of the instructor guide instead:

1. Test cells are always the instructor's: edited test cells are overwritten and deleted ones
   are put back (stock ``OverwriteCells``, plus :class:`RestoreMissingCells`); the nbgrader
   metadata of every cell comes from the release, matched by the cell's id
   (:class:`RestoreCellMetadata`).
2. If a graded cell appears more than once, the *first* copy keeps its grade id and the later
   copies become ordinary, ungraded cells that still run (:class:`KeepFirstCellIds`).
3. A cell that runs past the per-cell time limit, or a kernel that dies, ends the run: that cell
   and every later cell get an error output, so tests after it score 0 and tests before it keep
   their points (:class:`StopAtHangOrCrash`).
4. The student's kernel runs in a bubblewrap sandbox (:mod:`course_grading.sandbox`); for the
   assignments listed in ``SandboxedExecute.judged_assignments``, test cells run in the grader's
   own process against proxies of the student's functions (:mod:`course_grading.judge`), so the
   hidden tests never enter the student's process (:class:`SandboxedExecute`).
5. Only an error output fails a test cell; stderr output and warnings do not
   (:class:`SaveAutoGradesErrorsOnly`).
6. Feedback never shows hidden tests (:class:`HideHiddenTests`).

Nothing here touches ``submitted/``: nbgrader reads it and writes the graded copy to ``autograded/``.
"""

from __future__ import annotations

import copy
import queue
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat.notebooknode import NotebookNode, from_dict
from nbgrader import utils
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells, SaveAutoGrades
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Dict, Integer, List, Unicode

from course_grading import sandbox
from course_grading.judge import Judge, StudentKernelDied, StudentTimeout

__all__ = ["HideHiddenTests", "KeepFirstCellIds", "RestoreCellMetadata", "RestoreMissingCells",
           "SandboxedExecute", "SaveAutoGradesErrorsOnly", "StopAtHangOrCrash", "determine_grade"]


def _grade_id(cell: NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


class KeepFirstCellIds(NbGraderPreprocessor):
    """Rule 2: the first cell with a grade id keeps it; later copies lose their nbgrader metadata.

    Replaces nbgrader's ``DeduplicateIds``, which leaves an empty ``nbgrader`` dict behind that
    later crashes ``OverwriteCells`` (KeyError: 'grade_id') and fails the submission.
    """

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        seen: set[str] = set()
        for index, cell in enumerate(nb.cells):
            grade_id = _grade_id(cell)
            if "nbgrader" in cell.get("metadata", {}) and grade_id is None:
                del cell.metadata["nbgrader"]  # metadata without an id cannot be graded
            elif grade_id is not None and grade_id in seen:
                self.log.warning("Cell %d repeats grade id '%s': graded only where it first appears", index, grade_id)
                del cell.metadata["nbgrader"]
            elif grade_id is not None:
                seen.add(grade_id)
        return nb, resources


class RestoreMissingCells(OverwriteCells):
    """Rule 1: put deleted test (and task) cells back, after the nearest earlier cell that survived.

    nbgrader's own ``add_missing_cells`` assumes the cell just before a deleted test cell was
    kept; when it was deleted too, grading of that student crashes. This version walks back
    through the source notebook until it finds a cell the submission still has.
    """

    def add_missing_grade_cells(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        return self._restore(nb, kind="grade"), resources

    def add_missing_task_cells(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        return self._restore(nb, kind="task"), resources

    def _restore(self, nb: NotebookNode, kind: str) -> NotebookNode:
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        order = [cell.name for cell in source_cells]
        wanted = source_nb.grade_cells if kind == "grade" else source_nb.task_cells
        solution_ids = {cell.name for cell in source_nb.solution_cells}
        for missing in sorted(wanted, key=lambda c: order.index(c.name)):
            present = {_grade_id(cell): i for i, cell in enumerate(nb.cells) if _grade_id(cell)}
            if missing.name in present:
                continue
            self.log.warning("Missing %s cell '%s': restored from the source notebook", kind, missing.name)
            new_cell = self.missing_cell_transform(
                source_cells[order.index(missing.name)], missing.max_score,
                is_solution=missing.name in solution_ids, is_task=kind == "task",
            )
            earlier = [present[name] for name in reversed(order[: order.index(missing.name)]) if name in present]
            nb.cells.insert(earlier[0] + 1 if earlier else 0, new_cell)
        return nb


class StopAtHangOrCrash(Execute):
    """Rule 3: a timed-out cell or a dead kernel ends the run; later cells are marked as not run.

    nbgrader's ``Execute`` would interrupt the kernel (which a loop can ignore) or raise, and the
    whole submission would then fail. Here the run stops cleanly, the notebook is still saved
    and graded, and the kernel is killed when the run ends.
    """

    def preprocess(self, nb: NotebookNode, resources: dict, *args, **kwargs):
        self._stopped_because: str | None = None
        # Waiting for an interrupt that a student's loop may swallow only wastes time.
        self.interrupt_on_timeout = False
        return super().preprocess(nb, resources, *args, **kwargs)

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if cell.cell_type != "code":
            return cell, resources
        if self._stopped_because is not None:
            self._mark_not_run(cell, "NotRun", f"not run: {self._stopped_because}")
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except CellTimeoutError:
            self._stopped_because = f"cell {index} ran longer than the {self.timeout} s limit"
            self.log.error("Cell %d timed out after %s s; later cells are marked as not run", index, self.timeout)
            self._mark_not_run(cell, "CellTimeoutError", f"this cell ran longer than the {self.timeout} s limit")
        except DeadKernelError:
            self._kernel_died(cell, index)
        return cell, resources

    def _why_dead(self) -> str | None:
        """Why the grader ended the kernel, if it did (None: it died by itself)."""
        return None

    def _kernel_died(self, cell: NotebookNode, index: int) -> None:
        why = self._why_dead()
        self._stopped_because = f"{why or 'the kernel died'} while running cell {index}"
        self.log.error("%s in cell %d; later cells are marked as not run", why or "The kernel died", index)
        self._mark_not_run(cell, "DeadKernelError", f"{why or 'the kernel died'} while running this cell")

    @staticmethod
    def _mark_not_run(cell: NotebookNode, ename: str, evalue: str) -> None:
        cell.outputs.append(NotebookNode(
            output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"],
        ))


# ---------------------------------------------------------------------------------------------
# Rule 1: cell metadata from the release, by cell identity


def _release_notebook(config, assignment: str, notebook: str) -> NotebookNode | None:
    """The released notebook (or, failing that, the source notebook) of this assignment."""
    coursedir = CourseDirectory(config=config)
    for directory in (coursedir.release_directory, coursedir.source_directory):
        path = Path(coursedir.format_path(directory, ".", assignment)) / f"{notebook}.ipynb"
        if path.is_file():
            return nbformat.read(path, as_version=4)
    return None


class RestoreCellMetadata(NbGraderPreprocessor):
    """Rule 1: every cell's nbgrader metadata is the release's, found by the cell's identity.

    A cell is identified by its notebook cell id (which Jupyter keeps when a cell is edited, and
    which nbgrader copies from the source into the release); a cell whose id is unknown but whose
    grade id names a release cell that no other cell matched is taken to be that cell. Renamed
    grade ids, flipped ``grade``/``solution``/``locked`` flags and invented nbgrader metadata are
    thus undone before anything else looks at them. Cells the release does not have keep no
    nbgrader metadata: they are ordinary cells.
    """

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        info = resources.get("nbgrader", {})
        release = _release_notebook(self.config, info.get("assignment", ""), info.get("notebook", ""))
        if release is None:
            self.log.warning("No released notebook found; cell metadata is checked by nbgrader only")
            return nb, resources
        by_id = {c.get("id"): c for c in release.cells if "nbgrader" in c.get("metadata", {})}
        by_grade_id = {c.metadata.nbgrader.get("grade_id"): c for c in by_id.values()}
        matched: dict[int, NotebookNode] = {}
        for index, cell in enumerate(nb.cells):
            if cell.get("id") in by_id and by_id[cell["id"]] not in matched.values():
                matched[index] = by_id[cell["id"]]
        for index, cell in enumerate(nb.cells):
            if index in matched:
                continue
            source = by_grade_id.get(_grade_id(cell))
            if source is not None and source not in matched.values():
                matched[index] = source
        for index, cell in enumerate(nb.cells):
            old = cell.get("metadata", {}).get("nbgrader")
            if index in matched:
                new = copy.deepcopy(matched[index].metadata.nbgrader)
                if {k: v for k, v in (old or {}).items() if k != "checksum"} != \
                        {k: v for k, v in new.items() if k != "checksum"}:
                    self.log.warning("Cell %d ('%s'): nbgrader metadata restored from the release",
                                     index, new.get("grade_id"))
                cell.metadata["nbgrader"] = new
                if matched[index].cell_type != cell.cell_type:  # a test cell turned into markdown
                    nb.cells[index] = _as_type(cell, matched[index].cell_type)
            elif old is not None:
                if _grade_id(cell) not in by_grade_id:
                    self.log.warning("Cell %d: nbgrader metadata not in the release removed", index)
                    del cell.metadata["nbgrader"]
                # else: a copy of a known cell; KeepFirstCellIds makes it an ordinary cell
        return nb, resources


def _as_type(cell: NotebookNode, cell_type: str) -> NotebookNode:
    if cell_type == "code":
        new = nbformat.v4.new_code_cell(cell.source, metadata=cell.metadata)
    else:
        new = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
    if "id" in cell:
        new["id"] = cell["id"]
    return new


# ---------------------------------------------------------------------------------------------
# Rule 5: only errors fail a test cell


def determine_grade(cell: NotebookNode) -> tuple[float | None, float]:
    """nbgrader's ``utils.determine_grade``, except that output on stderr does not fail a cell.

    The grading rules promise all points when a test cell runs without an error; a correct
    answer that makes PyTorch print a warning must not lose them.
    """
    if utils.is_grade(cell) and not utils.is_solution(cell) and cell.cell_type == "code":
        max_points = float(cell.metadata["nbgrader"]["points"])
        if any(out.output_type == "error" for out in cell.outputs):
            return 0, max_points
        return max_points, max_points
    return utils.determine_grade(cell)


class SaveAutoGradesErrorsOnly(SaveAutoGrades):
    """nbgrader's ``SaveAutoGrades`` with :func:`determine_grade` (stderr is not an error)."""

    def _add_score(self, cell: NotebookNode, resources: dict) -> None:
        grade = self.gradebook.find_grade(cell.metadata["nbgrader"]["grade_id"], self.notebook_id,
                                          self.assignment_id, self.student_id)
        grade.auto_score, _ = determine_grade(cell)
        grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
        self.gradebook.db.commit()


# ---------------------------------------------------------------------------------------------
# Feedback without hidden tests

_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?", re.S | re.M)


class HideHiddenTests(Preprocessor):
    """For feedback: remove the hidden tests from test cells (the outputs still say what failed)."""

    enabled = Bool(True).tag(config=True)  # nbconvert preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and "### BEGIN HIDDEN TESTS" in cell.source:
            cell.source = _HIDDEN.sub("# (hidden checks, run at grading: not shown)\n", cell.source).rstrip()
        return cell, resources


# ---------------------------------------------------------------------------------------------
# Rule 4: the sandbox and the judge


def _is_test(cell: NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


class SandboxedExecute(StopAtHangOrCrash):
    """Rule 3, with the student's kernel in a sandbox and, where configured, a trusted judge.

    ``judged_assignments`` maps an assignment to what its exercises ask the student to write: whole
    ``course_lib`` modules (``"course_lib.attention"``), or some of a module's top-level names
    (``"course_lib.gpt:LayerNorm,GPT"``). Those are hidden in the sandbox, and the assignment's test
    cells run in this process (see :mod:`course_grading.judge`), never in the student's kernel. An
    assignment not listed has its test cells run in the sandboxed kernel, as in stock nbgrader.
    """

    judged_assignments = Dict(
        value_trait=List(Unicode()), default_value={},
        help="assignment -> course_lib modules hidden from its sandbox; its tests run in the trusted judge",
    ).tag(config=True)
    sandbox_memory_mb = Integer(6144, help="address-space limit of the sandboxed kernel (MiB)").tag(config=True)
    sandbox_file_size_mb = Integer(256, help="largest file the sandboxed kernel may write (MiB)").tag(config=True)
    sandbox_cpu_seconds = Integer(900, help="CPU seconds the sandboxed kernel may use in all").tag(config=True)
    sandbox_processes = Integer(256, help="processes and threads the sandboxed kernel may run").tag(config=True)
    sandbox_disk_mb = Integer(1024, help="what the sandboxed kernel may write into its scratch folder in all (MiB); "
                                         "more ends the run, as a timeout does").tag(config=True)
    sandbox_tmp_mb = Integer(256, help="size of the sandbox's private /tmp (MiB, in memory)").tag(config=True)
    use_sandbox = Bool(True, help="run kernels in bubblewrap; set COURSE_GRADING_NO_SANDBOX=1 to turn off "
                                  "(logged for every submission)").tag(config=True)
    max_output_bytes = Integer(1_000_000, help="output one cell may keep; the rest is dropped with a note, so "
                                                "that a cell printing in a loop cannot fill the grader's memory"
                               ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict, *args, **kwargs):
        info = resources.get("nbgrader", {})
        assignment = info.get("assignment")
        self._output_used: dict[int, int] = {}
        self._sandboxed = self.use_sandbox and not sandbox.no_sandbox_requested()
        if not self._sandboxed:
            self.log.warning("NOT SANDBOXED: the student's code runs with the grader's rights "
                             "(COURSE_GRADING_NO_SANDBOX is set or use_sandbox is off)")
        else:
            sandbox.check_sandbox()  # raises SandboxUnavailable with the reason
        judged = assignment in self.judged_assignments
        self._hidden_modules = list(self.judged_assignments.get(assignment, [])) if judged else []
        self._scratch = Path(tempfile.mkdtemp(prefix="grading-scratch-"))
        self._disk_full = False
        stop_watching = threading.Event()
        if self._sandboxed:
            threading.Thread(target=self._watch_disk, args=(stop_watching,), name="scratch-disk-watch",
                             daemon=True).start()
        self._judge = Judge(self._scratch, self._kernel_execute, self._kernel_alive,
                            hidden_modules=self._hidden_modules) if judged else None
        try:
            if self._judge is not None:
                self._run_trusted_setup(info)
            return super().preprocess(nb, resources, *args, **kwargs)
        except Exception:
            tail = self.km.stderr_tail() if isinstance(getattr(self, "km", None), sandbox.SandboxedKernelManager) else ""
            if tail:
                self.log.error("The sandboxed kernel's stderr ended with:\n%s", tail)
            raise
        finally:
            stop_watching.set()
            if self._judge is not None:
                self._judge.close()
            self._judge = None
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _watch_disk(self, stop: threading.Event) -> None:
        """End the kernel when its scratch folder holds more than ``sandbox_disk_mb`` (checked 4 times a second)."""
        limit = self.sandbox_disk_mb * 2**20
        while not stop.wait(0.25):
            if sandbox.disk_use(self._scratch, limit) > limit:
                self._disk_full = True
                process = getattr(getattr(getattr(self, "km", None), "provisioner", None), "process", None)
                if process is not None:
                    process.kill()  # bwrap; the sandbox's process namespace goes with it
                return

    def _why_dead(self) -> str | None:
        if self._disk_full:
            return f"the kernel was stopped for writing more than {self.sandbox_disk_mb} MiB"
        return None

    def _run_trusted_setup(self, info: dict) -> None:
        """Run the assignment's setup cells (locked, ungraded code) from the gradebook in the judge."""
        with Gradebook(info["db_url"]) as gb:
            notebook = gb.find_notebook(info["notebook"], info["assignment"])
            graded = {c.name for c in notebook.grade_cells} | {c.name for c in notebook.solution_cells}
            setup = [c.source for c in notebook.source_cells
                     if c.cell_type == "code" and c.locked and c.name not in graded]
        for source in setup:
            outputs = self._judge.run_cell(source, deadline=float("inf"))
            errors = [o for o in outputs if o["output_type"] == "error"]
            if errors:
                raise RuntimeError(f"the assignment's setup cell failed in the judge: {errors[0]['evalue']}")

    def create_kernel_manager(self):
        if not self._sandboxed:
            return super().create_kernel_manager()
        if not self.kernel_name:
            self.kernel_name = self.nb.metadata.get("kernelspec", {}).get("name") or "python3"
        self.km = sandbox.SandboxedKernelManager(
            kernel_name=self.kernel_name, config=self.config, scratch=str(self._scratch),
            hidden_modules=self._hidden_modules,
            limits=dict(memory_mb=self.sandbox_memory_mb, file_size_mb=self.sandbox_file_size_mb,
                        cpu_seconds=self.sandbox_cpu_seconds, processes=self.sandbox_processes,
                        tmp_mb=self.sandbox_tmp_mb))
        return self.km

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if self._judge is None or not _is_test(cell) or self._stopped_because is not None:
            return super().preprocess_cell(cell, resources, index)
        # A test cell of a judged assignment: run here, never in the student's kernel.
        cell.outputs = []
        cell.execution_count = None
        try:
            outputs = self._judge.run_cell(cell.source, deadline=time.monotonic() + (self.timeout or 1e9))
        except StudentTimeout:
            self._stopped_because = f"cell {index} ran longer than the {self.timeout} s limit"
            self.log.error("Cell %d timed out after %s s; later cells are marked as not run", index, self.timeout)
            self._mark_not_run(cell, "CellTimeoutError", f"this cell ran longer than the {self.timeout} s limit")
            return cell, resources
        except StudentKernelDied:
            self._kernel_died(cell, index)
            return cell, resources
        cell.outputs = [from_dict(o) for o in outputs]
        return cell, resources

    def output(self, outs, msg, display_id, cell_index):
        """nbclient's output handling, with at most ``max_output_bytes`` kept per cell."""
        content = msg.get("content", {})
        size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
        used = self._output_used.get(cell_index, 0)
        self._output_used[cell_index] = used + size
        if used + size > self.max_output_bytes and msg.get("msg_type") != "error":
            if used <= self.max_output_bytes:  # the first output over the budget: say so, once
                outs.append(NotebookNode(output_type="stream", name="stdout",
                                         text=f"\n[output cut: this cell printed more than {self.max_output_bytes} "
                                              "bytes; the rest was dropped]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _kernel_alive(self) -> bool:
        return bool(run_sync(self.km.is_alive)())

    def _kernel_execute(self, code: str, deadline: float) -> None:
        run_sync(self._async_kernel_execute)(code, deadline)

    async def _async_kernel_execute(self, code: str, deadline: float) -> None:
        """Run code silently in the student's kernel and wait for its reply (not its outputs)."""
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StudentTimeout()
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=min(remaining, 0.5)))
            except queue.Empty:
                if not await ensure_async(self.km.is_alive()):
                    raise StudentKernelDied() from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return
