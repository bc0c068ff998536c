"""servegraph's Python worker: runs one model (or step) for the engine, in its own process.

The engine spawns `python -m servegraph._worker` with this package first on PYTHONPATH, and
talks to it over the process's stdin/stdout in binary frames (below). Nothing is pickled
across the boundary: tensors travel as raw little-endian bytes and arrive here as read-only
NumPy arrays, so any CPython >= 3.9 with NumPy works, whatever the engine's version.

Before any user code runs, the worker takes the two pipes for itself and points file
descriptors 0 and 1 elsewhere (stdin at /dev/null, stdout at stderr), so a `print` in a model
goes to the engine's log instead of corrupting the frames.

Frame (little-endian): a 24-byte header
    u32 len (bytes after this field) | u8 kind | u8 flags | u16 n_tensors | u64 call_id
    | u32 n_requests | u32 meta_len
then per tensor
    u8 dtype | u8 ndim | u8 where (0: in this frame, 1: in shared memory) | u8 name_len
    | i64 dims[ndim] | u64 offset (into the payload, or the shared memory) | u64 nbytes
    | name (UTF-8)
then u32 rows[n_requests], then meta_len bytes of JSON, then zero padding to a multiple of 8,
then the payload (each tensor's bytes at its offset; BYTES elements as u32 length + bytes).

Shared memory: the engine hands the worker a memfd (`SERVEGRAPH_SHM=fd:len:depth`), split
into 2*depth equal slots. Inputs of 64 KiB or more arrive in request slot `id % depth` as
read-only views (valid for the call only: the slot is reused by a later call); outputs of
64 KiB or more are copied into response slot `depth + id % depth` when they fit, or, when an
output *is* a view of the shared memory (a model returning its input), sent as its offset
with no copy at all.
"""

import json
import os
import select
import signal
import struct
import sys
import threading
import time
import traceback

import numpy as np

from servegraph import ModelError

PROTOCOL = 1

HELLO, LOAD, LOADED, LOAD_ERROR, INFER, RESULT, ERROR, SHUTDOWN, CALL, REPLY = range(1, 11)

HEADER = struct.Struct("<IBBHQII")
TENSOR = struct.Struct("<BBBB")
TAIL = struct.Struct("<QQ")

# OIP datatype code -> (name, numpy dtype); 13 is BYTES (an object array of bytes).
DTYPES = {
    1: ("BOOL", np.dtype(np.bool_)),
    2: ("UINT8", np.dtype("<u1")),
    3: ("UINT16", np.dtype("<u2")),
    4: ("UINT32", np.dtype("<u4")),
    5: ("UINT64", np.dtype("<u8")),
    6: ("INT8", np.dtype("<i1")),
    7: ("INT16", np.dtype("<i2")),
    8: ("INT32", np.dtype("<i4")),
    9: ("INT64", np.dtype("<i8")),
    10: ("FP16", np.dtype("<f2")),
    11: ("FP32", np.dtype("<f4")),
    12: ("FP64", np.dtype("<f8")),
}
BYTES = 13
CODE_OF = {dt: code for code, (_, dt) in DTYPES.items()}
NAME_OF = {code: name for code, (name, _) in DTYPES.items()}
NAME_OF[BYTES] = "BYTES"


# --- shared memory -------------------------------------------------------------------------

SHM_MIN_BYTES = 64 << 10


