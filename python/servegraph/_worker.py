"""servegraph's Python worker: runs one model (or step) for the engine, in its own process.

The engine spawns `python -m servegraph._worker` with this package first on PYTHONPATH, and
talks to it over the process's stdin/stdout in binary frames (`_frames`), with large tensors
in shared memory (`_shm`). This module is the main loop: it greets the engine, loads the
user's code with the adapter of its API (`_apis`, `_api_*`) and answers calls until its input
ends.

Before any user code runs, the worker takes the two pipes for itself and points file
descriptors 0 and 1 elsewhere (stdin at /dev/null, stdout at stderr), so a `print` in a model
goes to the engine's log instead of corrupting the frames.
"""

import os
import signal
import sys
import threading
import time
import traceback

import numpy as np

from servegraph import _adapter, _apis, _frames, _imports, _shm
from servegraph._adapter import health_of
from servegraph import ModelError
from servegraph._apis import APIS, api_of, import_target, join_chunks, jsonable, outputs_of
from servegraph._frames import (
    CALL,
    CHUNK,
    ERROR,
    HELLO,
    INFER,
    LOAD,
    LOAD_ERROR,
    LOADED,
    PROTOCOL,
    QUICK,
    REPLY,
    RESULT,
    SHUTDOWN,
    Input,
    read_frame,
    write_frame,
)
from servegraph._shm import Arena

# The runtime's own files: their frames are left out of the tracebacks the engine reports.
RUNTIME_FILES = frozenset(
    os.path.abspath(m.__file__)
    for m in (_adapter, _apis, _frames, _imports, _shm, *(sys.modules[a.__module__] for a in APIS))
) | {os.path.abspath(__file__)}


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


def error_meta(exc, model=None):
    """An exception as the engine reports it: the frames of the user's code only (the
    runtime's own are left out), the last six of them. An exception that chooses no status
    gets the API's (`error_status`: MLRun answers its classes' exceptions with 400), marked
    as the step's own failure (its error handler still runs)."""
    tb = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.abspath(f.filename) not in RUNTIME_FILES
    ]
    frames = ["Traceback (most recent call last):\n"]
    frames += traceback.format_list(tb[-6:])
    frames += traceback.format_exception_only(type(exc), exc)
    # The API's status for the exception (KServe's table, MLServer's `status_code`), else its
    # own (`ModelError`'s).
    status_of = getattr(model, "status_of", None)
    status = status_of(exc) if status_of is not None else None
    meta = {
        "type": type(exc).__name__,
        "message": str(exc),
        "status": status if status is not None else getattr(exc, "status", 500),
        "traceback": "".join(frames),
    }
    if status is not None and getattr(model, "bare_errors", False):
        # An API's own error (MLServer's `MLServerError`): its message is the whole answer,
        # as that server's is.
        meta["bare"] = True
        return meta
    api_status = getattr(model, "error_status", None)
    if api_status and not hasattr(exc, "status"):
        meta["status"] = api_status
        meta["failed"] = True
    return meta


def main():
    parent = int(os.environ.get("SERVEGRAPH_PARENT_PID", os.getppid()))
    watch_parent(parent)
    arena = None
    if os.environ.get("SERVEGRAPH_SHM"):
        arena = Arena(os.environ.pop("SERVEGRAPH_SHM"))
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
    # `import mlrun` / `seldon_core` resolve to servegraph's stand-ins when not installed.
    _imports.install()
    times = os.environ.get("SERVEGRAPH_CALL_TIMES")
    if not times:
        return serve(inp, out, arena)
    import array

    _frames.CALL_TIMES = array.array("q")
    try:
        return serve(inp, out, arena)
    finally:
        with open(times, "wb") as f:
            f.write(_frames.CALL_TIMES.tobytes())


def serve(inp, out, arena):
    """The worker's loop: frames in, answers out, until SHUTDOWN or the end of the pipe."""
    model = None
    declared = []
    while True:
        frame = read_frame(inp, arena)
        if frame is None:
            return
        kind, call_id, _rows, meta, tensors = frame
        if kind == SHUTDOWN:
            return
        if kind == LOAD:
            try:
                target = import_target(meta)
                model = api_of(target, meta)(target, meta)
                declared = [o["name"] for o in meta.get("outputs") or []]
                check = model.health_check()
                info = {
                    "batchable": model.batchable,
                    "request": getattr(model, "takes_request", False),
                    "health": check is not None,
                    "bodies": getattr(model, "bodies", None),
                    "feedback": bool(getattr(model, "feedback", False)),
                }
                if getattr(model, "unready", None):
                    info["unready"] = model.unready
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
                elif meta.get("op") == "$seldon_health":
                    # Seldon's /health/status, for a class that is a Seldon component.
                    health = getattr(model, "seldon_health", None)
                    result = health() if health else None
                elif meta.get("op") == "$feedback":
                    # Seldon's feedback, for a class that takes it.
                    feedback = getattr(model, "send_feedback", None)
                    result = feedback(meta.get("body")) if feedback else None
                else:
                    result = model.operation(meta.get("op") or "", meta.get("body"))
                write_frame(out, REPLY, call_id, meta={"result": result}, flags=quick(inp))
            except Exception as exc:  # noqa: BLE001 - the answer carries it; the worker goes on
                write_frame(out, ERROR, call_id, meta=error_meta(exc, model), flags=quick(inp))
        elif kind == INFER:
            try:
                extra, outputs = infer(model, meta, tensors, declared, inp, out, call_id)
                write_result(out, call_id, extra, outputs, arena, quick(inp), model)
            except Exception as exc:  # noqa: BLE001 - the answer carries it; the worker goes on
                write_frame(out, ERROR, call_id, meta=error_meta(exc, model), flags=quick(inp))
            finally:
                tensors = None


