"""The trusted judge: test cells run in the grader's process, the student's code in the sandbox.

For an assignment judged this way, the grader never sends a test cell to the student's kernel.
It runs the course's setup cells and every test cell (visible and hidden checks) itself, in a
namespace of its own, with trusted ``torch``, ``course_lib`` and ``course_lib.testing``. The
names a test cell uses that the judge does not define (the student's functions and classes) are
looked up in the student's kernel and become :class:`Remote` proxies: calling one sends the
arguments to the kernel as data, runs the student's function there, and brings back data
(see :mod:`course_grading.bridge`). Whatever the student patches in their own process (torch,
IPython, course_lib, the checks) therefore cannot change the verdict: the checks and the
references they compare with never run there.

What a call carries besides its arguments: torch's global random state (so ``seeded(...)`` in a
test seeds the student's code exactly as it would in one process) and whether gradients are on.
The random state comes back after the call.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import math
import os
import socket
import struct
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

from course_grading.bridge import KERNEL_SOURCE, MAX_JSON, MAX_TENSORS

__all__ = ["Judge", "Remote", "RemoteError", "StudentTimeout", "StudentKernelDied"]

# The standard layers a test may pass to the student's code; they are rebuilt there from their state.
_LAYERS = {"Linear": lambda m: ([m.in_features, m.out_features], {"bias": m.bias is not None}),
           "Embedding": lambda m: ([m.num_embeddings, m.embedding_dim], {}),
           "LayerNorm": lambda m: ([list(m.normalized_shape)], {"eps": m.eps,
                                                                "elementwise_affine": m.elementwise_affine}),
           "Dropout": lambda m: ([m.p], {})}


class StudentTimeout(Exception):
    """The student's code ran past the cell's time limit."""


class StudentKernelDied(Exception):
    """The student's kernel died during a call."""


class RemoteError(Exception):
    """An exception raised by the student's code in the sandbox (its type is kept in the message)."""

    def __init__(self, type_name: str, message: str, remote_traceback: str):
        super().__init__(message)
        self.type_name, self.remote_traceback = type_name, remote_traceback


_ERROR_TYPES: dict[str, type] = {}


