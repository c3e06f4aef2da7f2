"""The website: self-contained, renders math and widgets in a real browser, and leaks no solutions."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import BUILD_HTML, EXERCISES, ROOT, SOLUTIONS

pytestmark = pytest.mark.usefixtures("built_site")


class _Resources(HTMLParser):
    """Collects the URLs of scripts and stylesheets a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href") and set((attrs.get("rel") or "").split()) & {
            "stylesheet", "preload", "modulepreload", "prefetch"
        }:
            self.urls.append(attrs["href"])


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


def test_pages_load_no_script_or_stylesheet_from_another_host():
    pages = sorted(BUILD_HTML.rglob("*.html"))
    assert len(pages) >= 4
    remote = {}
    for page in pages:
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        found = [u for u in parser.urls if _is_remote(u)]
        if found:
            remote[str(page.relative_to(BUILD_HTML))] = found
    assert not remote, f"pages load resources from other hosts: {remote}"


def test_local_assets_exist():
    chapter = (BUILD_HTML / "book" / "ch05_attention.html").read_text(encoding="utf-8")
    for name in ("vendor/mathjax/tex-chtml.js", "vendor/require.js", "vendor/html-manager/embed-amd.js"):
        assert name in chapter, f"{name} is not loaded by the chapter page"
        assert (BUILD_HTML / "_static" / name).is_file(), f"_static/{name} missing from the site"


@pytest.fixture(scope="module")
def served_site():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(BUILD_HTML))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _rendered_dom(url: str, tmp_path: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for this test: apt-get install chromium (.ci/run installs it)"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Any request to another host fails, so the page can only render from the site itself.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_chapter_shows_typeset_math_and_a_rendered_widget(served_site, tmp_path):
    dom = _rendered_dom(f"{served_site}/book/ch05_attention.html", tmp_path)
    assert "<mjx-container" in dom, "MathJax did not typeset the chapter's math"
    assert "widget-dropdown" in dom or "widget-slider" in dom, "no ipywidgets control was rendered"
    assert "jupyter-widgets" in dom


def _notebook_text(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"])


def _solution_only_lines() -> set[str]:
    """Distinctive lines of solution code and hidden tests: in solutions/, in no release and no chapter.

    A line a chapter or a released exercise also shows (an import, a formula the chapter derives)
    is public course text.
    """
    lines: set[str] = set()
    public = [*(ROOT / "book").glob("*.ipynb"), *EXERCISES.rglob("*.ipynb")]
    released = "\n".join(_notebook_text(p) for p in public)
    for source in SOLUTIONS.rglob("*.ipynb"):
        for cell in json.loads(source.read_text(encoding="utf-8"))["cells"]:
            inside = False
            for line in "".join(cell["source"]).splitlines():
                marker = line.strip()
                if marker in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                    inside = True
                elif marker in ("### END SOLUTION", "### END HIDDEN TESTS"):
                    inside = False
                elif inside and len(marker) >= 20 and marker not in released:
                    lines.add(marker)
    return lines


def test_build_contains_no_solutions_or_hidden_tests():
    secrets = _solution_only_lines()
    assert secrets, "found no solution lines to look for: has solutions/ moved?"
    markers = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
    leaks = []
    for path in (ROOT / "_build").rglob("*"):
        if not path.is_file() or path.suffix in (".png", ".woff", ".woff2", ".ttf", ".eot", ".db"):
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        # Notebooks store source as JSON strings; decode escapes so lines compare as written.
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c.get("source", "")) for c in json.loads(text).get("cells", []))
        leaks += [f"{path}: {m}" for m in markers if m in text]
        leaks += [f"{path}: {line}" for line in secrets if line in text]
    assert not leaks, "solution text reached _build/:\n" + "\n".join(leaks[:20])
