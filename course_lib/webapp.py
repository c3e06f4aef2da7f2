"""The course model served as a small web app: the appendix "Projects" (issue 13, "the web app").

Chapter 7's GPT, trained on Tiny Shakespeare one character at a time, behind a Flask app: a page
where you type a prompt, pick temperature / top-k / top-p, and watch the characters stream in.
Two commands, both ``python -m course_lib.webapp``:

- ``train --out FOLDER``: train the app's model with chapter 7's :class:`~course_lib.trainer.Trainer`
  and save it into FOLDER (default ``~/.cache/llm-from-scratch-course/app-model``). 3000 steps of 32 x 64
  tokens reach a validation loss of 1.61; on a 2-core AMD EPYC (bfloat16) they ran at 20 steps/s
  while the machine was idle (about 2.5 minutes for all) and took 9.4 minutes while other jobs shared it;
- ``serve --checkpoint FOLDER``: load it once and serve http://127.0.0.1:8000 with waitress, a
  production WSGI server in pure Python (``--train-if-missing`` trains first when FOLDER is empty).

The HTTP interface, so that ``curl`` works as well as the page:

- ``GET /``: the page (everything it loads comes from this server: it works offline);
- ``GET /health``: ``{"status": "ok", "active_generations": n, ...}``;
- ``GET /api/model``: the model (vocabulary, context, parameters, training) and the limits;
- ``POST /api/generate`` with a JSON object ``{"prompt", "temperature", "top_k", "top_p",
  "max_new_tokens", "seed"}``: newline-delimited JSON, streamed as the tokens are sampled -- first
  ``{"seed": ...}``, then one ``{"token": text}`` per token, last ``{"done": true, "reason": ...}``.
  Invalid input is answered 400 (415, 413) with ``{"error": message, "field": name}`` before any
  generation starts.

Why it behaves: every request samples with its own ``torch.Generator`` (a seed reproduces a text;
concurrent requests never share random state), the model is only read (``torch.inference_mode``),
generation stops at ``max_new_tokens``, at a wall-clock limit, when the client goes away and when
the server shuts down, and at most ``max_concurrent`` generations run at once (others get 503).

Sampling is chapter 7's :func:`~course_lib.generation.generate`, one token per call, so the streamed
text is exactly what one ``generate`` call with the same generator returns. Flask and waitress are
the optional extra ``app`` (``pip install -e ".[app]"``); ``import course_lib`` never needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from course_lib.data import read_text, user_cache_dir
from course_lib.datasets import random_windows, train_val_split
from course_lib.generation import generate
from course_lib.gpt import GPT, GPTConfig
from course_lib.tokenizers import CharTokenizer
from course_lib.trainer import Trainer, TrainerConfig, best_precision, language_model_loss

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "AppModel",
    "AppServer",
    "GenerationLimits",
    "GenerationRequest",
    "RequestError",
    "create_app",
    "default_model_dir",
    "load_app_model",
    "main",
    "parse_generation_request",
    "save_app_model",
    "stream_generation",
    "train_app_model",
]

log = logging.getLogger("course_lib.webapp")

STATIC_DIR = Path(__file__).with_name("webapp_static")
MODEL_FILE, WEIGHTS_FILE = "model.json", "checkpoint.pt"
FORMAT = "course-webapp-model/1"
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes any 64-bit value; JSON clients handle 63 bits safely


def default_model_dir() -> Path:
    """``~/.cache/llm-from-scratch-course/app-model`` (or under ``$XDG_CACHE_HOME``), beside the course data."""
    return user_cache_dir().parent / "app-model"


# ---------------------------------------------------------------------------------------------
# The model: train, save, load
# ---------------------------------------------------------------------------------------------


@dataclass
class AppModel:
    """A GPT in evaluation mode, its tokenizer, and what is known about its training."""

    model: GPT
    tokenizer: CharTokenizer
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> GPTConfig:
        return self.model.config

    def describe(self) -> dict[str, Any]:
        return {"tokenizer": "characters", "vocab_size": self.tokenizer.vocab_size,
                "characters": "".join(self.tokenizer.itos),
                "context_length": self.config.context_length, "d_model": self.config.d_model,
                "n_layers": self.config.n_layers, "n_heads": self.config.n_heads,
                "parameters": self.model.num_parameters(), "training": self.training}


def save_app_model(folder: str | os.PathLike, trainer: Trainer, tokenizer: CharTokenizer,
                   training: dict[str, Any]) -> Path:
    """Write ``model.json`` (GPT shape, vocabulary, training facts) and the trainer's own checkpoint.

    The checkpoint is :meth:`Trainer.save_checkpoint`'s file (weights, optimizer, step, history), so a
    run can be continued with :meth:`Trainer.load_checkpoint`; the server reads only its weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(folder / WEIGHTS_FILE)
    meta = {"format": FORMAT, "gpt_config": asdict(trainer.model.config),
            "tokenizer": {"kind": "characters", "characters": "".join(tokenizer.itos)}, "training": training}
    tmp = folder / (MODEL_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MODEL_FILE)  # model.json last: a folder with it holds a complete model
    return folder