def _error_type(name: str) -> type:
    """An exception class for a student's error: the builtin one's subclass when the name is builtin."""
    base = getattr(builtins, name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or issubclass(base, (StopIteration,)):
        base = Exception
    if name not in _ERROR_TYPES:
        _ERROR_TYPES[name] = type(name, (RemoteError, base), {"__init__": RemoteError.__init__,
                                                              "__str__": lambda self: Exception.__str__(self)})
    return _ERROR_TYPES[name]


class Remote:
    """A proxy for an object that lives in the student's kernel."""

    __slots__ = ("_judge", "_id", "_type")

    def __init__(self, judge: "Judge", handle: int, type_name: str):
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_id", handle)
        object.__setattr__(self, "_type", type_name)

    @property
    def __class__(self):  # isinstance(proxy, nn.Linear) holds for the student's nn.Linear
        return self._judge.known_class(self._type) or Remote

    def __call__(self, *args, **kwargs):
        return self._judge.call(self, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._judge.request({"op": "getattr", "target": {"h": self._id}, "name": name}, {})

    def __setattr__(self, name: str, value: Any) -> None:
        tensors: dict = {}
        self._judge.request({"op": "setattr", "target": {"h": self._id}, "name": name,
                             "value": self._judge.encode(value, tensors)}, tensors)

    def _method(self, name: str, *args):
        method = self._judge.request({"op": "getattr", "target": {"h": self._id}, "name": name}, {})
        return method(*args)

    def __getitem__(self, key):
        return self._method("__getitem__", key)

    def __len__(self):
        return self._method("__len__")

    def __iter__(self):
        iterator = self._method("__iter__")
        while True:
            try:
                yield iterator._method("__next__")
            except RemoteError as error:
                if error.type_name == "StopIteration":
                    return
                raise

    def __repr__(self) -> str:
        return f"<the student's {self._type.rsplit('.', 1)[-1]}>"


class Judge:
    """Runs trusted cells in a namespace of its own; reaches the student's kernel through ``execute``.

    ``execute(code, deadline)`` runs code silently in the student's kernel and returns when it
    finished, raising :class:`StudentTimeout` or :class:`StudentKernelDied`.
    """

    def __init__(self, scratch: Path, execute: Callable[[str, float], None], alive: Callable[[], bool] = lambda: True):
        import torch

        self.torch = torch
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)  # the checks compute on small tensors; spinning threads only cost CPU
        self.scratch = scratch
        self._execute = execute
        self._alive = alive
        self._socket: socket.socket | None = None
        self._bridge_ready = False
        self.deadline = math.inf
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self._proxies: dict[int, Remote] = {}
        # A fresh process's random state, so that the judge's draws do not depend on earlier students.
        torch.manual_seed(67280421310721)

    # ---------------------------------------------------------------- classes the proxies claim

    def known_class(self, type_name: str):
        module, _, name = type_name.rpartition(".")
        if module.startswith("torch.nn.modules."):
            cls = getattr(self.torch.nn, name, None)
            if isinstance(cls, type) and cls.__module__ == module:
                return cls
        return None

    # ---------------------------------------------------------------- encoding

    def encode(self, obj: Any, tensors: dict) -> Any:
        torch = self.torch
        t = type(obj)
        if obj is None or t in (bool, int, str):
            return obj
        if t is float:
            return obj if math.isfinite(obj) else {"f": repr(obj)}
        if isinstance(obj, Remote):
            return {"h": obj._id}
        if isinstance(obj, torch.Tensor):
            x = obj.detach().as_subclass(torch.Tensor)
            key = f"a{len(tensors)}"
            node: dict[str, Any] = {"t": key}
            if x.is_contiguous() and x.storage_offset() == 0:
                tensors[key] = x.clone()
            else:  # keep the memory layout: some checks are about non-contiguous inputs
                span = 1 + sum((s - 1) * st for s, st in zip(x.shape, x.stride())) if x.numel() else 0
                tensors[key] = torch.as_strided(x, (span,), (1,), x.storage_offset()).clone()
                node.update(size=list(x.shape), stride=list(x.stride()))
            if obj.requires_grad:
                node["grad"] = True
            return node
        if t in (list, tuple):
            return {"l" if t is list else "u": [self.encode(x, tensors) for x in obj]}
        if t is torch.Size:
            return {"u": [int(x) for x in obj]}
        if t is dict:
            return {"d": [[self.encode(k, tensors), self.encode(v, tensors)] for k, v in obj.items()]}
        if isinstance(obj, torch.dtype):
            return {"dtype": str(obj).split(".")[-1]}
        if t is torch.Generator and obj.device.type == "cpu":  # its state crosses, and comes back after the call
            key = f"a{len(tensors)}"
            tensors[key] = obj.get_state()
            return {"gen": key}
        if t.__name__ in _LAYERS and getattr(torch.nn, t.__name__, None) is t:
            args, kwargs = _LAYERS[t.__name__](obj)
            state = {}
            for name, value in obj.named_parameters(recurse=False):
                key = f"a{len(tensors)}"
                tensors[key] = value.detach().clone()
                state[name] = key
            return {"m": t.__name__, "args": args, "kwargs": kwargs, "state": state, "training": obj.training}
        raise TypeError(f"the grader cannot pass a {t.__name__} to the student's code")

    def decode(self, node: Any, tensors: dict) -> Any:
        if not isinstance(node, dict):
            if node is None or type(node) in (bool, int, float, str):
                return node
            raise ValueError("malformed answer from the student's kernel")
        if "f" in node:
            return float(str(node["f"]))
        if "t" in node:
            tensor = tensors[str(node["t"])]
            if node.get("grad") and (tensor.is_floating_point() or tensor.is_complex()):
                tensor.requires_grad_(True)
            if node.get("param"):
                tensor = self.torch.nn.Parameter(tensor, requires_grad=bool(node.get("grad")))
            return tensor
        if "l" in node:
            return [self.decode(x, tensors) for x in node["l"]]
        if "u" in node:
            return tuple(self.decode(x, tensors) for x in node["u"])
        if "d" in node:
            return {self.decode(k, tensors): self.decode(v, tensors) for k, v in node["d"]}
        if "dtype" in node:
            dtype = getattr(self.torch, str(node["dtype"]), None)
            if not isinstance(dtype, self.torch.dtype):
                raise ValueError("malformed dtype from the student's kernel")
            return dtype
        if "h" in node:
            handle = int(node["h"])
            if handle not in self._proxies:
                self._proxies[handle] = Remote(self, handle, str(node.get("type", "object"))[:200])
            return self._proxies[handle]
        raise ValueError("malformed answer from the student's kernel")

    # ---------------------------------------------------------------- talking to the kernel

    def request(self, payload: dict, tensors: dict, *, raw: bool = False) -> Any:
        if not self._bridge_ready:
            self._start_bridge()
        if self._socket is not None:
            answer, result_tensors = self._exchange(payload, tensors)
        else:
            answer, result_tensors = self._exchange_files(payload, tensors)
        if not isinstance(answer, dict):
            raise RemoteError("RuntimeError", "malformed answer from the student's kernel", "")
        if "e" in answer:
            error = answer["e"] if isinstance(answer["e"], dict) else {}
            name = str(error.get("type", "Exception"))[:100]
            raise _error_type(name)(name, str(error.get("message", ""))[:4000], str(error.get("traceback", ""))[-8000:])
        if raw:
            return answer.get("ok"), result_tensors
        return self.decode(answer.get("ok"), result_tensors)

    def _start_bridge(self) -> None:
        """Load the kernel's half of the bridge into the kernel and connect to its socket."""
        self._bridge_ready = True
        address = str(self.scratch / f"bridge-{uuid.uuid4().hex[:8]}.sock")
        self._execute("import sys as _s, types as _t\n_m = _t.ModuleType('_course_bridge')\n"
                      f"exec(compile({KERNEL_SOURCE!r}, '<course-grading-bridge>', 'exec'), _m.__dict__)\n"
                      f"_s.modules['_course_bridge'] = _m\n_m.start_server({address!r})\ndel _s, _t, _m",
                      self.deadline)
        if Path(address).exists() and not Path(address).is_symlink():
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._socket.connect(address)
            except OSError:
                self._socket = None

    def _exchange(self, payload: dict, tensors: dict) -> tuple[Any, dict]:
        """One request over the bridge's socket; its answer (JSON, safetensors), bounded in size and time."""
        from safetensors.torch import load, save

        data = json.dumps(payload).encode()
        blob = save({k: v.contiguous() for k, v in tensors.items()}) if tensors else b""
        try:
            self._socket.sendall(struct.pack("!QQ", len(data), len(blob)) + data + blob)
            n_json, n_tensors = struct.unpack("!QQ", self._receive(16))
            if n_json > MAX_JSON or n_tensors > MAX_TENSORS:
                raise RemoteError("RuntimeError", "the student's code returned too much data", "")
            answer = json.loads(self._receive(n_json).decode())
            result_tensors = load(self._receive(n_tensors)) if n_tensors else {}
        except (OSError, EOFError, ValueError, struct.error) as problem:
            self._socket = None  # the student's code closed or garbled it: no answers any more
            if not self._alive():
                raise StudentKernelDied() from None
            raise RemoteError("RuntimeError", f"the student's kernel gave no answer ({type(problem).__name__}; was "
                              "the grading bridge removed?)", "") from None
        return answer, result_tensors

    def _receive(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise StudentTimeout()
            self._socket.settimeout(min(remaining, 0.5))
            try:
                chunk = self._socket.recv(min(n - got, 1 << 20))
            except socket.timeout:
                if not self._alive():
                    raise StudentKernelDied() from None
                continue
            if not chunk:
                raise EOFError("closed")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _exchange_files(self, payload: dict, tensors: dict) -> tuple[Any, dict]:
        """One request through files in the scratch folder and a silent execution (no socket)."""
        from safetensors.torch import load, save_file

        call = str(self.scratch / f"call-{uuid.uuid4().hex}")
        Path(f"{call}.req.json").write_text(json.dumps(payload))
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, f"{call}.req.safetensors")
        try:
            self._execute(f"__import__('sys').modules['_course_bridge'].serve({call!r})", self.deadline)
            answer_path = Path(f"{call}.res.json")
            if not answer_path.is_file() or answer_path.is_symlink():
                raise RemoteError("RuntimeError", "the student's kernel gave no answer (was the grading bridge "
                                  "removed or IPython's input hooked?)", "")
            if answer_path.stat().st_size > MAX_JSON:
                raise RemoteError("RuntimeError", "the student's code returned too much data", "")
            answer = json.loads(answer_path.read_text())
            result_tensors: dict = {}
            tensor_path = Path(f"{call}.res.safetensors")
            if tensor_path.is_file() and not tensor_path.is_symlink():
                if tensor_path.stat().st_size > MAX_TENSORS:
                    raise RemoteError("RuntimeError", "the student's code returned too much data", "")
                result_tensors = load(tensor_path.read_bytes())
        finally:
            for suffix in (".req.json", ".req.safetensors", ".res.json", ".res.safetensors"):
                with contextlib.suppress(OSError):
                    os.unlink(call + suffix)
        return answer, result_tensors

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def call(self, target: Remote, args: tuple, kwargs: dict) -> Any:
        torch = self.torch
        tensors: dict = {"rng": torch.get_rng_state()}
        payload = {"op": "call", "target": {"h": target._id}, "args": self.encode(list(args), tensors),
                   "kwargs": self.encode(dict(kwargs), tensors), "grad": torch.is_grad_enabled()}
        node, result_tensors = self.request(payload, tensors, raw=True)
        if not isinstance(node, dict) or "value" not in node:
            raise RemoteError("RuntimeError", "malformed answer from the student's kernel", "")
        rng = result_tensors.get("rng")
        if isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape:
            torch.set_rng_state(rng)
        # In-place changes to the tensors passed in, and the generators' states: copy them back.
        inputs = [x for x in _flatten(list(args) + list(kwargs.values())) if isinstance(x, (torch.Tensor, torch.Generator))]
        returned = node.get("args") or []
        if isinstance(returned, list) and len(returned) == len(inputs):
            with torch.no_grad():
                for original, back in zip(inputs, returned):
                    value = self.decode(back, result_tensors)
                    if not isinstance(value, torch.Tensor):
                        continue
                    if isinstance(original, torch.Generator):
                        with contextlib.suppress(RuntimeError, TypeError):
                            original.set_state(value.to(torch.uint8))
                    elif value.shape == original.shape and value.dtype == original.dtype \
                            and not torch.equal(value.detach(), original.detach()):
                        original.copy_(value)
        return self.decode(node["value"], result_tensors)

    # ---------------------------------------------------------------- running trusted cells

    def run_cell(self, source: str, deadline: float) -> list[dict]:
        """Run one trusted cell; return its outputs (nbformat dicts), an error output last if it failed."""
        self.deadline = deadline
        stdout = io.StringIO()
        outputs: list[dict] = []
        try:
            tree = ast.parse(source)
            missing = sorted(_free_names(tree) - set(self.namespace) - set(dir(builtins)))
            if missing:
                found = self.request({"op": "lookup", "names": missing}, {})
                for name, value in found.items():
                    self.namespace.setdefault(name, value)
            with contextlib.redirect_stdout(stdout), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(tree, "<test cell>", "exec"), self.namespace)  # noqa: S102 - trusted course code
        except (StudentTimeout, StudentKernelDied):
            raise
        except BaseException as exc:  # noqa: BLE001 - the cell's error is its result
            outputs = _stdout(stdout)
            outputs.append(_error_output(exc))
            return outputs
        return _stdout(stdout)


