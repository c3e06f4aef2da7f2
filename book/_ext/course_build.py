"""Sphinx extension that makes the course website build offline and stay correct when course_lib changes.

Two jobs, both run by a plain ``jupyter-book build .``:

1. **Self-hosted web assets.** MathJax, RequireJS and the Jupyter-widgets embed manager are
   installed from the npm registry (versions pinned in ``book/assets/package-lock.json``) and
   copied into ``book/_static/vendor``, which ``_config.yml`` points MathJax and myst-nb at.
   No page loads anything from a CDN, and no third-party file is committed.
2. **course_lib-aware execution cache.** Jupyter Book re-executes a notebook only when its own
   code changes. Chapters import course_lib, so this extension fingerprints course_lib's source
   and, when it changes, marks every chapter that imports it as outdated and drops its cached
   execution: those chapters run again, the others are reused.
3. **Notebooks executed side by side.** Jupyter Book executes the notebooks one after another,
   each on one core (every chapter asks PyTorch for one thread). Before Sphinx reads them, this
   extension executes the ones without a cached run in a pool of one process per core
   (``COURSE_BUILD_JOBS`` overrides it; 1 turns this off), straight into the execution cache;
   Jupyter Book then finds them there. A notebook that fails in the pool is not cached, so Jupyter
   Book runs it again itself and reports the error as usual: the build fails just the same.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from fnmatch import fnmatch
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
VENDOR_DIR = Path(__file__).resolve().parents[1] / "_static" / "vendor"
REPO_ROOT = Path(__file__).resolve().parents[2]
COURSE_LIB = REPO_ROOT / "course_lib"

# (source under node_modules, destination under vendor/). MathJax ships many optional parts;
# these are the ones tex-chtml.js loads (fonts, TeX extensions, the menu and accessibility).
VENDOR_FILES = [
    ("requirejs/require.js", "require.js"),
    ("@jupyter-widgets/html-manager/dist", "html-manager"),
    ("mathjax/es5/tex-chtml.js", "mathjax/tex-chtml.js"),
    ("mathjax/es5/input/tex/extensions", "mathjax/input/tex/extensions"),
    ("mathjax/es5/output/chtml/fonts/woff-v2", "mathjax/output/chtml/fonts/woff-v2"),
    ("mathjax/es5/ui", "mathjax/ui"),
    ("mathjax/es5/a11y", "mathjax/a11y"),
    ("mathjax/LICENSE", "mathjax/LICENSE"),
]


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(REPO_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def install_vendor_assets(app: Sphinx) -> None:
    """Install the pinned npm packages (if needed) and copy the browser files into _static/vendor."""
    lock = ASSETS_DIR / "package-lock.json"
    wanted = _digest([lock, Path(__file__)])
    stamp = VENDOR_DIR / ".stamp"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ExtensionError(
            "npm was not found: the website serves MathJax and the widget manager itself and "
            "installs them from the npm registry. Install Node.js and npm (Debian: apt-get install nodejs npm)."
        )
    logger.info("course_build: installing web assets from the npm registry (npm ci)")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=ASSETS_DIR, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ExtensionError(f"npm ci failed in {ASSETS_DIR}:\n{result.stdout}\n{result.stderr}")
    if VENDOR_DIR.exists():
        shutil.rmtree(VENDOR_DIR)
    for src, dst in VENDOR_FILES:
        source, target = ASSETS_DIR / "node_modules" / src, VENDOR_DIR / dst
        if not source.exists():
            raise ExtensionError(f"expected {source} after npm ci; has the package layout changed?")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    stamp.write_text(wanted)


def course_lib_fingerprint() -> str:
    return _digest([p for p in COURSE_LIB.rglob("*.py") if "__pycache__" not in p.parts])


def _uses_course_lib(path: Path) -> bool:
    if path.suffix != ".ipynb":
        return False
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return any(c.get("cell_type") == "code" and "course_lib" in "".join(c.get("source", "")) for c in cells)


def _fingerprint_file(app: Sphinx) -> Path:
    # Kept beside the execution cache it describes (the Sphinx environment is rebuilt from
    # scratch whenever the configuration changes, so it cannot hold this).
    return Path(app.config.nb_execution_cache_path or app.doctreedir) / "course_lib_fingerprints.json"


def mark_chapters_outdated(app: Sphinx, env, added, changed, removed) -> list[str]:
    """Re-execute chapters that import course_lib when course_lib changed since their last run."""
    fingerprint = course_lib_fingerprint()
    state = _fingerprint_file(app)
    previous = json.loads(state.read_text()) if state.exists() else {}
    users = sorted(d for d in env.found_docs if _uses_course_lib(Path(env.doc2path(d))))
    rerun = [d for d in users if previous.get(d) != fingerprint]
    for docname in rerun:
        _drop_cached_execution(app, Path(env.doc2path(docname)))
    # Written when the build succeeds (record_fingerprints), so a failed build retries.
    app.course_lib_fingerprints = {d: fingerprint for d in users}
    outdated = [d for d in rerun if d not in added and d not in changed]
    if rerun:
        logger.info(f"course_build: course_lib changed; re-executing {', '.join(rerun)}")
    return outdated


def record_fingerprints(app: Sphinx, exception: Exception | None) -> None:
    fingerprints = getattr(app, "course_lib_fingerprints", None)
    if exception is None and fingerprints is not None:
        state = _fingerprint_file(app)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(fingerprints, indent=1, sort_keys=True))


def _drop_cached_execution(app: Sphinx, notebook: Path) -> None:
    cache_path = getattr(app.config, "nb_execution_cache_path", "")
    if not cache_path or not Path(cache_path).exists():
        return
    from jupyter_cache import get_cache

    cache = get_cache(cache_path)
    for record in cache.list_cache_records():
        if Path(record.uri).resolve() == notebook.resolve():
            cache.remove_cache(record.pk)


def _build_jobs() -> int:
    value = os.environ.get("COURSE_BUILD_JOBS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ExtensionError(f"COURSE_BUILD_JOBS must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def execute_side_by_side(app: Sphinx, env, docnames: list[str]) -> None:
    """Execute the notebooks about to be read that have no cached run, several at a time, into the cache."""
    cache_path = getattr(app.config, "nb_execution_cache_path", "")
    jobs = _build_jobs()
    if getattr(app.config, "nb_execution_mode", "") != "cache" or not cache_path or jobs < 2:
        return
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.executors.basic import ExecutionWorkerLocalMProc, ProcessData

    excluded = list(getattr(app.config, "nb_execution_excludepatterns", []) or [])
    cache = get_cache(cache_path)
    todo = []
    for docname in docnames:
        path = Path(env.doc2path(docname))
        relative = path.relative_to(Path(app.srcdir)).as_posix()
        if path.suffix != ".ipynb" or any(fnmatch(relative, pattern) for pattern in excluded):
            continue
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(path)
    if len(todo) < 2:
        return
    records = [cache.add_nb_to_project(str(path)) for path in todo]
    timeout = int(getattr(app.config, "nb_execution_timeout", 300) or 300)
    work = [ProcessData(r.pk, r.uri, cache, timeout, False) for r in records]
    logger.info(f"course_build: executing {len(work)} notebooks, {min(jobs, len(work))} at a time")
    start = time.perf_counter()
    failed = []
    with multiprocessing.get_context("fork").Pool(min(jobs, len(work))) as pool:
        for status, uri in pool.imap_unordered(ExecutionWorkerLocalMProc(), work, chunksize=1):
            if status != 0:
                failed.append(Path(uri).name)
    logger.info(f"course_build: executed in {time.perf_counter() - start:.0f} s"
                + (f"; {', '.join(failed)} failed and will run again to report the error" if failed else ""))


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", install_vendor_assets)
    app.connect("env-get-outdated", mark_chapters_outdated)
    app.connect("env-before-read-docs", execute_side_by_side)
    app.connect("build-finished", record_fingerprints)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