class Arena:
    """The engine's memfd for this worker, mapped."""

    def __init__(self, spec):
        import mmap

        fd, size, depth = (int(x) for x in spec.split(":"))
        self.mm = mmap.mmap(fd, size)
        os.close(fd)
        self.size = size
        self.depth = depth
        self.slot = size // (2 * depth)
        self.base = np.frombuffer(self.mm, dtype=np.uint8).__array_interface__["data"][0]

    def view(self, dtype, dims, offset, nbytes):
        if offset + nbytes > self.size:
            raise ValueError("a tensor outside the shared memory")
        arr = np.frombuffer(self.mm, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        arr = arr.reshape(dims)
        arr.flags.writeable = False
        return arr

    def offset_of(self, arr):
        """Where a contiguous array lies in the mapping, or None."""
        if not arr.flags.c_contiguous:
            return None
        addr = arr.__array_interface__["data"][0]
        if self.base <= addr and addr + arr.nbytes <= self.base + self.size:
            return addr - self.base
        return None

    def response_slot(self, call_id):
        start = (self.depth + call_id % self.depth) * self.slot
        return start, start + self.slot


ARENA = None


# --- frames ------------------------------------------------------------------------------


class Input:
    """The engine's pipe, with a buffer of our own, so that the next call can be waited for
    by polling the pipe for a while (`spin_us`) before sleeping: waking a sleeping process
    on another CPU costs tens of microseconds on a VM."""

    def __init__(self, fd):
        self.fd = fd
        self.raw = os.fdopen(fd, "rb", buffering=0)
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.spin = 0.0
        self.last = 0.0

    def wait(self):
        """Polls for the next frame for up to `spin` seconds, unless one is buffered or the
        last call was slow (a slow model gains little and its CPU is better left to others)."""
        if self.spin <= 0 or self.start < self.end or self.last * 4 > self.spin:
            return
        until = time.perf_counter() + self.spin
        while time.perf_counter() < until:
            if select.select([self.fd], [], [], 0)[0]:
                return

    def read_exact(self, n):
        out = bytearray(n)
        view = memoryview(out)
        got = min(n, self.end - self.start)
        view[:got] = self.view[self.start : self.start + got]
        self.start += got
        while got < n:
            if n - got >= len(self.buf):
                r = self.raw.readinto(view[got:])
                if not r:
                    return None
                got += r
            else:
                r = self.raw.readinto(self.buf)
                if not r:
                    return None
                take = min(r, n - got)
                view[got : got + take] = self.view[:take]
                self.start, self.end = take, r
                got += take
        return out


def read_frame(stream):
    stream.wait()
    head = stream.read_exact(HEADER.size)
    if head is None:
        return None
    length, kind, _flags, n_tensors, call_id, n_requests, meta_len = HEADER.unpack(head)
    body = stream.read_exact(length - (HEADER.size - 4))
    if body is None:
        return None
    view = memoryview(body)
    pos = 0
    descs = []
    for _ in range(n_tensors):
        dtype, ndim, where, name_len = TENSOR.unpack_from(body, pos)
        pos += TENSOR.size
        dims = struct.unpack_from("<%dq" % ndim, body, pos)
        pos += 8 * ndim
        offset, nbytes = TAIL.unpack_from(body, pos)
        pos += TAIL.size
        name = bytes(view[pos : pos + name_len]).decode("utf-8")
        pos += name_len
        descs.append((name, dtype, dims, offset, nbytes, where))
    rows = list(struct.unpack_from("<%dI" % n_requests, body, pos))
    pos += 4 * n_requests
    meta = json.loads(bytes(view[pos : pos + meta_len])) if meta_len else {}
    pos += meta_len
    pos += (-pos - HEADER.size) % 8
    payload = view[pos:]
    tensors = {}
    for name, dtype, dims, offset, nbytes, where in descs:
        if where == 1:
            tensors[name] = ARENA.view(DTYPES[dtype][1], dims, offset, nbytes)
            continue
        raw = payload[offset : offset + nbytes]
        if dtype == BYTES:
            arr = decode_bytes(raw, dims)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[dtype][1]).reshape(dims)
            arr.flags.writeable = False
        tensors[name] = arr
    return kind, call_id, rows, meta, tensors


def decode_bytes(raw, dims):
    count = 1
    for d in dims:
        count *= d
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        out[i] = bytes(raw[pos : pos + n])
        pos += n
    return out.reshape(dims)


