"""The data format between the trusted judge and the student's kernel, and the kernel's half.

Everything that crosses is data: a JSON tree (at most ``MAX_JSON`` bytes) plus tensors in one
safetensors file (at most ``MAX_TENSORS`` bytes). Neither format can carry code; the judge never
unpickles anything the kernel wrote. An object that is not data (a module, a function, a
generator) stays in the kernel and crosses as a numbered handle; the judge reaches its
attributes and methods through further requests.

JSON tree tags (a plain JSON value is itself): ``{"f": "nan"|"inf"|"-inf"}`` a float,
``{"t": key, ...}`` a tensor, ``{"l": [...]}`` a list, ``{"u": [...]}`` a tuple,
``{"d": [[key, value], ...]}`` a dict, ``{"h": id, "type": "module.Class"}`` a handle,
``{"dtype": "float32"}`` a torch dtype, ``{"m": "Linear", ...}`` a standard torch layer (sent by
value, judge to kernel only), ``{"e": {...}}`` an exception raised by the student's code.
"""

from __future__ import annotations

MAX_JSON = 8 * 2**20
MAX_TENSORS = 512 * 2**20

# The kernel's half, sent to the kernel as source once per run and kept in sys.modules. It runs in
# the student's process, which the student controls: nothing here is trusted, and nothing needs to
# be. It decides only what the student's functions return, as their own code would.
KERNEL_SOURCE = r'''
import json as _json, math as _math, sys as _sys, traceback as _traceback, types as _types
import torch as _torch
from safetensors.torch import load_file as _load, save_file as _save

_objects = {}
_ids = {}
_DTYPES = {str(d).split(".")[-1]: d for d in (_torch.float16, _torch.bfloat16, _torch.float32, _torch.float64,
           _torch.int8, _torch.int16, _torch.int32, _torch.int64, _torch.uint8, _torch.bool, _torch.complex64)}
_LAYERS = {"Linear", "Embedding", "LayerNorm", "Dropout"}


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
    if t is float:
        return obj if _math.isfinite(obj) else {"f": repr(obj)}
    if isinstance(obj, _torch.Tensor):
        key = f"r{len(tensors)}"
        tensors[key] = _torch.Tensor.contiguous(_torch.Tensor.clone(_torch.Tensor.detach(obj))).as_subclass(_torch.Tensor)
        node = {"t": key}
        if obj.requires_grad:
            node["grad"] = True
        if isinstance(obj, _torch.nn.Parameter):
            node["param"] = True
        return node
    if t is _torch.Generator:
        return _enc(obj.get_state(), tensors)
    if t in (list, tuple):
        return {"l" if t is list else "u": [_enc(x, tensors) for x in obj]}
    if t is _torch.Size:
        return {"u": [int(x) for x in obj]}
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
    if "gen" in node:
        generator = _torch.Generator()
        generator.set_state(tensors[node["gen"]])
        return generator
    if "m" in node:
        kind = node["m"]
        assert kind in _LAYERS
        layer = getattr(_torch.nn, kind)(*node["args"], **node["kwargs"])
        with _torch.no_grad():
            for name, key in node["state"].items():
                getattr(layer, name).copy_(tensors[key])
        layer.train(node["training"])
        return layer
    raise ValueError(f"unknown node {sorted(node)}")


def serve(call):
    """Serve the call whose request files start with ``call`` (the fallback without the socket)."""
    request = _json.loads(open(f"{call}.req.json").read())
    try:
        tensors = _load(f"{call}.req.safetensors")
    except Exception:
        tensors = {}
    answer, out_tensors = handle(request, tensors)
    if out_tensors:
        _save(out_tensors, f"{call}.res.safetensors")
    with open(f"{call}.res.json", "w") as f:
        f.write(_json.dumps(answer))


def handle(request, tensors):
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
            else:
                args = _dec(request["args"], tensors)
                kwargs = _dec(request["kwargs"], tensors)
                if "rng" in tensors:
                    _torch.set_rng_state(tensors["rng"])
                with _torch.set_grad_enabled(request.get("grad", True)):
                    value = target(*args, **kwargs)
                out_tensors["rng"] = _torch.get_rng_state()
                # Changes made in place to the tensors passed in go back too (a test may check them).
                inputs = [x for x in _flatten(args) + _flatten(list(kwargs.values()))
                          if isinstance(x, (_torch.Tensor, _torch.Generator))]
                result_args = [_enc(x, out_tensors) for x in inputs]
            result = _enc(value, out_tensors)
            if op == "call":
                result = {"value": result, "args": result_args}
        answer = {"ok": result}
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the judge
        tb = _traceback.format_exception(type(exc), exc, exc.__traceback__)
        # Drop the frames of this bridge: the student sees where their own code failed.
        tb = [line for line in tb if "<course-grading-bridge>" not in line]
        answer = {"e": {"type": type(exc).__name__, "message": str(exc)[:4000], "traceback": "".join(tb)[-8000:],
                        "stop": isinstance(exc, StopIteration)}}
        out_tensors = {}
    return answer, out_tensors


def start_server(path):
    """Answer the judge's calls over a Unix socket, from a thread (no trip through IPython per call).

    Each message is two 8-byte lengths, the request's JSON and its safetensors bytes; the answer has
    the same form. The judge only calls between cells, when the kernel's main thread is idle.
    """
    import os as _os, socket as _socket, struct as _struct, threading as _threading

    server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    _os.rename(path + ".tmp", path)
    server.listen(1)

    def receive(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    from safetensors.torch import load as _load_bytes, save as _save_bytes

    def loop():
        conn, _ = server.accept()
        try:
            while True:
                (n_json, n_tensors) = _struct.unpack("!QQ", receive(conn, 16))
                request = _json.loads(receive(conn, n_json).decode())
                tensors = _load_bytes(receive(conn, n_tensors)) if n_tensors else {}
                answer, out_tensors = handle(request, tensors)
                data = _json.dumps(answer).encode()
                blob = _save_bytes(out_tensors) if out_tensors else b""
                conn.sendall(_struct.pack("!QQ", len(data), len(blob)) + data + blob)
        except (EOFError, OSError):
            pass

    _threading.Thread(target=loop, name="course-grading-bridge", daemon=True).start()


def _flatten(items):
    flat = []
    for x in items:
        if type(x) in (list, tuple):
            flat += _flatten(x)
        else:
            flat.append(x)
    return flat
'''
