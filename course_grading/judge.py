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

Arguments travel to the kernel as a pickle with the tensors beside it (see
:mod:`course_grading.bridge`): a model and its optimizer built by the test arrive as copies that
share their parameters, and after the call the kernel reports what changed (parameters,
gradients, training flags, the optimizer's state) as data, which the judge copies into its own
objects, so the test sees them changed as it would in one process. The grader's own functions
(a lambda passed as a stand-in layer) and layers whose class the sandbox hides stay here and are
called back from the kernel.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import io
import json
import math
import os
import pickle
import socket
import struct
import time
import traceback
import types
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

from course_grading.bridge import KERNEL_SOURCE, MAX_JSON, MAX_TENSORS

__all__ = ["Judge", "Remote", "RemoteError", "StudentTimeout", "StudentKernelDied"]


class StudentTimeout(Exception):
    """The student's code ran past the cell's time limit."""


class StudentKernelDied(Exception):
    """The student's kernel died during a call."""


class RemoteError(Exception):
    """An exception raised by the student's code in the sandbox (its type is kept in the message)."""

    def __init__(self, type_name: str, message: str, remote_traceback: str):
        super().__init__(message)
        self.type_name, self.remote_traceback = type_name, remote_traceback


_ERROR_TYPES: dict[tuple[str, str], type] = {}


def _error_type(name: str, base_name: str = "") -> type:
    """An exception class for a student's error, a subclass of its builtin base (``ShapeError(ValueError)``
    is caught by ``except ValueError`` as in one process)."""
    base = getattr(builtins, base_name or name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or issubclass(base, (StopIteration,)):
        base = Exception
    key = (name, base.__name__)
    if key not in _ERROR_TYPES:
        _ERROR_TYPES[key] = type(name, (RemoteError, base), {"__init__": RemoteError.__init__,
                                                             "__str__": lambda self: Exception.__str__(self)})
    return _ERROR_TYPES[key]


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
        if name.startswith("__") and name.endswith("__") and name not in ("__name__", "__qualname__"):
            raise AttributeError(name)
        return self._judge.request({"op": "getattr", "target": {"h": self._id}, "name": name}, {})

    def __setattr__(self, name: str, value: Any) -> None:
        tensors: dict = {}
        self._judge.request({"op": "setattr", "target": {"h": self._id}, "name": name,
                             "value": self._judge.pack(value, tensors)}, tensors)

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

    def __init__(self, scratch: Path, execute: Callable[[str, float], None], alive: Callable[[], bool] = lambda: True,
                 hidden_modules: Iterable[str] = ()):
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
        # Objects of the grader's that the kernel calls back (functions, layers of hidden classes).
        self._local: dict[int, Any] = {}
        self._iterables: dict[int, list] = {}
        self._result_arguments: list | None = None  # while a call's result is decoded: its arguments
        # What the sandbox hides: whole modules, and single names ("course_lib.gpt:LayerNorm,GPT").
        self._hidden_modules: set[str] = set()
        self._hidden_names: set[tuple[str, str]] = set()
        for spec in hidden_modules:
            module, _, names = spec.partition(":")
            if names:
                self._hidden_names.update((module, n.strip()) for n in names.split(","))
            else:
                self._hidden_modules.add(module)
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
        raise TypeError(f"the grader cannot pass a {t.__name__} to the student's code")

    # ---------------------------------------------------------------- arguments by pickle, state back as data

    def pack(self, obj: Any, tensors: dict) -> dict:
        """Pickle ``obj`` for the kernel; its tensors and generators go into ``tensors`` beside it."""
        buffer = io.BytesIO()
        try:
            _Packer(buffer, self, tensors).dump(obj)
        except (pickle.PicklingError, TypeError, AttributeError) as problem:
            raise TypeError(f"the grader cannot pass this to the student's code: {problem}") from None
        key = f"a{len(tensors)}"
        tensors[key] = self.torch.frombuffer(bytearray(buffer.getvalue()), dtype=self.torch.uint8)
        return {"pk": key}

    def hidden_class(self, cls: type) -> bool:
        """Whether the sandbox cannot import ``cls`` (hidden reference, or defined in a test cell)."""
        module, qualname = cls.__module__, cls.__qualname__
        return (module == "__main__" or "<locals>" in qualname or module in self._hidden_modules
                or (module, qualname.split(".")[0]) in self._hidden_names)

    def local_id(self, obj: Any) -> int:
        self._local[id(obj)] = obj
        return id(obj)

    def _stateful(self, obj: Any, out: list, iterables: dict) -> None:
        """The objects a call may change in place, in the order the kernel reports them."""
        torch = self.torch
        t = type(obj)
        if t in (list, tuple):
            for x in obj:
                self._stateful(x, out, iterables)
        elif t is dict:
            for x in obj.values():
                self._stateful(x, out, iterables)
        elif id(obj) in iterables:
            self._stateful(iterables[id(obj)], out, iterables)
        elif t is Remote or t is types.GeneratorType:
            pass
        elif isinstance(obj, (torch.Tensor, torch.Generator, torch.nn.Module, torch.optim.Optimizer)):
            out.append(obj)

    def _apply_tensor(self, obj: Any, report: Any, tensors: dict) -> None:
        torch = self.torch
        if not isinstance(report, dict):
            return
        value = self.decode(report.get("x"), tensors)
        if isinstance(value, torch.Tensor) and value.shape == obj.shape and value.dtype == obj.dtype:
            with torch.no_grad():
                if not torch.equal(value.detach(), obj.detach()):
                    obj.copy_(value)
        if not obj.is_leaf:
            return
        requires_grad = bool(report.get("rg"))
        if obj.requires_grad != requires_grad and (obj.is_floating_point() or obj.is_complex()):
            obj.requires_grad_(requires_grad)
        grad = self.decode(report.get("g"), tensors)
        if grad is None or (isinstance(grad, torch.Tensor) and grad.shape == obj.shape and grad.dtype == obj.dtype):
            obj.grad = None if grad is None else grad.detach()

    def _apply(self, obj: Any, report: Any, tensors: dict) -> None:
        """Copy the state the kernel reports for one argument into the grader's own object."""
        torch = self.torch
        if not isinstance(report, dict):
            raise RemoteError("RuntimeError", "malformed answer from the student's kernel", "")
        if isinstance(obj, torch.Tensor):
            self._apply_tensor(obj, report, tensors)
        elif isinstance(obj, torch.Generator):
            state = self.decode(report.get("gen"), tensors)
            if isinstance(state, torch.Tensor):
                with contextlib.suppress(RuntimeError, TypeError):
                    obj.set_state(state.to(torch.uint8))
        elif isinstance(obj, torch.nn.Module):
            params, buffers = dict(obj.named_parameters()), dict(obj.named_buffers())
            modules = dict(obj.named_modules())
            for name, value in report.get("p") or []:
                if name in params:
                    self._apply_tensor(params[name], value, tensors)
            for name, value in report.get("b") or []:
                value = self.decode(value, tensors)
                if name in buffers and isinstance(value, torch.Tensor) and value.shape == buffers[name].shape:
                    with torch.no_grad():
                        buffers[name].copy_(value)
            for name, training in report.get("tr") or []:
                if name in modules:
                    modules[name].training = bool(training)
        else:  # an optimizer
            try:
                obj.load_state_dict(self.decode(report.get("o"), tensors))
            except (KeyError, ValueError, TypeError, RuntimeError) as problem:
                raise RemoteError("RuntimeError", "the optimizer's state that came back from your code does not "
                                  f"fit the optimizer that was passed in: {problem}", "") from None

    def decode(self, node: Any, tensors: dict) -> Any:
        if not isinstance(node, dict):
            if node is None or type(node) in (bool, int, float, str):
                return node
            raise ValueError("malformed answer from the student's kernel")
        if "f" in node:
            return float(str(node["f"]))
        if "t" in node:
            tensor = tensors[str(node["t"])]
            if node.get("node") is not None and self._result_arguments is not None and self.torch.is_grad_enabled():
                return self._differentiable(tensor, node)
            if node.get("grad") and (tensor.is_floating_point() or tensor.is_complex()):
                tensor.requires_grad_(True)
            if node.get("param"):
                tensor = self.torch.nn.Parameter(tensor, requires_grad=bool(node.get("grad")))
            grad = self.decode(node["g"], tensors) if isinstance(node.get("g"), dict) and "t" in node["g"] else None
            if isinstance(grad, self.torch.Tensor) and grad.shape == tensor.shape and grad.dtype == tensor.dtype:
                tensor.grad = grad.detach()
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
            error_type = _error_type(name, str(error.get("base", ""))[:100])
            raise error_type(name, str(error.get("message", ""))[:4000], str(error.get("traceback", ""))[-8000:])
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
        """One request over the bridge's socket; its answer (JSON, safetensors), bounded in size and time.

        While the student's code runs, it may call the grader's functions: such a message (``"cb"``)
        is answered here, and the wait for the request's own answer goes on.
        """
        from safetensors.torch import load, save

        data = json.dumps(payload).encode()
        blob = save({k: v.contiguous() for k, v in tensors.items()}) if tensors else b""
        try:
            self._socket.sendall(struct.pack("!QQ", len(data), len(blob)) + data + blob)
            while True:
                n_json, n_tensors = struct.unpack("!QQ", self._receive(16))
                if n_json > MAX_JSON or n_tensors > MAX_TENSORS:
                    raise RemoteError("RuntimeError", "the student's code returned too much data", "")
                answer = json.loads(self._receive(n_json).decode())
                result_tensors = {k: v.clone() for k, v in load(self._receive(n_tensors)).items()} if n_tensors else {}
                if not (isinstance(answer, dict) and "cb" in answer):
                    break
                reply, reply_tensors = self._callback(answer, result_tensors)
                data = json.dumps(reply).encode()
                blob = save({k: v.contiguous() for k, v in reply_tensors.items()}) if reply_tensors else b""
                if self._socket is None:
                    raise EOFError("closed")
                self._socket.sendall(struct.pack("!QQ", len(data), len(blob)) + data + blob)
        except (OSError, EOFError, ValueError, struct.error) as problem:
            self._socket = None  # the student's code closed or garbled it: no answers any more
            if not self._alive():
                raise StudentKernelDied() from None
            raise RemoteError("RuntimeError", f"the student's kernel gave no answer ({type(problem).__name__}; was "
                              "the grading bridge removed?)", "") from None
        return answer, result_tensors

    def _callback(self, message: dict, tensors: dict) -> tuple[dict, dict]:
        """Run one of the grader's objects for the student's code; the answer is data."""
        torch = self.torch
        out: dict = {}
        try:
            key = message.get("cb")
            if type(key) is not int or key not in self._local:
                raise RuntimeError("the student's code called a grader function that does not exist")
            args, kwargs = self.decode(message.get("args"), tensors), self.decode(message.get("kwargs"), tensors)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise RuntimeError("malformed callback from the student's kernel")
            with torch.set_grad_enabled(bool(message.get("grad"))), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = self._local[key](*args, **kwargs)
            return {"ok": self.encode(value, out)}, out
        except (StudentTimeout, StudentKernelDied):
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the student's code, which called it
            return {"e": {"type": type(exc).__name__, "message": str(exc)[:4000]}}, {}

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
                result_tensors = {k: v.clone() for k, v in load(tensor_path.read_bytes()).items()}
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
        arguments = [list(args), dict(kwargs)]
        iterables: dict[int, list] = {}  # generators passed in (model.parameters()), as the lists sent
        self._iterables = iterables
        payload = {"op": "call", "target": {"h": target._id}, "grad": torch.is_grad_enabled(),
                   "args": self.pack(arguments, tensors)}
        node, result_tensors = self.request(payload, tensors, raw=True)
        if not isinstance(node, dict) or "value" not in node:
            raise RemoteError("RuntimeError", "malformed answer from the student's kernel", "")
        rng = result_tensors.get("rng")
        if isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape:
            torch.set_rng_state(rng)
        # What the call changed in the objects passed in (tensors in place, a model's weights and
        # gradients, an optimizer's state, a generator's state): copy it into the grader's objects.
        changed: list = []
        self._stateful(arguments, changed, iterables)
        reports = node.get("state")
        if not isinstance(reports, list) or len(reports) != len(changed):
            raise RemoteError("RuntimeError", "malformed answer from the student's kernel", "")
        for obj, report in zip(changed, reports):
            self._apply(obj, report, result_tensors)
        self._result_arguments = changed
        try:
            return self.decode(node["value"], result_tensors)
        finally:
            self._result_arguments = None

    def _differentiable(self, tensor: Any, node: dict) -> Any:
        """The student's result, connected to the arguments it was computed from: backward() on it
        runs backward in the kernel and brings the arguments' gradients back."""
        torch = self.torch
        indexes = node.get("inputs") if isinstance(node.get("inputs"), list) else []
        arguments = self._result_arguments or []
        inputs = [arguments[i] for i in indexes if type(i) is int and 0 <= i < len(arguments)
                  and isinstance(arguments[i], torch.Tensor)]
        if len(inputs) != len(indexes) or not (tensor.is_floating_point() or tensor.is_complex()):
            raise RemoteError("RuntimeError", "malformed answer from the student's kernel", "")
        anchor = torch.zeros((), requires_grad=True)  # so that the result requires grad even without inputs
        return _RemoteBackward.apply(self, int(node["node"]), tensor, anchor, *inputs)

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


def deadline_after(seconds: float | None) -> float:
    return math.inf if not seconds else time.monotonic() + seconds


def format_exc_safe(exc: BaseException) -> str:  # pragma: no cover - debugging aid
    return "".join(traceback.format_exception_only(type(exc), exc))


class _Packer(pickle.Pickler):
    """Pickles a call's arguments for the kernel; what must not be pickled goes as a persistent id.

    Tensors (with their gradient and memory layout) and generators go into the safetensors beside
    the pickle, the same object always under the same key, so a model and its optimizer still share
    their parameters in the kernel. The student's objects go as their handles; the grader's
    functions, and layers whose class the sandbox cannot import, go as callbacks (with their
    parameters, so that they can be counted and read); a generator goes as the list of its items.
    """

    def __init__(self, file: io.BytesIO, judge: Judge, tensors: dict):
        super().__init__(file, protocol=4)
        self.judge, self.tensors, self.keys = judge, tensors, {}

    def _store(self, data: Any) -> str:
        key = f"a{len(self.tensors)}"
        self.tensors[key] = data
        return key

    def persistent_id(self, obj: Any) -> Any:
        torch, judge = self.judge.torch, self.judge
        t = type(obj)
        if t in (int, float, str, bool, bytes, type(None), list, tuple, dict):
            return None
        if t is Remote:
            return ("h", obj._id)
        if isinstance(obj, torch.Tensor):
            if id(obj) in self.keys:
                return self.keys[id(obj)]
            data = obj.detach().as_subclass(torch.Tensor)
            if data.is_contiguous() and data.storage_offset() == 0:
                key, layout = self._store(data.clone()), None
            else:  # keep the memory layout: some checks are about non-contiguous inputs
                span = 1 + sum((s - 1) * st for s, st in zip(data.shape, data.stride())) if data.numel() else 0
                key = self._store(torch.as_strided(data, (span,), (1,), data.storage_offset()).clone())
                layout = list(data.stride())
            grad = obj.grad if obj.is_leaf else None
            grad_key = None if grad is None else self._store(grad.detach().as_subclass(torch.Tensor).contiguous().clone())
            pid = ("t", key, list(data.shape), layout, grad_key, bool(obj.requires_grad),
                   isinstance(obj, torch.nn.Parameter))
            self.keys[id(obj)] = pid
            return pid
        if t is torch.Generator:
            if id(obj) not in self.keys:
                self.keys[id(obj)] = ("gen", self._store(obj.get_state()))
            return self.keys[id(obj)]
        if t is types.GeneratorType:
            items = list(obj)
            judge._iterables[id(obj)] = items
            return ("iter", id(obj), items)
        if isinstance(obj, torch.nn.Module) and judge.hidden_class(t):
            attributes = {k: v for k, v in vars(obj).items()
                          if not k.startswith("_") and k != "training" and type(v) in (int, float, str, bool, type(None))}
            return ("jmod", judge.local_id(obj), f"{t.__module__}.{t.__qualname__}", dict(obj._parameters),
                    dict(obj._buffers), dict(obj._modules), bool(obj.training), attributes)
        if t in (types.FunctionType, types.MethodType, functools.partial) or (
                not isinstance(obj, type) and callable(obj) and judge.hidden_class(t)):
            module = getattr(obj, "__module__", "") or ""
            if t is types.FunctionType and module.split(".")[0] == "torch" and "<" not in obj.__qualname__:
                return None  # a torch function: the kernel imports the same one
            return ("jfn", judge.local_id(obj), getattr(obj, "__name__", t.__name__))
        return None


def _make_remote_backward():
    import torch

    class RemoteBackward(torch.autograd.Function):
        """A result computed in the kernel; its backward asks the kernel for the arguments' gradients."""

        @staticmethod
        def forward(ctx, judge, handle, value, anchor, *inputs):
            ctx.judge, ctx.handle = judge, handle
            ctx.shapes = [(x.shape, x.dtype) for x in inputs]
            return value.detach().clone()

        @staticmethod
        def backward(ctx, grad_output):
            grads = ctx.judge.request({"op": "backward", "target": {"h": ctx.handle}},
                                      {"g": grad_output.detach().contiguous()})
            grads = grads if isinstance(grads, list) and len(grads) == len(ctx.shapes) else [None] * len(ctx.shapes)
            checked = [g if isinstance(g, torch.Tensor) and (g.shape, g.dtype) == shape else None
                       for g, shape in zip(grads, ctx.shapes)]
            return (None, None, None, None, *checked)

    return RemoteBackward


_RemoteBackward = _make_remote_backward()
