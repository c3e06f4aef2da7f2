"""The data format between the trusted judge and the student's kernel, and the kernel's half.

What the kernel sends the judge is data only: a JSON tree (at most ``MAX_JSON`` bytes) plus
tensors in one safetensors file (at most ``MAX_TENSORS`` bytes). Neither format can carry code;
the judge never unpickles anything the kernel wrote. An object of the student's that is not data
(a module, a function, a generator) stays in the kernel and crosses as a numbered handle; the judge
reaches its attributes and methods through further requests.

What the judge sends the kernel (the arguments of a call) may be richer, since the kernel runs
whatever it is given anyway: a pickle (``{"pk": key}``, its bytes a uint8 tensor) whose tensors,
generators, the student's handles and the grader's own functions travel beside it as persistent
ids. Models, optimizers and configs built by a test arrive in the kernel as copies; after the call,
the kernel reports their state (parameters, gradients, training flags, optimizer state) as data,
and the judge copies it back into its own objects. A function of the grader's, or a layer whose
class the sandbox hides (the reference the exercise asks for), stays in the judge: in the kernel it
is a proxy whose call comes back to the judge over the socket (a callback), so its code never runs
in the student's process. Gradients do not flow through a callback.

JSON tree tags (a plain JSON value is itself): ``{"f": "nan"|"inf"|"-inf"}`` a float,
``{"t": key, ...}`` a tensor, ``{"l": [...]}`` a list, ``{"u": [...]}`` a tuple,
``{"d": [[key, value], ...]}`` a dict, ``{"h": id, "type": "module.Class"}`` a handle,
``{"dtype": "float32"}`` a torch dtype, ``{"pk": key}`` a pickle (judge to kernel only),
``{"e": {...}}`` an exception. A message from the kernel with ``"cb"`` is a callback; with
``"ok"`` or ``"e"``, the answer to the judge's request.
"""

from __future__ import annotations

MAX_JSON = 8 * 2**20
MAX_TENSORS = 512 * 2**20