def encode_tensor(name, value):
    """(dtype code, dims, bytes) of an output, or a TypeError naming what does not fit."""
    arr = np.asarray(value)
    if arr.dtype.kind in ("O", "S", "U"):
        parts = []
        for item in arr.reshape(-1):
            if isinstance(item, str):
                item = item.encode("utf-8")
            elif isinstance(item, (bytes, bytearray, memoryview)):
                item = bytes(item)
            else:
                item = str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return BYTES, arr.shape, b"".join(parts)
    code = CODE_OF.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
    if code is None:
        raise TypeError("output `%s` has dtype %s, which has no OIP datatype" % (name, arr.dtype))
    arr = np.ascontiguousarray(arr, dtype=DTYPES[code][1])
    return code, arr.shape, arr


def json_default(value):
    """NumPy values in an operation's answer or a metric, as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8")
    raise TypeError("%s is not JSON: return dicts, lists, strings and numbers" % type(value).__name__)


def write_frame(stream, kind, call_id=0, meta=None, tensors=(), rows=()):
    meta_bytes = json.dumps(meta, default=json_default).encode("utf-8") if meta else b""
    descs = []
    payload = []
    offset = 0
    shm_next, shm_end = ARENA.response_slot(call_id) if ARENA is not None else (0, 0)
    for name, (code, dims, data) in tensors:
        nb = data.nbytes if isinstance(data, np.ndarray) else len(data)
        name_b = name.encode("utf-8")
        if isinstance(data, np.ndarray) and ARENA is not None and nb >= SHM_MIN_BYTES:
            at = ARENA.offset_of(data)
            if at is None and shm_next + nb <= shm_end:
                at = shm_next
                ARENA.mm[at : at + nb] = memoryview(data).cast("B")
                shm_next = (at + nb + 63) // 64 * 64
            if at is not None:
                descs.append(
                    TENSOR.pack(code, len(dims), 1, len(name_b))
                    + struct.pack("<%dq" % len(dims), *dims)
                    + TAIL.pack(at, nb)
                    + name_b
                )
                continue
        if isinstance(data, np.ndarray):
            data = memoryview(data).cast("B")
        descs.append(
            TENSOR.pack(code, len(dims), 0, len(name_b))
            + struct.pack("<%dq" % len(dims), *dims)
            + TAIL.pack(offset, nb)
            + name_b
        )
        payload.append(data)
        pad = (-nb) % 8
        if pad:
            payload.append(b"\0" * pad)
        offset += nb + pad
    head_rest = b"".join(descs) + struct.pack("<%dI" % len(rows), *rows) + meta_bytes
    pad = (-(HEADER.size + len(head_rest))) % 8
    head_rest += b"\0" * pad
    length = HEADER.size - 4 + len(head_rest) + offset
    stream.write(HEADER.pack(length, kind, 0, len(descs), call_id, len(rows), len(meta_bytes)))
    stream.write(head_rest)
    for p in payload:
        stream.write(p)
    stream.flush()


# --- loading user code ----------------------------------------------------------------------


def import_target(spec):
    import importlib
    import importlib.util

    for d in reversed(spec.get("python_path") or []):
        sys.path.insert(0, d)
    if spec.get("path"):
        path = spec["path"]
        sys.path.insert(0, os.path.dirname(path))
        name = "servegraph_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(spec["module"])
    attr = spec.get("class_name") or spec.get("function")
    if not hasattr(module, attr):
        what = "class" if spec.get("class_name") else "function"
        raise AttributeError("module `%s` has no %s `%s`" % (module.__name__, what, attr))
    return getattr(module, attr)


class Native:
    """servegraph's own API: `predict(inputs: dict[str, ndarray], parameters: dict)`."""

    def __init__(self, target, spec):
        self.batchable = False
        if spec.get("class_name"):
            kwargs = dict(spec.get("class_args") or {})
            uri = spec.get("model_uri")
            if uri is not None:
                kwargs.setdefault("model_uri", uri)
            self.obj = construct(target, kwargs)
            load = getattr(self.obj, "load", None)
            if callable(load):
                load()
            self.call = self.obj.predict
            self.batchable = bool(getattr(self.obj, "batchable", False))
            self.metadata = getattr(self.obj, "metadata", None)
        else:
            self.obj = None
            self.call = target
            self.metadata = None
            self.batchable = bool(getattr(target, "batchable", False))
            # Clipper's contract: a function of one argument takes the list of inputs (one per
            # row) and returns a list of outputs of the same length; rows are independent.
            self.clipper = takes_one(target)
            if self.clipper:
                self.batchable = True

    def operation(self, op, body):
        return operation(self.obj, op, body)

    def health_check(self):
        check = getattr(self.obj, "is_ready", None)
        return check if callable(check) else None

    def predict(self, inputs, parameters):
        if not getattr(self, "clipper", False):
            return self.call(inputs, parameters)
        if len(inputs) != 1:
            raise ModelError(
                "a one-argument function takes one input tensor (its rows are the list); got %d: %s"
                % (len(inputs), ", ".join(inputs)),
                status=400,
            )
        x = next(iter(inputs.values()))
        outputs = self.call(list(x))
        if len(outputs) != len(x):
            raise ValueError(
                "the function returned %d outputs for %d inputs (Clipper's contract: one each)"
                % (len(outputs), len(x))
            )
        if all(isinstance(o, (str, bytes)) for o in outputs):
            return np.array([o.encode() if isinstance(o, str) else o for o in outputs], dtype=object)
        return np.asarray(outputs)