def load_app_model(folder: str | os.PathLike) -> AppModel:
    """The model :func:`save_app_model` wrote into ``folder``, in evaluation mode; clear errors otherwise."""
    folder = Path(folder).expanduser()
    meta_file, weights_file = folder / MODEL_FILE, folder / WEIGHTS_FILE
    if not meta_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"no trained app model in {folder} (expected {MODEL_FILE} and {WEIGHTS_FILE}); train one with "
            f"`python -m course_lib.webapp train --out {folder}`")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} is not an app model description (format {FORMAT!r})")
    try:
        if meta["tokenizer"]["kind"] != "characters":
            raise ValueError(f"{meta_file}: tokenizer kind {meta['tokenizer']['kind']!r}; the app serves "
                             "character-level models (chapter 7's)")
        # A CharTokenizer's vocabulary is the sorted set of its text's characters: the stored string rebuilds it.
        tokenizer = CharTokenizer(meta["tokenizer"]["characters"])
        config = GPTConfig(**meta["gpt_config"])
        if config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"{meta_file}: vocab_size {config.vocab_size} but {tokenizer.vocab_size} characters")
        # weights_only: a checkpoint is data, and loading it must not run code from the file.
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        model = GPT(config)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as err:
        raise ValueError(f"the app model in {folder} is damaged or from another version: {type(err).__name__}: "
                         f"{err}") from err
    return AppModel(model.eval(), tokenizer, meta.get("training", {}))