KERNEL_SOURCE = r'''
import builtins as _builtins, io as _io, json as _json, math as _math, pickle as _pickle, struct as _struct
import sys as _sys, traceback as _traceback
import torch as _torch
from safetensors.torch import load_file as _load, save_file as _save

_objects = {}
_ids = {}
_conn = None  # the socket to the judge, while a request is served over it
_result_inputs = None  # while a call's result is encoded: the arguments it may be differentiated by
_backward = {}  # handle of a result with a graph -> the arguments its gradient goes to
_DTYPES = {str(d).split(".")[-1]: d for d in (_torch.float16, _torch.bfloat16, _torch.float32, _torch.float64,
           _torch.int8, _torch.int16, _torch.int32, _torch.int64, _torch.uint8, _torch.bool, _torch.complex64)}


def _handle(obj):
    key = id(obj)
    if key not in _ids or _objects.get(_ids[key]) is not obj:
        _ids[key] = len(_objects) + 1
        _objects[_ids[key]] = obj
    t = type(obj)
    return {"h": _ids[key], "type": f"{t.__module__}.{t.__qualname__}"}


def _enc(obj, tensors):
    t = type(obj)
    if obj is None or t in (bool, int, str):
        return obj
    if isinstance(obj, float):  # numpy.float64 too: it is a float, as a test's isinstance() sees it
        obj = float(obj)
        return obj if _math.isfinite(obj) else {"f": repr(obj)}
    if isinstance(obj, (bool, int, str)):  # subclasses (an IntEnum, numpy.bool_ is not one)
        return (bool if isinstance(obj, bool) else int if isinstance(obj, int) else str)(obj)
    if isinstance(obj, _torch.Tensor):
        key = f"r{len(tensors)}"
        tensors[key] = _torch.Tensor.contiguous(_torch.Tensor.clone(_torch.Tensor.detach(obj))).as_subclass(_torch.Tensor)
        node = {"t": key}
        if obj.requires_grad:
            node["grad"] = True
        if isinstance(obj, _torch.nn.Parameter):
            node["param"] = True
        if obj.is_leaf and obj.grad is not None:  # a test may read parameter.grad
            node["g"] = _enc(obj.grad, tensors)
        if obj.grad_fn is not None and _result_inputs is not None:
            # Keep it: the judge may call backward() on its copy, which comes back here.
            node["node"] = _handle(obj)["h"]
            node["inputs"] = _result_inputs[1]
            _backward[node["node"]] = _result_inputs[0]
        return node
    if t is _torch.Generator:
        return _enc(obj.get_state(), tensors)
    if t is _torch.Size:
        return {"u": [int(x) for x in obj]}
    if isinstance(obj, (list, tuple)):  # a namedtuple is a tuple, as in one process
        return {"l" if isinstance(obj, list) else "u": [_enc(x, tensors) for x in obj]}
    if t is dict:
        return {"d": [[_enc(k, tensors), _enc(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, _torch.dtype):
        return {"dtype": str(obj).split(".")[-1]}
    return _handle(obj)


def _dec(node, tensors):
    if not isinstance(node, dict):
        return node
    if "f" in node:
        return float(node["f"])
    if "t" in node:
        flat = tensors[node["t"]]
        if "stride" in node:
            flat = flat.as_strided(node["size"], node["stride"])
        if node.get("grad"):
            flat.requires_grad_(True)
        return flat
    if "l" in node:
        return [_dec(x, tensors) for x in node["l"]]
    if "u" in node:
        return tuple(_dec(x, tensors) for x in node["u"])
    if "d" in node:
        return {_dec(k, tensors): _dec(v, tensors) for k, v in node["d"]}
    if "h" in node:
        return _objects[node["h"]]
    if "dtype" in node:
        return _DTYPES[node["dtype"]]
    if "pk" in node:
        return _Unpickler(tensors).load_from(tensors[node["pk"]])
    raise ValueError(f"unknown node {sorted(node)}")


class _GraderFunction:
    # A function of the grader's: calling it asks the judge to run it (a callback).
    def __init__(self, jid, name):
        self._jid, self._name = jid, name

    def __call__(self, *args, **kwargs):
        return _call_judge(self._jid, args, kwargs)

    def __repr__(self):
        return f"<the grader's {self._name}>"


class _GraderModule(_torch.nn.Module):
    # A layer of the grader's whose code the sandbox hides: its parameters are here (they count and
    # can be read), its forward runs in the judge.
    def forward(self, *args, **kwargs):
        return _call_judge(self._grader_jid, args, kwargs)

    def extra_repr(self):
        return f"the grader's {self._grader_type} (its code runs in the grader)"


class _Unpickler(_pickle.Unpickler):
    def __init__(self, tensors):
        self._tensors, self._memo, self.handles = tensors, {}, set()
        self.iterables = {}  # id of a generator made here -> the items it yields (for the state report)

    def load_from(self, blob):
        super().__init__(_io.BytesIO(blob.numpy().tobytes()))
        return self.load()

    def persistent_load(self, pid):
        kind = pid[0]
        if kind == "h":
            obj = _objects[pid[1]]
            self.handles.add(id(obj))
            return obj
        key = (kind, pid[1])
        if key in self._memo:
            return self._memo[key]
        if kind == "t":
            _, name, size, stride, grad, requires_grad, param = pid
            x = self._tensors[name]
            if stride is not None:
                x = x.as_strided(size, stride)
            if param:
                x = _torch.nn.Parameter(x, requires_grad=requires_grad)
            elif requires_grad:
                x.requires_grad_(True)
            if grad is not None:
                x.grad = self._tensors[grad]
        elif kind == "gen":
            x = _torch.Generator()
            x.set_state(self._tensors[pid[1]])
        elif kind == "iter":  # what the grader passed as a generator (model.parameters()): a generator
            items = list(pid[2])
            x = (item for item in items)
            self.iterables[id(x)] = items
        elif kind == "jfn":
            x = _GraderFunction(pid[1], pid[2])
        elif kind == "jmod":
            _, jid, type_name, params, buffers, modules, training, attributes = pid
            x = _GraderModule()
            x._grader_jid, x._grader_type = jid, type_name
            for name, value in params.items():
                x._parameters[name] = value
            for name, value in buffers.items():
                x._buffers[name] = value
            for name, value in modules.items():
                x._modules[name] = value
            for name, value in attributes.items():
                setattr(x, name, value)
            x.training = training
        else:
            raise _pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        self._memo[key] = x
        return x


def _stateful(obj, out, skip, iterables):
    # What a call may change in place, in the order the judge lists its own copies; ``skip``: the
    # ids of the student's own objects among the arguments (the judge holds no copy of them).
    t = type(obj)
    if t in (list, tuple):
        for x in obj:
            _stateful(x, out, skip, iterables)
    elif t is dict:
        for x in obj.values():
            _stateful(x, out, skip, iterables)
    elif id(obj) in iterables:
        _stateful(iterables[id(obj)], out, skip, iterables)
    elif id(obj) in skip:
        pass
    elif isinstance(obj, (_torch.Tensor, _torch.Generator, _torch.nn.Module, _torch.optim.Optimizer)):
        out.append(obj)


def _report(obj, tensors):
    # The state of one object the judge passed in, as data.
    def tensor(x):
        grad = x.grad if x.is_leaf else None
        return {"x": _enc(x, tensors), "g": None if grad is None else _enc(grad, tensors),
                "rg": bool(x.requires_grad)}
    if isinstance(obj, _torch.Tensor):
        return tensor(obj)
    if isinstance(obj, _torch.Generator):
        return {"gen": _enc(obj.get_state(), tensors)}
    if isinstance(obj, _torch.nn.Module):
        return {"p": [[n, tensor(p)] for n, p in obj.named_parameters()],
                "b": [[n, _enc(b, tensors)] for n, b in obj.named_buffers()],
                "tr": [[n, bool(m.training)] for n, m in obj.named_modules()]}
    return {"o": _enc(obj.state_dict(), tensors)}


def _call_judge(jid, args, kwargs):
    # Ask the judge to run its object ``jid``; serve the judge's own requests while waiting.
    if _conn is None:
        raise RuntimeError("the grader's function cannot be reached (the grading bridge has no connection)")
    tensors = {}
    message = {"cb": jid, "args": _enc(list(args), tensors), "kwargs": _enc(dict(kwargs), tensors),
               "grad": _torch.is_grad_enabled()}
    conn = _conn
    _send(conn, message, tensors)
    while True:
        request, request_tensors = _recv(conn)
        if "op" in request:
            _send(conn, *handle(request, request_tensors))
            continue
        if "e" in request:
            error = request["e"]
            base = getattr(_builtins, str(error.get("type")), None)
            if not (isinstance(base, type) and issubclass(base, Exception)):
                base = RuntimeError
            raise base(f"{error.get('message')}")
        return _dec(request.get("ok"), request_tensors)


def serve(call):
    # Serve the call whose request files start with ``call`` (the fallback without the socket).
    request = _json.loads(open(f"{call}.req.json").read())
    try:
        tensors = {k: v.clone() for k, v in _load(f"{call}.req.safetensors").items()}
    except Exception:
        tensors = {}
    answer, out_tensors = handle(request, tensors)
    if out_tensors:
        _save(out_tensors, f"{call}.res.safetensors")
    with open(f"{call}.res.json", "w") as f:
        f.write(_json.dumps(answer))


def handle(request, tensors):
    global _result_inputs
    out_tensors = {}
    try:
        op = request["op"]
        if op == "lookup":
            ns = _sys.modules["__main__"].__dict__
            result = {"d": [[n, _enc(ns[n], out_tensors)] for n in request["names"] if n in ns]}
        else:
            target = _dec(request["target"], tensors)
            if op == "getattr":
                value = getattr(target, request["name"])
            elif op == "setattr":
                setattr(target, request["name"], _dec(request["value"], tensors))
                value = None
            elif op == "backward":
                inputs = _backward.get(request["target"]["h"], [])
                grad_output = tensors["g"]
                grads = _torch.autograd.grad(target, inputs, grad_output, retain_graph=True,
                                             allow_unused=True) if inputs else []
                # The student's own parameters get their gradients too, as backward() gives them.
                _torch.autograd.backward(target, grad_output, retain_graph=True)
                value = list(grads)
            else:
                unpickler = _Unpickler(tensors)
                args, kwargs = unpickler.load_from(tensors[request["args"]["pk"]])
                if "rng" in tensors:
                    _torch.set_rng_state(tensors["rng"])
                with _torch.set_grad_enabled(request.get("grad", True)):
                    value = target(*args, **kwargs)
                out_tensors["rng"] = _torch.get_rng_state()
                # What the call changed in the objects passed in goes back too (a test may check it).
                changed = []
                _stateful([args, kwargs], changed, unpickler.handles, unpickler.iterables)
                result_state = [_report(x, out_tensors) for x in changed]
                differentiable = [i for i, x in enumerate(changed) if isinstance(x, _torch.Tensor) and x.requires_grad]
                _result_inputs = ([changed[i] for i in differentiable], differentiable)
            try:
                result = _enc(value, out_tensors)
            finally:
                _result_inputs = None
            if op == "call":
                result = {"value": result, "state": result_state}
        answer = {"ok": result}
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the judge
        tb = _traceback.format_exception(type(exc), exc, exc.__traceback__)
        # Drop the frames of this bridge: the student sees where their own code failed.
        tb = [line for line in tb if "<course-grading-bridge>" not in line]
        base = next((c.__name__ for c in type(exc).__mro__ if getattr(_builtins, c.__name__, None) is c), "Exception")
        answer = {"e": {"type": type(exc).__name__, "base": base, "message": str(exc)[:4000],
                        "traceback": "".join(tb)[-8000:], "stop": isinstance(exc, StopIteration)}}
        out_tensors = {}
    return answer, out_tensors


def _receive(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _recv(conn):
    from safetensors.torch import load as _load_bytes
    (n_json, n_tensors) = _struct.unpack("!QQ", _receive(conn, 16))
    message = _json.loads(_receive(conn, n_json).decode())
    # Loaded tensors are views of one buffer; some in-place operations refuse views (detach_()).
    tensors = _load_bytes(_receive(conn, n_tensors)) if n_tensors else {}
    return message, {k: v.clone() for k, v in tensors.items()}


def _send(conn, message, tensors):
    from safetensors.torch import save as _save_bytes
    data = _json.dumps(message).encode()
    blob = _save_bytes(tensors) if tensors else b""
    conn.sendall(_struct.pack("!QQ", len(data), len(blob)) + data + blob)


def start_server(path):
    # Answer the judge's calls over a Unix socket, from a thread (no trip through IPython per call).
    # Each message is two 8-byte lengths, the JSON and the safetensors bytes. The judge only calls
    # between cells, when the kernel's main thread is idle.
    import os as _os, socket as _socket, threading as _threading

    server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    _os.rename(path + ".tmp", path)
    server.listen(1)

    def loop():
        global _conn
        conn, _ = server.accept()
        _conn = conn
        try:
            while True:
                request, tensors = _recv(conn)
                _send(conn, *handle(request, tensors))
        except (EOFError, OSError):
            pass
        finally:
            _conn = None

    _threading.Thread(target=loop, name="course-grading-bridge", daemon=True).start()
'''