def operation(obj, op, body, event=None):
    """Calls the class's `op_<op>`: with MLRun's event (`event(body)`) or the body itself."""
    if obj is None or not op.isidentifier():
        fn = None
    else:
        fn = getattr(obj, "op_" + op, None)
    if not callable(fn):
        raise ModelError("no operation `%s` (the class defines no `op_%s`)" % (op, op), status=404)
    return fn(event(body) if event else body)


def health_of(check):
    """What the engine's health probe gets: `{"ready", "message"}` from a check that returns
    a truth value (`is_ready()`) or raises when unhealthy (`health_status()`)."""
    try:
        answer = check()
    except Exception as exc:  # noqa: BLE001 - an unhealthy class says so by raising
        return {"ready": False, "message": "%s: %s" % (type(exc).__name__, exc)}
    if answer is False:
        return {"ready": False, "message": "is_ready() returned False"}
    return {"ready": True, "message": ""}


def takes_one(f):
    """Whether `f` takes exactly one positional argument (Clipper's batch-in, batch-out)."""
    import inspect

    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params)


class Seldon:
    """Seldon Core's and PrimeHub's API: `Model(model_uri=..., **params)`, `load()`, and
    `predict(X, feature_names, meta)` with X the one input (a dict when there are several).
    As Seldon's wrapper does, `load()` is called when the class has one, and a `predict` that
    does not take `meta` is called as `predict(X, feature_names)`."""

    def __init__(self, target, spec):
        kwargs = dict(spec.get("class_args") or {})
        if spec.get("model_uri") is not None:
            kwargs["model_uri"] = spec["model_uri"]
        self.obj = construct(target, kwargs)
        load = getattr(self.obj, "load", None)
        if callable(load):
            load()
        self.batchable = bool(getattr(self.obj, "batchable", False))
        self.metadata = getattr(self.obj, "init_metadata", None)

    def operation(self, op, body):
        return operation(self.obj, op, body)

    def health_check(self):
        check = getattr(self.obj, "health_status", None)
        return check if callable(check) else None

    def predict(self, inputs, parameters):
        x = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        names = parameters.get("feature_names") or []
        try:
            result = self.obj.predict(x, names, meta=parameters)
        except TypeError:
            result = self.obj.predict(x, names)
        # Tags reach the response's `parameters.tags`: the class's `tags()`, then a
        # SeldonResponse's own (which win, as in Seldon).
        tags = {}
        class_tags = getattr(self.obj, "tags", None)
        if callable(class_tags):
            tags.update(class_tags() or {})
        # Metrics reach /metrics: the class's `metrics()`, then a SeldonResponse's.
        metrics = []
        class_metrics = getattr(self.obj, "metrics", None)
        if callable(class_metrics):
            metrics.extend(class_metrics() or [])
        if hasattr(result, "data") and not isinstance(result, np.ndarray):
            tags.update(getattr(result, "tags", None) or {})
            metrics.extend(getattr(result, "metrics", None) or [])
            result = result.data  # a SeldonResponse
        self.tags = tags
        self.metrics_out = metrics
        return result if isinstance(result, dict) else np.asarray(result)