def train_app_model(out: str | os.PathLike, steps: int = 3000, batch: int = 32, context: int = 64,
                    d_model: int = 128, n_layers: int = 4, n_heads: int = 4, max_lr: float = 5e-3,
                    precision: str = "auto", seed: int = 0, progress: bool = True) -> AppModel:
    """Chapter 7's model and recipe (character-level Tiny Shakespeare), trained longer, saved into ``out``.

    The defaults are chapter 7's GPT (4 layers, width 128, context 64) and learning rates; the
    chapter trains 350 steps to keep the book fast, the app's model 3000. ``precision="auto"`` uses
    bfloat16 where the CPU multiplies it in hardware (:func:`course_lib.trainer.best_precision`).
    """
    text = read_text("tinyshakespeare.txt")
    tokenizer = CharTokenizer(text)
    train_ids, val_ids = train_val_split(torch.tensor(tokenizer.encode(text)), val_fraction=0.1)  # as chapter 7
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=context, d_model=d_model,
                          n_layers=n_layers, n_heads=n_heads, dropout=0.0))
    config = TrainerConfig(max_steps=steps, max_lr=max_lr, min_lr=max_lr / 10, warmup_steps=max(1, steps // 20),
                           precision=precision, eval_interval=max(1, steps // 10), eval_batches=8,
                           progress=progress)
    trainer = Trainer(model, language_model_loss, lambda step: random_windows(train_ids, batch, context, step),
                      config, val_batch=lambda i: random_windows(val_ids, batch, context, 1_000_000 + i))
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    training = {"data": "tinyshakespeare.txt", "steps": steps, "batch": batch, "seconds": round(seconds, 1),
                "val_loss": round(history.val_loss[-1], 4), "seed": seed,
                "precision": best_precision() if precision == "auto" else precision}
    save_app_model(out, trainer, tokenizer, training)
    log.info("trained %d steps in %.0f s, validation loss %.3f; saved in %s", steps, seconds,
             history.val_loss[-1], out)
    return AppModel(model.eval(), tokenizer, training)


# ---------------------------------------------------------------------------------------------
# Requests: validation and generation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationLimits:
    """What one request may ask for, and how much the server does at once."""

    max_prompt_chars: int = 2000
    max_new_tokens: int = 1000
    max_seconds: float = 30.0  # wall-clock limit of one generation
    max_temperature: float = 2.0
    max_concurrent: int = 8  # generations running at once; more are answered 503

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"GenerationLimits.{name} must be positive, got {value}")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    prompt_ids: list[int]
    temperature: float = 0.8
    top_k: int | None = None  # None: no top-k filter
    top_p: float | None = 0.9  # absent from a request: 0.9; null: no top-p filter
    max_new_tokens: int = 300
    seed: int | None = None


class RequestError(ValueError):
    """A request the server refuses: answered with ``status`` and ``{"error": message, "field": field}``."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status

    def as_json(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


def _number(body: dict, name: str, default: Any, integer: bool) -> Any:
    """``body[name]`` checked to be a number (an int if ``integer``), or ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    # bool is an int in Python, and 5.0 is not an integer a client should send for a count.
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise RequestError(f"{name} must be {kind}, got {json.dumps(value)}", name)
    if not integer and not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value}", name)
    return value


def _unencodable(text: str, tokenizer: CharTokenizer) -> str:
    """The characters of ``text`` that ``tokenizer`` cannot encode, each once, described for a person."""
    bad: dict[str, int] = {}
    for position, ch in enumerate(text):
        if ch not in bad and ch not in tokenizer.stoi:
            bad[ch] = position
    return ", ".join(f"{ch!r} (U+{ord(ch):04X}) at position {pos}" for ch, pos in list(bad.items())[:5]) + (
        f" and {len(bad) - 5} more" if len(bad) > 5 else "")


FIELDS = ("prompt", "temperature", "top_k", "top_p", "max_new_tokens", "seed")


