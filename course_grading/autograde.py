"""nbgrader's ``Autograde`` converter with the course's rules for finding submissions.

- A student id is any folder name: nbgrader reads ids as glob patterns, so ``ana[1]`` matched no
  folder and was never graded; here the folders found are used literally.
- A misnamed notebook is graded: when a student's folder has none of the assignment's notebooks
  but exactly one ``.ipynb`` file (``ch05_exercises (1).ipynb``), and the assignment has exactly
  one notebook, that file is graded as the assignment's notebook. The submitted file is not
  renamed; the graded copy in ``autograded/`` gets the right name.
- Grading refuses to start when the sandbox is unavailable (see :mod:`course_grading.sandbox`).
- ``nbgrader generate_feedback`` finds the same students (:class:`CourseGenerateFeedback`), and
  never copies a notebook into a feedback folder whose name has glob characters.

``nbgrader_config.py`` calls :func:`install`, which makes ``nbgrader autograde`` use this class, so
the instructor's commands stay nbgrader's own.
"""

from __future__ import annotations

import glob
import os

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde, GenerateFeedback, NbGraderException

from course_grading import sandbox

__all__ = ["CourseAutograde", "CourseGenerateFeedback", "install"]


class LiteralFolders:
    """nbgrader converters glob for notebooks inside the folders they found; escape those folders."""

    def init_notebooks(self) -> None:
        self.assignments = {}
        self.notebooks = []
        self._renamed: dict[str, str] = getattr(self, "_renamed", {})
        assignment_glob = self._format_source(self.coursedir.assignment_id, self.coursedir.student_id)
        for assignment in glob.glob(assignment_glob):
            # The folder found is literal: escape it before looking for notebooks inside it.
            found = glob.glob(os.path.join(glob.escape(assignment), self.coursedir.notebook_id + ".ipynb"))
            if not found:
                self.log.warning("No notebooks were matched in '%s'", assignment)
                continue
            self.assignments[assignment] = self._rename_misnamed(assignment, found)
        if not self.assignments:
            msg = "No notebooks were matched by '%s'" % assignment_glob
            self.log.error(msg)
            raise NbGraderException(msg)

    def _rename_misnamed(self, folder: str, found: list[str]) -> list[str]:
        return found


class CourseGenerateFeedback(LiteralFolders, GenerateFeedback):
    """nbgrader's ``GenerateFeedback`` that also finds students whose ids contain glob characters."""


class CourseAutograde(LiteralFolders, Autograde):
    def start(self) -> None:
        if not sandbox.no_sandbox_requested():
            try:
                sandbox.check_sandbox()
            except sandbox.SandboxUnavailable as problem:
                self.log.error("Refusing to grade: %s. To grade without a sandbox (student code then runs "
                               "with your rights), set COURSE_GRADING_NO_SANDBOX=1.", problem)
                raise NbGraderException(str(problem)) from None
        else:
            self.log.warning("COURSE_GRADING_NO_SANDBOX is set: student code runs WITHOUT a sandbox")
        super().start()

    def _expected_notebooks(self, assignment_id: str) -> list[str]:
        try:
            with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
                return [nb.name for nb in gb.find_assignment(assignment_id).notebooks]
        except MissingEntry:
            return []

    def _rename_misnamed(self, folder: str, found: list[str]) -> list[str]:
        assignment_id = os.path.basename(os.path.normpath(folder))
        expected = self._expected_notebooks(assignment_id)
        names = {os.path.splitext(os.path.basename(f))[0] for f in found}
        if len(expected) == 1 and len(found) == 1 and not names & set(expected):
            self.log.warning("%s: the only notebook is named '%s'; it is graded as %s.ipynb",
                             folder, os.path.basename(found[0]), expected[0])
            self._renamed[os.path.abspath(found[0])] = expected[0]
        return found

    def init_single_notebook_resources(self, notebook_filename: str):
        resources = super().init_single_notebook_resources(notebook_filename)
        expected = self._renamed.get(os.path.abspath(notebook_filename))
        if expected is not None:
            resources["unique_key"] = expected
            resources["nbgrader"]["notebook"] = expected
        return resources

    def init_assignment(self, assignment_id: str, student_id: str) -> None:
        # nbgrader drops notebooks whose name is not in the gradebook; keep the renamed ones.
        renamed = [n for n in self.notebooks if os.path.abspath(n) in self._renamed]
        super_notebooks = [n for n in self.notebooks if n not in renamed]
        if renamed and not super_notebooks:
            self.notebooks = renamed
            self._init_renamed(assignment_id, student_id)
            return
        super().init_assignment(assignment_id, student_id)

    def _init_renamed(self, assignment_id: str, student_id: str) -> None:
        keep = self.notebooks
        # Let nbgrader do its usual set-up (student, submission, timestamp, files) with a stand-in list.
        expected = self._renamed[os.path.abspath(keep[0])]
        self.notebooks = [os.path.join(os.path.dirname(keep[0]), expected + ".ipynb")]
        try:
            super().init_assignment(assignment_id, student_id)
        finally:
            self.notebooks = keep

    def convert_single_notebook(self, notebook_filename: str) -> None:
        expected = self._renamed.get(os.path.abspath(notebook_filename))
        if expected is None:
            return super().convert_single_notebook(notebook_filename)
        # As Autograde.convert_single_notebook, with the graded copy under the expected name.
        from nbgrader import utils
        from nbgrader.converters.base import BaseConverter

        self.log.info("Sanitizing %s (graded as %s.ipynb)", notebook_filename, expected)
        self._sanitizing = True
        self._init_preprocessors()
        BaseConverter.convert_single_notebook(self, notebook_filename)
        graded_copy = os.path.join(self.writer.build_directory, expected + ".ipynb")
        self.log.info("Autograding %s", graded_copy)
        self._sanitizing = False
        self._init_preprocessors()
        try:
            with utils.setenv(NBGRADER_EXECUTION="autograde"):
                BaseConverter.convert_single_notebook(self, graded_copy)
        finally:
            self._sanitizing = True


def _is_ignored(filename: str, ignore_globs: list[str] | None = None) -> bool:
    """nbgrader's ``utils.is_ignored`` with the folder escaped: in ``feedback/ana[1]/`` the pattern
    ``*.ipynb`` matched nothing, and the autograded notebook, hidden tests included, was copied into
    the student's feedback."""
    if ignore_globs is None:
        return False
    folder = glob.escape(os.path.dirname(filename))
    return any(filename in glob.glob(os.path.join(folder, expr)) for expr in ignore_globs)


def install() -> None:
    """Make ``nbgrader autograde`` and ``generate_feedback`` (and the formgrader) use the classes above.

    Called from nbgrader_config.py, which nbgrader loads before it starts a command.
    """
    from nbgrader import utils
    from nbgrader.apps import api, autogradeapp, generatefeedbackapp

    utils.is_ignored = _is_ignored

    autogradeapp.Autograde = CourseAutograde
    generatefeedbackapp.GenerateFeedback = CourseGenerateFeedback
    # The formgrader's buttons go through nbgrader's API module.
    if getattr(api, "Autograde", None) is Autograde:
        api.Autograde = CourseAutograde
    if getattr(api, "GenerateFeedback", None) is GenerateFeedback:
        api.GenerateFeedback = CourseGenerateFeedback