class MLRun:
    """MLRun's `V2ModelServer` API (`servegraph.compat.mlrun`): constructed with `context`,
    `name`, `model_path` and the class args, `load()`ed, then per request preprocess →
    validate → predict → postprocess on MLRun's body `{"id", "inputs"}`."""

    def __init__(self, target, spec):
        kwargs = dict(spec.get("class_args") or {})
        self.name = spec.get("step")
        self.obj = target(name=self.name, model_path=spec.get("model_uri"), **kwargs)
        self.obj.load()
        self.obj.ready = True
        self.batchable = bool(getattr(self.obj, "batchable", False))
        self.metadata = None

    def operation(self, op, body):
        from servegraph.compat.mlrun import Event

        path = "/v2/models/%s/%s" % (self.name, op)
        return operation(self.obj, op, body, lambda b: Event(b, path=path))

    def health_check(self):
        return None

    def predict(self, inputs, parameters):
        if len(inputs) != 1:
            raise ModelError(
                "an MLRun model takes one input tensor (its rows are `inputs`); got %d: %s"
                % (len(inputs), ", ".join(inputs)),
                status=400,
            )
        body = {"id": parameters.get("id"), "inputs": next(iter(inputs.values()))}
        op = parameters.get("operation") or "infer"
        self.obj.metrics = {}
        request = self.obj.preprocess(body, op)
        request = self.obj.validate(request, op) or request
        outputs = self.obj.explain(request) if op == "explain" else self.obj.predict(request)
        # `set_metric` values reach /metrics as gauges.
        self.metrics_out = [
            {"key": k, "type": "GAUGE", "value": v} for k, v in (self.obj.metrics or {}).items()
        ]
        response = {"id": body["id"], "model_name": self.name, "outputs": outputs}
        response = self.obj.postprocess(response)
        outputs = response["outputs"] if isinstance(response, dict) else response
        return outputs if isinstance(outputs, dict) else np.asarray(outputs)


def api_of(target, spec):
    """The calling convention: `api:` when given, else MLRun's for a `V2ModelServer`
    subclass, Seldon's when `predict` takes `X` or `feature_names`, else servegraph's."""
    import inspect

    api = spec.get("api") or "auto"
    if api != "auto":
        return api
    if isinstance(target, type) and any(c.__name__ == "V2ModelServer" for c in target.__mro__):
        return "mlrun"
    predict = getattr(target, "predict", None) if spec.get("class_name") else None
    if predict is None:
        return "servegraph"
    try:
        params = [p for p in inspect.signature(predict).parameters if p != "self"]
    except (TypeError, ValueError):
        return "servegraph"
    if params and params[0] in ("X", "features") or "feature_names" in params or "names" in params:
        return "seldon"
    return "servegraph"


def construct(cls, kwargs):
    """Calls `cls(**kwargs)`, leaving out `model_uri` when the constructor does not take it."""
    import inspect

    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return cls(**kwargs)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    if not takes_any and "model_uri" not in sig.parameters:
        kwargs.pop("model_uri", None)
    return cls(**kwargs)


