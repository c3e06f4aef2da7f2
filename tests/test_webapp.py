"""The web app (course_lib.webapp): validation, streaming, seeds, concurrency, limits, shutdown, a real browser.

The served model is a tiny randomly initialised GPT over a fixed alphabet, so the file needs no
training and no data except the one test that trains two steps on Tiny Shakespeare.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

pytest.importorskip("flask", reason="the web app needs the extra 'app': pip install -e '.[app]'")
pytest.importorskip("waitress", reason="the web app needs the extra 'app': pip install -e '.[app]'")

from conftest import ROOT  # noqa: E402
from course_lib.generation import generate  # noqa: E402
from course_lib.gpt import GPT, GPTConfig  # noqa: E402
from course_lib.tokenizers import CharTokenizer  # noqa: E402
from course_lib.webapp import (  # noqa: E402
    AppModel, AppServer, GenerationLimits, create_app, load_app_model, main, train_app_model,
)

ALPHABET = string.ascii_letters + " \n.,;:!?'-"
LIMITS = GenerationLimits(max_prompt_chars=200, max_new_tokens=300, max_seconds=10.0, max_temperature=2.0,
                          max_concurrent=8)


class SlowGPT(GPT):
    """A GPT that waits ``delay`` seconds per forward pass: makes streaming and time limits observable."""

    delay = 0.02

    def forward(self, idx, cache=None):
        time.sleep(self.delay)
        return super().forward(idx, cache)


def tiny_model(cls: type[GPT] = GPT) -> AppModel:
    tokenizer = CharTokenizer(ALPHABET)
    torch.manual_seed(0)
    model = cls(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=32, d_model=32, n_layers=2, n_heads=2))
    return AppModel(model.eval(), tokenizer, {"steps": 0})


@contextmanager
def serving(app_model: AppModel, limits: GenerationLimits = LIMITS) -> Iterator[AppServer]:
    server = AppServer(create_app(app_model, limits), port=0).start()
    try:
        yield server
    finally:
        server.stop(grace=5)


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """AppServer sets PyTorch to one thread per operation for the whole process; later test files get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> AppModel:
    return tiny_model()


@pytest.fixture(scope="module")
def server(model) -> Iterator[AppServer]:
    with serving(model) as running:
        yield running


@pytest.fixture(scope="module")
def client(model):
    return create_app(model, LIMITS).test_client()


