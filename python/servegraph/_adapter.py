"""What the worker's API adapters (`_api_*.py`, listed in `_apis.APIS`) share.

An adapter is a class constructed with the imported target (class or function) and the LOAD
frame's metadata (`spec`), with:
    name                      what `api:` calls it
    detects(target, spec)     (static) whether `api: auto` picks it for this target
    batchable, metadata       whether rows are independent; a callable answering the
                              model's metadata, or None
    predict(inputs, parameters) -> an array or a dict of arrays, or a `Body` (the answer as
                              it is, as a body); it may set `tags` (the response's
                              `parameters.tags`), `parameters_out` (more of the response's
                              `parameters`), `output_parameters_out` (outputs' own
                              `parameters`, by name) and `metrics_out` (into /metrics)
    operation(op, body)       a custom operation (`op_<op>`)
    health_check()            the class's health check, or None
and optionally:
    predict_body(body, parameters, explain, id)  a body of its protocol (`bodies`) answered
    status_of(exc)            the status of an exception the class raised (else its `status`;
                              None: the exception's own); with `bare_errors`, the message of
                              an exception it gives a status is the whole answer (MLServer's
                              `{"error": str(exc)}`)
    error_status              the status of any other exception of the class (MLRun's 400)
    unready                   why it is not ready once loaded (None: it is)
    takes_request             it reads the whole request: each call's headers, id
                              (`request_id`), inputs' parameters (`input_parameters`), the
                              outputs named (`requested_outputs`) and whether the caller
                              streams (`streaming`) are set on it before `predict`

Hooks a class may write as `async def` (KServe's, MLServer's) go through `awaited`: one event
loop per worker, made on first use, runs them.
"""

import datetime
import time

from servegraph import ModelError


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


def operation(obj, op, body, event=None):
    """Calls the class's `op_<op>`: with MLRun's event (`event(body)`) or the body itself."""
    if obj is None or not op.isidentifier():
        fn = None
    else:
        fn = getattr(obj, "op_" + op, None)
    if not callable(fn):
        raise ModelError("no operation `%s` (the class defines no `op_%s`)" % (op, op), status=404)
    return fn(event(body) if event else body)


# The worker's one event loop, made by the first `awaited` coroutine.
_loop = None


def awaited(value):
    """`value`, or what it resolves to when it is awaitable (an `async def` hook's coroutine),
    run to the end on the worker's event loop as a task of it (`asyncio.current_task()`,
    `asyncio.timeout`, anyio and the clients that need a task all work). The worker runs one
    call at a time, so the loop never runs two calls at once; a coroutine's own tasks
    (`asyncio.create_task`) live on between calls on the same loop.

    Most hooks never wait for anything, and a loop's `run_until_complete` costs ~9 us a call
    (two selector polls and its set-up), so the task is first run by hand: the loop set as
    the running one, the handles it has ready run in order (the task's first step among
    them, and whatever an earlier call left ready) until the task is done. Only a task that
    suspends (on a sleep, a timer, an executor, a socket) goes on under `run_until_complete`,
    from where it stopped. A loop without a ready queue (uvloop's) always takes the loop's
    own run."""
    global _loop, _set_running_loop
    if not hasattr(value, "__await__"):
        return value
    loop = _loop
    if loop is None:
        import asyncio
        import asyncio.events

        loop = _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        _set_running_loop = asyncio.events._set_running_loop
    ready = getattr(loop, "_ready", None)
    if ready is None or type(value) is not _CoroutineType:
        return loop.run_until_complete(value)
    task = loop.create_task(value)
    _set_running_loop(loop)
    try:
        while ready and not task.done():
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()
    finally:
        _set_running_loop(None)
    if not task.done():
        return loop.run_until_complete(task)
    return task.result()


async def _coroutine():
    pass


_c = _coroutine()
_CoroutineType = type(_c)
_c.close()
del _c


# asyncio's function `awaited` uses, bound with the loop.
_set_running_loop = None


class Body:
    """What `predict` answers when the answer is a body, as it is, rather than tensors (a
    KServe class's dict on a v2 request)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def health_of(check):
    """What the engine's health probe gets: `{"ready", "message"}` from a check that returns
    a truth value (`is_ready()`; its `not_ready` attribute, when it has one, says why it is
    False) or raises when unhealthy (`health_status()`)."""
    try:
        answer = check()
    except Exception as exc:  # noqa: BLE001 - an unhealthy class says so by raising
        return {"ready": False, "message": "%s: %s" % (type(exc).__name__, exc)}
    if answer is False:
        return {"ready": False, "message": getattr(check, "not_ready", "is_ready() returned False")}
    return {"ready": True, "message": ""}


def base_class(target, name, modules):
    """The class named `name`, defined in one of `modules`, that `target` (a class) derives
    from: the peer's base class (its own package's or servegraph's stand-in), or None."""
    if not isinstance(target, type):
        return None
    return next((c for c in target.__mro__ if c.__name__ == name and c.__module__ in modules), None)


def takes_one(f):
    """Whether `f` takes exactly one positional argument (Clipper's batch-in, batch-out)."""
    import inspect

    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params)


# The last second `utc_now_iso` formatted, and its text up to the seconds.
_second = (None, "")


def utc_now_iso():
    """`datetime.now(timezone.utc).isoformat(sep=" ", timespec="microseconds")` (MLRun's
    response timestamp, `2026-12-07 12:06:19.188339+00:00`) in a fraction of its time: the
    date and time to the second are formatted once a second."""
    global _second
    second, micros = divmod(time.time_ns() // 1000, 1000000)
    cached = _second
    if cached[0] != second:
        when = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
        cached = _second = (second, when.isoformat(sep=" ", timespec="seconds")[:-6])
    return "%s.%06d+00:00" % (cached[1], micros)