def infer(model, meta, tensors, declared, inp, out, call_id):
    """An INFER call: the RESULT frame's JSON and its output tensors. A class written against
    bodies (MLRun's, Seldon's) gets the body and answers one; the rest get tensors."""
    model.tags = None
    model.metrics_out = None
    model.parameters_out = None
    model.output_parameters_out = None
    parameters = meta.get("parameters") or {}
    explain = bool(meta.get("explain"))
    started = time.perf_counter()
    extra = {}
    headers = meta.get("headers")
    if headers is not None:
        # The request's headers and id, for a class that takes them (KServe's, MLServer's),
        # and what else the request said beside its tensors.
        model.headers = headers
        model.request_id = meta.get("id")
        model.input_parameters = meta.get("input_parameters")
        model.requested_outputs = meta.get("requested_outputs")
        model.grpc = bool(meta.get("grpc"))
        model.streaming = bool(meta.get("stream"))
    if "body" in meta:
        # An error handler's class also learns the failure it runs for. The answer goes as it
        # is: the frame's encoder takes what JSON carries (NumPy's values too), and
        # `write_result` turns to `jsonable` only when it refuses.
        model.failure = meta.get("error")
        extra["body"] = model.predict_body(meta["body"], parameters, explain, meta.get("id"))
        outputs = []
    else:
        if explain:
            result = explain_of(model, tensors, parameters)
        else:
            result = model.predict(tensors, parameters)
        if type(result) is _adapter.Body:
            # The answer is a body, as it is (a KServe class's dict on a v2 request).
            extra["body"] = result.value
            result = {}
        elif _apis.is_stream(result):
            # A `predict` that yields: each piece to the engine as it comes when the caller
            # streams, and the pieces joined as the answer.
            pieces = []
            for piece in result:
                piece = _apis.named(piece, declared)
                if meta.get("stream"):
                    write_frame(out, CHUNK, call_id, tensors=outputs_of(piece, declared))
                pieces.append(piece)
            result = join_chunks(pieces)
        outputs = outputs_of(result, declared)
    inp.last = time.perf_counter() - started
    if explain:
        extra["explained"] = True
    if model.tags:
        extra["tags"] = model.tags
    if model.metrics_out:
        extra["metrics"] = model.metrics_out
    if model.parameters_out:
        extra["parameters"] = model.parameters_out
    if model.output_parameters_out:
        extra["output_parameters"] = model.output_parameters_out
    return extra, outputs


def quick(inp):
    """The answer's flags: `QUICK` when polling for this worker's answers pays."""
    return QUICK if inp.last * 4 <= inp.spin else 0


def write_result(out, call_id, extra, outputs, arena, flags, model=None):
    """The RESULT frame. A body JSON cannot carry as it is (a NumPy integer's key, a set) goes
    through `jsonable` (the API's own, when it has one: KServe's writes datetimes as its server
    does), which also names what JSON cannot carry at all; nothing was written before the
    frame's JSON was made, so the retry starts clean."""
    try:
        write_frame(out, RESULT, call_id, meta=extra, tensors=outputs, arena=arena, flags=flags)
    except TypeError:
        if "body" not in extra:
            raise
        extra["body"] = getattr(model, "jsonable", jsonable)(extra["body"])
        write_frame(out, RESULT, call_id, meta=extra, tensors=outputs, arena=arena, flags=flags)


def explain_of(model, tensors, parameters):
    """An `/explain`: the adapter's `explain`, or a 400 naming what the class lacks."""
    explain = getattr(model, "explain", None)
    if explain is None:
        target = getattr(model, "obj", None) or getattr(model, "call", None)
        name = getattr(target, "__name__", None) or type(target).__name__
        raise ModelError("`%s` cannot explain: it has no `explain()`" % name, status=400)
    return explain(tensors, parameters)


if __name__ == "__main__":
    main()