def _connection(url: str, timeout: float = 30) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def get_json(url: str, path: str) -> tuple[int, Any]:
    conn = _connection(url)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def open_stream(url: str, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = _connection(url)
    conn.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def stream(url: str, body: dict) -> tuple[list[dict], list[float]]:
    """The events of one generation and the time each arrived, read line by line as the server sends them."""
    start = time.perf_counter()
    conn, response = open_stream(url, body)
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type") == "application/x-ndjson"
    events, times = [], []
    for line in response:
        events.append(json.loads(line))
        times.append(time.perf_counter() - start)
    conn.close()
    return events, times


def generated_text(events: list[dict]) -> str:
    return "".join(e["token"] for e in events if "token" in e)


def expected_text(app_model: AppModel, prompt: str, seed: int, n: int, **sampling) -> str:
    """What chapter 7's generate() returns for the same prompt, seed and settings, in one call."""
    ids = torch.tensor([app_model.tokenizer.encode(prompt)])
    generator = torch.Generator().manual_seed(seed)
    out = generate(app_model.model, ids, n, app_model.config.context_length, generator=generator, **sampling)
    return app_model.tokenizer.decode(out[0, ids.shape[1]:].tolist())


# ---------------------------------------------------------------------------------------------
# Bad input: 4xx with the problem named
# ---------------------------------------------------------------------------------------------

VOCAB = len(ALPHABET)


@pytest.mark.parametrize("body, field, says", [
    ([1, 2], None, "must be a JSON object"),
    ({"prompt": "Hi", "temprature": 1}, "temprature", "unknown field"),
    ({}, "prompt", "prompt is required"),
    ({"prompt": 42}, "prompt", "must be a string"),
    ({"prompt": ""}, "prompt", "must not be empty"),
    ({"prompt": "a" * 201}, "prompt", "201 characters; at most 200"),
    ({"prompt": "café 😀"}, "prompt", "'é' (U+00E9) at position 3, '😀' (U+1F600) at position 5"),
    ({"prompt": "Hi", "temperature": 0}, "temperature", "must be > 0 and <= 2.0, got 0"),
    ({"prompt": "Hi", "temperature": -1}, "temperature", "must be > 0"),
    ({"prompt": "Hi", "temperature": 2.5}, "temperature", "got 2.5"),
    ({"prompt": "Hi", "temperature": "hot"}, "temperature", "must be a number"),
    ({"prompt": "Hi", "temperature": True}, "temperature", "must be a number, got true"),
    ({"prompt": "Hi", "top_k": 0}, "top_k", f"between 1 and the vocabulary size {VOCAB}, got 0"),
    ({"prompt": "Hi", "top_k": VOCAB + 1}, "top_k", f"got {VOCAB + 1}"),
    ({"prompt": "Hi", "top_k": 2.5}, "top_k", "must be an integer"),
    ({"prompt": "Hi", "top_p": 0}, "top_p", "must be > 0 and <= 1"),
    ({"prompt": "Hi", "top_p": 1.01}, "top_p", "got 1.01"),
    ({"prompt": "Hi", "max_new_tokens": 0}, "max_new_tokens", "between 1 and 300, got 0"),
    ({"prompt": "Hi", "max_new_tokens": 301}, "max_new_tokens", "got 301"),
    ({"prompt": "Hi", "max_new_tokens": "10"}, "max_new_tokens", "must be an integer"),
    ({"prompt": "Hi", "seed": -1}, "seed", "between 0 and 2**63 - 1"),
    ({"prompt": "Hi", "seed": 2**63}, "seed", "between 0 and 2**63 - 1"),
])
def test_each_invalid_field_is_a_400_naming_it(client, body, field, says):
    response = client.post("/api/generate", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["field"] == field
    assert says in response.json["error"]


def test_a_non_finite_number_is_refused(client):
    response = client.post("/api/generate", data='{"prompt": "Hi", "temperature": NaN}',
                           content_type="application/json")
    assert response.status_code == 400
    assert response.json == {"error": "temperature must be a finite number, got nan", "field": "temperature"}


@pytest.mark.parametrize("kwargs, status, says", [
    ({"data": "prompt=Hi"}, 415, "send the request as JSON"),
    ({"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ({"data": json.dumps({"prompt": "a" * 100_000}), "content_type": "application/json"}, 413, "larger than"),
])
def test_bodies_that_are_not_json_or_too_large(client, kwargs, status, says):
    response = client.post("/api/generate", **kwargs)
    assert response.status_code == status
    assert says in response.json["error"]


def test_other_http_errors_are_json_too(client):
    assert client.get("/api/generate").status_code == 405
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.json
    assert client.get("/static/../webapp.py").status_code == 404  # no file outside the static folder


def test_page_health_and_model_description(client, model):
    page = client.get("/")
    assert page.status_code == 200 and b'id="generate"' in page.data
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    for text in (page.data, client.get("/static/app.js").data, client.get("/static/app.css").data):
        assert b"http://" not in text and b"https://" not in text and b'="//' not in text  # works offline
    assert client.get("/health").json == {"status": "ok", "active_generations": 0, "max_concurrent": 8}
    info = client.get("/api/model").json
    assert info["vocab_size"] == VOCAB and info["context_length"] == 32
    assert info["parameters"] == model.model.num_parameters()
    assert info["limits"]["max_new_tokens"] == 300


# ---------------------------------------------------------------------------------------------
# Generation over HTTP
# ---------------------------------------------------------------------------------------------


def test_a_request_streams_exactly_what_generate_returns(server, model):
    body = {"prompt": "To be, or not", "temperature": 0.9, "top_k": 20, "top_p": 0.95, "max_new_tokens": 120,
            "seed": 7}
    events, _ = stream(server.url, body)
    assert events[0] == {"seed": 7, "prompt_tokens": len(body["prompt"])}
    assert events[-1]["done"] is True and events[-1]["reason"] == "max_new_tokens" and events[-1]["tokens"] == 120
    assert all(len(e["token"]) == 1 for e in events[1:-1])  # one character per token
    expected = expected_text(model, body["prompt"], 7, 120, temperature=0.9, top_k=20, top_p=0.95)
    assert generated_text(events) == expected


def test_a_prompt_longer_than_the_context_is_cropped_as_generate_crops_it(server, model):
    prompt = "Now is the winter of our discontent made glorious summer"  # 56 characters, context 32
    events, _ = stream(server.url, {"prompt": prompt, "max_new_tokens": 40, "seed": 3, "top_p": None})
    assert generated_text(events) == expected_text(model, prompt, 3, 40, temperature=0.8)


def test_the_same_seed_gives_the_same_text_and_no_seed_reports_the_one_used(server):
    body = {"prompt": "ROMEO:\n", "temperature": 1.0, "max_new_tokens": 80}
    first, _ = stream(server.url, {**body, "seed": 123})
    again, _ = stream(server.url, {**body, "seed": 123})
    other, _ = stream(server.url, {**body, "seed": 124})
    assert generated_text(first) == generated_text(again)
    assert generated_text(first) != generated_text(other)
    unseeded, _ = stream(server.url, body)
    replay, _ = stream(server.url, {**body, "seed": unseeded[0]["seed"]})
    assert generated_text(unseeded) == generated_text(replay)


def test_tokens_arrive_one_by_one_not_at_the_end():
    with serving(tiny_model(SlowGPT)) as slow:  # 20 ms per token
        events, times = stream(slow.url, {"prompt": "Hi", "max_new_tokens": 25, "seed": 0})
    assert len(events) == 27
    first_token, done = times[1], times[-1]
    assert done > 0.4 and first_token < done / 2, f"first token at {first_token:.2f} s, last at {done:.2f} s"


def test_eight_concurrent_requests_each_get_their_own_text(server, model):
    bodies = [{"prompt": f"Speaker {string.ascii_uppercase[s]}:\n", "temperature": 1.0, "top_k": 30,
               "max_new_tokens": 150, "seed": s} for s in range(8)]
    alone = [generated_text(stream(server.url, body)[0]) for body in bodies]
    together: list[Any] = [None] * 8
    spans: list[Any] = [None] * 8
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        together[i] = stream(server.url, bodies[i])[0]
        spans[i] = (start, time.perf_counter())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [generated_text(events) for events in together] == alone
    assert alone[0] == expected_text(model, bodies[0]["prompt"], 0, 150, temperature=1.0, top_k=30, top_p=0.9)
    assert len(set(alone)) == 8
    assert max(start for start, _ in spans) < min(end for _, end in spans), "the requests did not overlap"
    assert get_json(server.url, "/health") == (200, {"status": "ok", "active_generations": 0, "max_concurrent": 8})


def test_generation_stops_at_the_token_bound(server):
    events, _ = stream(server.url, {"prompt": "Hi", "max_new_tokens": 5, "seed": 1})
    assert len(generated_text(events)) == 5
    assert events[-1] | {"seconds": 0} == {"done": True, "reason": "max_new_tokens", "tokens": 5, "seconds": 0}


def test_a_server_allowing_fewer_tokens_lowers_the_default_too(model):
    client = create_app(model, GenerationLimits(max_new_tokens=50)).test_client()
    assert client.get("/api/model").json["defaults"]["max_new_tokens"] == 50
    lines = client.post("/api/generate", json={"prompt": "Hi"}).get_data(as_text=True).splitlines()
    assert json.loads(lines[-1])["tokens"] == 50


def test_generation_stops_at_the_time_bound():
    limits = GenerationLimits(max_new_tokens=1000, max_seconds=0.3)
    with serving(tiny_model(SlowGPT), limits) as slow:  # 20 ms per token: 1000 tokens would take 20 s
        start = time.perf_counter()
        events, _ = stream(slow.url, {"prompt": "Hi", "max_new_tokens": 1000, "seed": 1})
        elapsed = time.perf_counter() - start
    done = events[-1]
    # At least 20 ms per token: at most 15 tokens fit into 0.3 s; the token under way when time runs out finishes.
    assert done["reason"] == "time_limit" and 1 <= done["tokens"] <= 16, done
    assert 0.3 <= done["seconds"] < 1.0 and elapsed < 3
    assert len(generated_text(events)) == done["tokens"]


def test_a_full_server_answers_503_and_a_client_that_leaves_frees_its_slot():
    limits = GenerationLimits(max_new_tokens=1000, max_concurrent=1)
    with serving(tiny_model(SlowGPT), limits) as slow:
        conn, response = open_stream(slow.url, {"prompt": "Hi", "max_new_tokens": 1000})
        assert json.loads(response.readline())["seed"] >= 0
        assert get_json(slow.url, "/health")[1]["active_generations"] == 1
        busy_conn, busy = open_stream(slow.url, {"prompt": "Hi"})
        assert busy.status == 503 and busy.getheader("Retry-After") == "1"
        assert "busy" in json.loads(busy.read())["error"]
        busy_conn.close()
        response.close()  # the client leaves (the Stop button): the generation ends at its next token
        conn.close()
        deadline = time.monotonic() + 5
        while get_json(slow.url, "/health")[1]["active_generations"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get_json(slow.url, "/health")[1]["active_generations"] == 0
        events, _ = stream(slow.url, {"prompt": "Hi", "max_new_tokens": 3})  # and the slot is free again
        assert events[-1]["tokens"] == 3


def test_stopping_the_server_ends_running_generations_cleanly():
    server = AppServer(create_app(tiny_model(SlowGPT), GenerationLimits(max_new_tokens=1000)), port=0).start()
    conn, response = open_stream(server.url, {"prompt": "Hi", "max_new_tokens": 1000})
    response.readline()
    start = time.perf_counter()
    server.stop(grace=5)
    assert time.perf_counter() - start < 3
    lines = [json.loads(line) for line in response]
    assert lines[-1]["reason"] == "shutdown" and lines[-1]["tokens"] < 1000
    conn.close()
    with pytest.raises(OSError):  # nothing listens any more
        get_json(server.url, "/health")


# ---------------------------------------------------------------------------------------------
# The checkpoint and the command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two steps of the real training command's function on Tiny Shakespeare, in a miniature model."""
    out = tmp_path_factory.mktemp("app-model")
    train_app_model(out, steps=2, batch=4, context=16, d_model=16, n_layers=1, n_heads=1, precision="fp32",
                    progress=False)
    return out


def test_a_trained_model_saves_and_loads_exactly(trained):
    meta = json.loads((trained / "model.json").read_text())
    assert meta["gpt_config"]["context_length"] == 16 and meta["training"]["steps"] == 2
    loaded = load_app_model(trained)
    assert loaded.tokenizer.vocab_size == 65 and loaded.model.training is False
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2  # chapter 7's Trainer checkpoint: training can be continued from it
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state["model"].items())


def test_a_damaged_model_folder_is_named_not_a_traceback(trained, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="is damaged or from another version"):
        load_app_model(broken)
    (broken / "model.json").write_text("[]")
    with pytest.raises(ValueError, match="is not an app model description"):
        load_app_model(broken)


def test_serving_without_a_model_says_how_to_train_one(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no trained app model in" in err and "python -m course_lib.webapp train --out" in err
    assert main(["serve", "--checkpoint", str(tmp_path / "none"), "--max-seconds", "0"]) == 2
    assert "max_seconds must be positive, got 0.0" in capsys.readouterr().err


def test_serve_with_train_if_missing_trains_into_the_checkpoint_folder_first(tmp_path, monkeypatch):
    class Trained(Exception):
        pass

    def fake_training(out):
        raise Trained(out)

    monkeypatch.setattr("course_lib.webapp.train_app_model", fake_training)
    with pytest.raises(Trained, match=str(tmp_path / "new")):
        main(["serve", "--checkpoint", str(tmp_path / "new"), "--train-if-missing"])


def _python_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_importing_the_module_does_not_need_flask():
    code = ("import sys, course_lib, course_lib.webapp; "
            "assert 'flask' not in sys.modules and 'waitress' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], env=_python_env(), timeout=60).returncode == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command_serves_and_stops_on_sigterm(trained):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "course_lib.webapp", "serve", "--checkpoint", str(trained),
                             "--port", str(port)], env=_python_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()
        assert f"on http://127.0.0.1:{port}" in banner, banner
        events, _ = stream(f"http://127.0.0.1:{port}", {"prompt": "ROMEO:", "max_new_tokens": 10, "seed": 0})
        assert len(generated_text(events)) == 10
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "Stopped." in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------


def _move_above(fd: int, lowest: int) -> int:
    """``fd`` duplicated onto the first free descriptor >= ``lowest``; the original is closed."""
    import fcntl  # POSIX only, like the browser test itself

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): stdlib only.

    Chromium reads commands from its file descriptor 3 and writes answers to 4, each a JSON
    message ended by a NUL byte.
    """

    def __init__(self, chromium: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium's ends move to descriptors >= 10, so that putting them on 3 and 4 overwrites neither.
        to_browser_r, from_browser_w = (_move_above(fd, 10) for fd in (to_browser_r, from_browser_w))
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}",
                # Any request to another host fails: the page must work from this server alone (offline).
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"]
        # A small Python step puts Chromium's ends on descriptors 3 and 4, closes the originals, becomes Chromium.
        onto_3_and_4 = ("import os, sys; r, w = map(int, sys.argv[1:3]); os.dup2(r, 3); os.dup2(w, 4); "
                        "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", onto_3_and_4, str(to_browser_r), str(from_browser_w), chromium, *args],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.session = b"", 0, None

    def send(self, method: str, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # skip events until our answer comes
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def attach_to_page(self) -> None:
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression} stayed false for {timeout} s")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (press and release), as a person makes it."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path) -> Iterator[DevTools]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (apt-get install chromium; CI installs it)")
    tools = DevTools(chromium, tmp_path / "profile")
    try:
        tools.attach_to_page()
        yield tools
    finally:
        tools.close()


def test_in_a_browser_a_prompt_gives_streamed_text(server, model, browser):
    browser.send("Page.enable")
    browser.send("Page.navigate", url=server.url + "/")
    browser.wait_for("document.body && document.body.dataset.state === 'idle'")
    assert browser.wait_for("document.getElementById('model-info').textContent.includes('parameters')")
    # Type as a person does: focus the box, clear it, insert the text through the input pipeline.
    browser.evaluate("(() => { const p = document.getElementById('prompt'); p.focus(); p.select(); })()")
    browser.send("Input.insertText", text="Friends, Romans")
    browser.evaluate("(() => { document.getElementById('seed').value = '5'; "
                     "document.getElementById('max_new_tokens').value = '60'; })()")
    browser.click("#generate")
    browser.wait_for("document.body.dataset.state === 'done'")
    shown = browser.evaluate("document.getElementById('output').textContent")
    status = browser.evaluate("document.getElementById('status').textContent")
    expected = expected_text(model, "Friends, Romans", 5, 60, temperature=0.8, top_p=0.9)
    assert shown == "Friends, Romans" + expected
    assert status.startswith("60 tokens in") and "seed 5" in status


def test_in_a_browser_a_bad_input_shows_the_servers_reason(server, browser):
    browser.send("Page.navigate", url=server.url + "/")
    browser.wait_for("document.body && document.body.dataset.state === 'idle'")
    browser.evaluate("(() => { document.getElementById('prompt').value = 'naïve'; })()")
    browser.click("#generate")
    browser.wait_for("document.body.dataset.state === 'error'")
    error = browser.evaluate("document.getElementById('error').textContent")
    assert "'ï' (U+00EF) at position 2" in error


def test_in_a_browser_the_stop_button_ends_the_generation_on_the_server(browser):
    with serving(tiny_model(SlowGPT), GenerationLimits(max_new_tokens=1000)) as slow:  # 20 ms per token
        browser.send("Page.navigate", url=slow.url + "/")
        browser.wait_for("document.body && document.body.dataset.state === 'idle'")
        browser.evaluate("document.getElementById('max_new_tokens').value = '1000'")
        browser.click("#generate")
        browser.wait_for("document.getElementById('output-generated').textContent.length >= 5")
        assert get_json(slow.url, "/health")[1]["active_generations"] == 1
        browser.click("#stop")
        browser.wait_for("document.body.dataset.state === 'stopped'")
        shown = len(browser.evaluate("document.getElementById('output-generated').textContent"))
        assert 5 <= shown < 1000
        deadline = time.monotonic() + 5
        while get_json(slow.url, "/health")[1]["active_generations"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get_json(slow.url, "/health")[1]["active_generations"] == 0
