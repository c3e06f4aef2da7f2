"""Instructor side: nbgrader preprocessors that keep every submission in a batch gradable.

Stock nbgrader 0.9 gives up on a whole submission (score 0, autograded copy removed) when a
student duplicated a graded cell, deleted a test cell in an unlucky place, wrote a loop that
ignores interrupts, or crashed their kernel. ``nbgrader_config.py`` swaps in the classes below,
which apply these rules instead (the instructor guide states them for students):

1. Test cells are always the instructor's: edited test cells are overwritten and deleted ones
   are put back (stock ``OverwriteCells``, plus :class:`RestoreMissingCells`).
2. If a graded cell appears more than once, the *first* copy keeps its grade id and the later
   copies become ordinary, ungraded cells that still run (:class:`KeepFirstCellIds`).
3. A cell that runs past the per-cell time limit, or a kernel that dies, ends the run: that cell
   and every later cell get an error output, so tests after it score 0 and tests before it keep
   their points (:class:`StopAtHangOrCrash`).

Nothing here touches ``submitted/``: nbgrader reads it and writes the graded copy to ``autograded/``.
"""

from __future__ import annotations

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells

__all__ = ["KeepFirstCellIds", "RestoreMissingCells", "StopAtHangOrCrash"]


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
            self._stopped_because = f"the kernel died while running cell {index}"
            self.log.error("The kernel died in cell %d; later cells are marked as not run", index)
            self._mark_not_run(cell, "DeadKernelError", "the kernel died while running this cell")
        return cell, resources

    @staticmethod
    def _mark_not_run(cell: NotebookNode, ename: str, evalue: str) -> None:
        cell.outputs.append(NotebookNode(
            output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"],
        ))
