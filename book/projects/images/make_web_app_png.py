"""Take ``web_app.png``, the screenshot on the page "Serve your model as a web app" (book/projects/web_app.md).

Serves a trained app model on a free port, opens the page in headless Chromium (driven over the
DevTools protocol by the same small client as ``tests/test_webapp.py``), types a prompt, generates
240 characters with seed 7 and saves the window, 1000 x 760 pixels. It also prints what
``POST /api/generate`` answers for the page's ``curl`` example. Run from the repository root::

    python -m course_lib.webapp train --out /tmp/app-model --steps 300 --precision fp32
    python book/projects/images/make_web_app_png.py /tmp/app-model book/projects/images/web_app.png

Needs Chromium (``apt-get install chromium``) and the extra ``app`` (``pip install -e ".[app]"``).
The committed picture shows a model trained for 300 steps (validation loss 2.12).
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from test_webapp import DevTools  # noqa: E402  (the test file's stdlib-only Chromium client)

from course_lib.webapp import AppServer, GenerationLimits, create_app, load_app_model  # noqa: E402


def main(model_dir: Path, out: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    server = AppServer(create_app(load_app_model(model_dir), GenerationLimits()), port=0).start()
    try:
        body = json.dumps({"prompt": "ROMEO:", "seed": 1, "max_new_tokens": 40}).encode()
        request = urllib.request.Request(server.url + "/api/generate", data=body,
                                         headers={"Content-Type": "application/json"})
        print("POST /api/generate answered:\n" + urllib.request.urlopen(request).read().decode())
        browser = DevTools(chromium, Path(tempfile.mkdtemp()) / "profile")
        try:
            browser.attach_to_page()
            browser.send("Emulation.setDeviceMetricsOverride", width=1000, height=760, deviceScaleFactor=1,
                         mobile=False)
            browser.send("Page.enable")
            browser.send("Page.navigate", url=server.url + "/")
            browser.wait_for("document.body && document.body.dataset.state === 'idle'")
            browser.wait_for("document.getElementById('model-info').textContent.includes('parameters')")
            browser.evaluate("(() => { const p = document.getElementById('prompt'); p.focus(); p.select(); })()")
            browser.send("Input.insertText", text="JULIET:\nO Romeo, ")
            browser.evaluate("(() => { document.getElementById('seed').value = '7'; "
                             "document.getElementById('max_new_tokens').value = '240'; })()")
            browser.click("#generate")
            browser.wait_for("document.body.dataset.state === 'done'", timeout=60)
            browser.evaluate("window.scrollTo(0, 0)")
            time.sleep(0.3)
            out.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"]))
            print("status line:", browser.evaluate("document.getElementById('status').textContent"))
        finally:
            browser.close()
    finally:
        server.stop()
    print(f"saved {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