def parse_generation_request(body: Any, tokenizer: CharTokenizer, limits: GenerationLimits) -> GenerationRequest:
    """Check every field of a request body; the first problem found raises :class:`RequestError` naming it."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object such as {\"prompt\": \"ROMEO:\"}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}", unknown[0])
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError("prompt is required and must be a string", "prompt")
    if not prompt:
        raise RequestError("prompt must not be empty: the model continues a text", "prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(f"prompt has {len(prompt)} characters; at most {limits.max_prompt_chars} are allowed",
                           "prompt")
    problems = _unencodable(prompt, tokenizer)
    if problems:
        raise RequestError(f"prompt contains characters that are not in the model's vocabulary of "
                           f"{tokenizer.vocab_size} characters: {problems}", "prompt")
    defaults = GenerationRequest("", [])
    temperature = _number(body, "temperature", defaults.temperature, integer=False)
    if not 0 < temperature <= limits.max_temperature:
        raise RequestError(f"temperature must be > 0 and <= {limits.max_temperature}, got {temperature}",
                           "temperature")
    top_k = _number(body, "top_k", None, integer=True)
    if top_k is not None and not 1 <= top_k <= tokenizer.vocab_size:
        raise RequestError(f"top_k must be between 1 and the vocabulary size {tokenizer.vocab_size}, got {top_k}",
                           "top_k")
    top_p = _number(body, "top_p", defaults.top_p if "top_p" not in body else None, integer=False)
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError(f"top_p must be > 0 and <= 1, got {top_p}", "top_p")
    default_tokens = min(defaults.max_new_tokens, limits.max_new_tokens)  # a server may allow fewer than 300
    max_new_tokens = _number(body, "max_new_tokens", default_tokens, integer=True)
    if not 1 <= max_new_tokens <= limits.max_new_tokens:
        raise RequestError(f"max_new_tokens must be between 1 and {limits.max_new_tokens}, got {max_new_tokens}",
                           "max_new_tokens")
    seed = _number(body, "seed", None, integer=True)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be between 0 and 2**63 - 1, got {seed}", "seed")
    return GenerationRequest(prompt, tokenizer.encode(prompt), float(temperature), top_k,
                             None if top_p is None else float(top_p), max_new_tokens, seed)


def stream_generation(app_model: AppModel, request: GenerationRequest, limits: GenerationLimits,
                      stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
    """The events of one generation: ``{"seed"}``, one ``{"token"}`` per new token, then ``{"done"}``.

    Each step is one call of chapter 7's ``generate(..., max_new_tokens=1)`` with this request's own
    generator, so the tokens are exactly those of one ``generate`` call for all of them. It stops at
    ``max_new_tokens`` (reason ``"max_new_tokens"``), after ``limits.max_seconds`` (``"time_limit"``),
    or when ``stop`` is set (``"shutdown"``); a client that goes away closes the iterator.
    """
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    generator = torch.Generator().manual_seed(seed)
    context = app_model.config.context_length
    yield {"seed": seed, "prompt_tokens": len(request.prompt_ids)}
    idx = torch.tensor([request.prompt_ids[-context:]])  # (1, T): the model reads at most `context` tokens
    start, produced, reason = time.monotonic(), 0, "max_new_tokens"
    while produced < request.max_new_tokens:
        if stop is not None and stop.is_set():
            reason = "shutdown"
            break
        if time.monotonic() - start >= limits.max_seconds:
            reason = "time_limit"
            break
        with torch.inference_mode():
            idx = generate(app_model.model, idx, 1, context, request.temperature, request.top_k, request.top_p,
                           generator)[:, -context:]
        produced += 1
        yield {"token": app_model.tokenizer.decode([int(idx[0, -1])])}
    seconds = time.monotonic() - start
    yield {"done": True, "reason": reason, "tokens": produced, "seconds": round(seconds, 3)}


class GenerationSlots:
    """Counts the generations running, refuses more than ``limit``, and tells them all to stop on shutdown."""

    def __init__(self, limit: int):
        self.limit, self.active = limit, 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def acquire(self) -> None:
        with self._lock:
            if self.stop.is_set():
                raise RequestError("the server is shutting down", status=503)
            if self.active >= self.limit:
                raise RequestError(f"the server is busy: {self.active} generations are running, the most it runs "
                                   "at once; try again in a moment", status=503)
            self.active += 1

    def release(self) -> None:
        with self._lock:
            self.active -= 1
            self._idle.notify_all()

    def shutdown(self, grace: float) -> bool:
        """Stop new and running generations; wait up to ``grace`` seconds for them to end. True if they did."""
        self.stop.set()
        with self._lock:
            return self._idle.wait_for(lambda: self.active == 0, timeout=grace)


# ---------------------------------------------------------------------------------------------
# The Flask app
# ---------------------------------------------------------------------------------------------


def create_app(app_model: AppModel, limits: GenerationLimits = GenerationLimits()) -> Flask:
    """The Flask app serving ``app_model``; ``app.extensions["generation_slots"]`` controls its generations."""
    from flask import Flask, Response, jsonify, request, send_from_directory
    from werkzeug.exceptions import HTTPException

    if not (STATIC_DIR / "index.html").is_file():
        raise FileNotFoundError(f"the page's files are missing from {STATIC_DIR}; install course_lib from a "
                                "clone of the course with pip install -e, which keeps them")
    app = Flask(__name__, static_folder=None)
    # Room for the longest prompt even if every character is JSON-escaped as a surrogate pair (12 bytes).
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 + 12 * limits.max_prompt_chars
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    slots = GenerationSlots(limits.max_concurrent)
    app.extensions["generation_slots"] = slots
    defaults = GenerationRequest("", [])
    model_info = {**app_model.describe(), "limits": asdict(limits),
                  "defaults": {"temperature": defaults.temperature, "top_k": defaults.top_k,
                               "top_p": defaults.top_p,
                               "max_new_tokens": min(defaults.max_new_tokens, limits.max_new_tokens)}}

    @app.errorhandler(RequestError)
    def refused(err: RequestError):
        response = jsonify(err.as_json())
        if err.status == 503:
            response.headers["Retry-After"] = "1"
        return response, err.status

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        # JSON for every error, so a script (and the page) can read the reason; 413 says the limit.
        message = (f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
                   if err.code == 413 else err.description)
        return jsonify({"error": message, "field": None}), err.code

    @app.after_request
    def security_headers(response: Response) -> Response:
        # Only this server's own files: the page works offline and no injected text can load a script.
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        return send_from_directory(STATIC_DIR, name)

    @app.get("/health")
    def health():
        return jsonify({"status": "stopping" if slots.stop.is_set() else "ok", "active_generations": slots.active,
                        "max_concurrent": slots.limit})

    @app.get("/api/model")
    def model():
        return jsonify(model_info)

    @app.post("/api/generate")
    def generate_text():
        if not request.is_json:
            raise RequestError("send the request as JSON (Content-Type: application/json)", status=415)
        body = request.get_json(silent=True)
        if body is None:
            raise RequestError("the request body is not valid JSON")
        parsed = parse_generation_request(body, app_model.tokenizer, limits)
        slots.acquire()  # 503 when full

        def ndjson() -> Iterator[str]:
            last: dict[str, Any] = {"reason": "client_gone"}  # stays so if the client leaves mid-stream
            try:
                for event in stream_generation(app_model, parsed, limits, slots.stop):
                    last = event
                    yield json.dumps(event, ensure_ascii=False) + "\n"
            except Exception as err:  # a bug, not the client's fault: say so in the stream, log the trace
                log.exception("generation failed")
                yield json.dumps({"error": f"generation failed: {type(err).__name__}: {err}"}) + "\n"
            finally:
                log.info("generation ended: %s", last)

        response = Response(ndjson(), mimetype="application/x-ndjson",
                            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        # The WSGI server closes every response, even one whose client left before the stream began
        # (a generator that never started runs no `finally`): the slot is released there.
        response.call_on_close(slots.release)
        return response

    return app


# ---------------------------------------------------------------------------------------------
# Serving: waitress in a thread, stopped cleanly
# ---------------------------------------------------------------------------------------------


class AppServer:
    """The app under waitress in a background thread: ``start()``, ``url``, ``stop()``.

    ``stop()`` first ends the running generations (their streams finish with reason ``"shutdown"``),
    then closes the listening socket and the connections, then joins waitress's worker threads.
    Creating one sets PyTorch to one thread per operation in this process (see ``__init__``).
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None):
        from waitress.server import create_server

        self.app = app
        self.slots: GenerationSlots = app.extensions["generation_slots"]
        # Requests run in parallel threads, and a model this small gains nothing from PyTorch's own
        # threads inside each operation: with them, threads spin-wait for each other. Measured on a
        # busy 2-core machine, 120 tokens of a tiny GPT: 3-5 s with 2 threads per operation, 0.05 s with 1.
        torch.set_num_threads(1)
        self._map: dict = {}  # waitress's socket map, ours so that stop() can close it
        # Each streaming generation holds a worker thread: keep some free for the page and /health.
        self.server = create_server(app, map=self._map, host=host, port=port,
                                    threads=threads or self.slots.limit + 4, channel_timeout=60)
        self.url = f"http://{host}:{self.server.effective_port}"
        self._thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)

    def start(self) -> AppServer:
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        from waitress import wasyncore

        if not self.slots.shutdown(grace):
            log.warning("%d generation(s) still running after %.0f s", self.slots.active, grace)
        # Close every socket from inside waitress's loop thread (its loop is not thread-safe); the loop
        # ends when nothing is left to watch.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        self._thread.join(timeout=grace)
        self.server.task_dispatcher.shutdown(timeout=grace)


