"""The build extension re-executes exactly the chapters that import course_lib when course_lib changes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("course_build", ROOT / "book" / "_ext" / "course_build.py")
course_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_build)


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def book(tmp_path, monkeypatch):
    _notebook(tmp_path / "uses.ipynb", "from course_lib.attention import causal_mask\nprint(causal_mask(2))")
    _notebook(tmp_path / "plain.ipynb", "print(1 + 1)")
    (tmp_path / "page.md").write_text("# A page that mentions course_lib in prose only\n")
    env = SimpleNamespace(found_docs={"uses", "plain", "page"},
                          doc2path=lambda d: tmp_path / (d + (".md" if d == "page" else ".ipynb")))
    app = SimpleNamespace(config=SimpleNamespace(nb_execution_cache_path=str(tmp_path / "cache")),
                          doctreedir=str(tmp_path / "doctrees"))
    fingerprint = {"value": "v1"}
    monkeypatch.setattr(course_build, "course_lib_fingerprint", lambda: fingerprint["value"])
    return app, env, fingerprint, tmp_path


def _build(app, env, added=(), changed=(), succeed=True):
    outdated = course_build.mark_chapters_outdated(app, env, set(added), set(changed), set())
    course_build.record_fingerprints(app, None if succeed else RuntimeError("build failed"))
    return outdated


def test_only_course_lib_chapters_rerun_and_only_after_a_change(book):
    app, env, fingerprint, _ = book
    assert _build(app, env, added=env.found_docs) == []  # first build reads everything anyway
    assert _build(app, env) == []  # nothing changed
    fingerprint["value"] = "v2"
    assert _build(app, env, succeed=False) == ["uses"]
    assert _build(app, env) == ["uses"]  # the failed build did not count
    assert _build(app, env) == []


def test_change_is_noticed_even_when_sphinx_starts_a_fresh_environment(book):
    app, env, fingerprint, tmp = book
    _build(app, env, added=env.found_docs)
    fingerprint["value"] = "v2"
    from jupyter_cache import get_cache

    cache = get_cache(str(tmp / "cache"))
    cache.cache_notebook_file(tmp / "uses.ipynb", check_validity=False)
    # A configuration change makes Sphinx treat every page as new: the stale execution must still go.
    assert _build(app, env, added=env.found_docs) == []
    assert cache.list_cache_records() == []


def test_cached_execution_is_dropped_for_that_chapter_only(book):
    from jupyter_cache import get_cache

    app, env, fingerprint, tmp = book
    _build(app, env, added=env.found_docs)
    cache = get_cache(str(tmp / "cache"))
    for name in ("uses", "plain"):
        cache.cache_notebook_file(tmp / f"{name}.ipynb", check_validity=False)
    fingerprint["value"] = "v2"
    _build(app, env)
    assert [Path(r.uri).name for r in cache.list_cache_records()] == ["plain.ipynb"]


def test_real_fingerprint_covers_course_lib_sources():
    assert len(course_build.course_lib_fingerprint()) == 64