def _stdout(buffer: io.StringIO) -> list[dict]:
    text = buffer.getvalue()
    return [{"output_type": "stream", "name": "stdout", "text": text}] if text else []


def _error_output(exc: BaseException) -> dict:
    """An error output that says what failed and, for the student's own code, where; no test code."""
    lines: list[str] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, RemoteError) and cause.remote_traceback:
            lines.append("Your code raised this error (in the sandbox):\n" + cause.remote_traceback.rstrip())
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, RemoteError) and exc.remote_traceback:
        lines.append("Your code raised this error (in the sandbox):\n" + exc.remote_traceback.rstrip())
    ename = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
    evalue = str(exc)
    lines.append(f"{ename}: {evalue}")
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": lines}


def _free_names(tree: ast.AST) -> set[str]:
    """Names a cell reads but never binds (anywhere in it)."""
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound


def _flatten(items: list) -> list:
    flat: list = []
    for x in items:
        flat += _flatten(list(x)) if type(x) in (list, tuple) else [x]
    return flat


def deadline_after(seconds: float | None) -> float:
    return math.inf if not seconds else time.monotonic() + seconds


def format_exc_safe(exc: BaseException) -> str:  # pragma: no cover - debugging aid
    return "".join(traceback.format_exception_only(type(exc), exc))