def serve(checkpoint: Path, host: str, port: int, limits: GenerationLimits) -> int:
    """Load the model once, serve until SIGINT or SIGTERM, then stop cleanly."""
    app_model = load_app_model(checkpoint)
    server = AppServer(create_app(app_model, limits), host, port).start()
    info = app_model.describe()
    print(f"Serving {checkpoint} ({info['parameters']:,} parameters, validation loss "
          f"{info['training'].get('val_loss', '?')}) on {server.url}  (Ctrl+C stops)", flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(0.5):  # a timed wait: the main thread keeps handling signals
        pass
    print("Stopping: ending the running generations and closing connections", flush=True)
    server.stop()
    print("Stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.webapp", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the app's model (chapter 7's GPT, Tiny Shakespeare)")
    train.add_argument("--out", type=Path, default=default_model_dir(), help="folder to save it in (%(default)s)")
    train.add_argument("--steps", type=int, default=3000, help="optimisation steps (%(default)s)")
    for name, default in (("batch", 32), ("context", 64), ("d-model", 128), ("n-layers", 4), ("n-heads", 4),
                          ("seed", 0)):
        train.add_argument(f"--{name}", type=int, default=default, help="%(default)s")
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="%(default)s")
    run = commands.add_parser("serve", help="serve a trained model on http://HOST:PORT")
    run.add_argument("--checkpoint", type=Path, default=default_model_dir(), help="the folder `train` wrote "
                     "(%(default)s)")
    run.add_argument("--host", default="127.0.0.1", help="%(default)s: this computer only")
    run.add_argument("--port", type=int, default=8000, help="%(default)s")
    run.add_argument("--train-if-missing", action="store_true", help="train with the defaults first if the "
                     "folder holds no model")
    limits = GenerationLimits()
    for name in ("max_new_tokens", "max_seconds", "max_concurrent"):
        run.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(limits, name)),
                         default=getattr(limits, name), help="%(default)s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.command == "train":
        train_app_model(args.out, steps=args.steps, batch=args.batch, context=args.context, d_model=args.d_model,
                        n_layers=args.n_layers, n_heads=args.n_heads, precision=args.precision, seed=args.seed)
        print(f"Saved in {args.out}. Serve it with: python -m course_lib.webapp serve --checkpoint {args.out}")
        return 0
    try:
        limits = GenerationLimits(max_new_tokens=args.max_new_tokens, max_seconds=args.max_seconds,
                                  max_concurrent=args.max_concurrent)
        if args.train_if_missing and not (args.checkpoint / MODEL_FILE).is_file():
            print(f"No model in {args.checkpoint}: training one first (python -m course_lib.webapp train "
                  f"--out {args.checkpoint}; a few minutes)", flush=True)
            train_app_model(args.checkpoint)
        return serve(args.checkpoint, args.host, args.port, limits)
    except (OSError, ValueError) as err:  # no model, a damaged one, the port in use
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