def outputs_of(result, declared):
    """The result of `predict` as named tensors: a dict by name, or one array for the one
    declared output (or `output` when none is declared)."""
    if isinstance(result, dict):
        items = list(result.items())
    else:
        if len(declared) > 1:
            raise TypeError(
                "predict returned one array, but %d outputs are declared (%s): return a dict"
                % (len(declared), ", ".join(declared))
            )
        items = [(declared[0] if declared else "output", result)]
    return [(str(name), encode_tensor(str(name), value)) for name, value in items]


# --- the loop --------------------------------------------------------------------------------


def watch_parent(parent):
    """Exits when the engine is gone, even while a model call runs (the pipes' EOF is only
    seen between calls). Linux's parent-death signal covers it at once where ctypes can set
    it; polling covers the rest."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(1)

    def poll():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=poll, name="servegraph-parent-watch", daemon=True).start()


def error_meta(exc):
    """An exception as the engine reports it: the frames of the user's code only (the
    runtime's own are left out), the last six of them."""
    here = os.path.abspath(__file__)
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) != here]
    frames = ["Traceback (most recent call last):\n"]
    frames += traceback.format_list(tb[-6:])
    frames += traceback.format_exception_only(type(exc), exc)
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "status": getattr(exc, "status", 500),
        "traceback": "".join(frames),
    }


def main():
    global ARENA
    parent = int(os.environ.get("SERVEGRAPH_PARENT_PID", os.getppid()))
    watch_parent(parent)
    if os.environ.get("SERVEGRAPH_SHM"):
        ARENA = Arena(os.environ.pop("SERVEGRAPH_SHM"))
    # Take the pipes; user code's prints go to stderr (the engine's log).
    inp = Input(os.dup(0))
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    write_frame(
        out,
        HELLO,
        meta={
            "pid": os.getpid(),
            "python": "%d.%d.%d" % sys.version_info[:3],
            "numpy": np.__version__,
            "protocol": PROTOCOL,
        },
    )
    model = None
    declared = []
    while True:
        frame = read_frame(inp)
        if frame is None:
            return
        kind, call_id, _rows, meta, tensors = frame
        if kind == SHUTDOWN:
            return
        if kind == LOAD:
            try:
                target = import_target(meta)
                runner = {"seldon": Seldon, "mlrun": MLRun}.get(api_of(target, meta), Native)
                model = runner(target, meta)
                declared = [o["name"] for o in meta.get("outputs") or []]
                info = {"batchable": model.batchable, "health": model.health_check() is not None}
                if callable(model.metadata):
                    info["metadata"] = model.metadata()
                inp.spin = (meta.get("spin_us") or 0) / 1e6
                write_frame(out, LOADED, call_id, meta=info)
            except BaseException as exc:  # noqa: BLE001 - every load failure is reported
                write_frame(out, LOAD_ERROR, call_id, meta=error_meta(exc))
                return
        elif kind == CALL:
            try:
                if meta.get("op") == "$health":
                    result = health_of(model.health_check())
                else:
                    result = model.operation(meta.get("op") or "", meta.get("body"))
                write_frame(out, REPLY, call_id, meta={"result": result})
            except Exception as exc:  # noqa: BLE001 - the answer carries it; the worker goes on
                write_frame(out, ERROR, call_id, meta=error_meta(exc))
        elif kind == INFER:
            try:
                model.tags = None
                model.metrics_out = None
                started = time.perf_counter()
                result = model.predict(tensors, meta.get("parameters") or {})
                inp.last = time.perf_counter() - started
                extra = {}
                if model.tags:
                    extra["tags"] = model.tags
                if model.metrics_out:
                    extra["metrics"] = model.metrics_out
                write_frame(out, RESULT, call_id, meta=extra, tensors=outputs_of(result, declared))
            except Exception as exc:  # noqa: BLE001 - the answer carries it; the worker goes on
                write_frame(out, ERROR, call_id, meta=error_meta(exc))
            finally:
                tensors = None


if __name__ == "__main__":
    main()
