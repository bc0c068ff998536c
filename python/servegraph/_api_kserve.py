"""KServe's `Model` API (`api: kserve`): KServe's own `kserve.Model` when `kserve` is installed
in the model's interpreter, else `servegraph.compat.kserve`'s."""

import dataclasses
import datetime
import enum
import inspect
import uuid

import numpy as np

from servegraph import ModelError
from servegraph._adapter import Body, awaited, base_class
from servegraph.compat.kserve_infer import from_np_dtype

# The statuses KServe's server answers its exceptions with (its exception handlers), by the
# exception's class (and its bases), when the class is KServe's or Python's own.
STATUS = {
    "InvalidInput": 400,
    "ModelNotFound": 404,
    "InferenceError": 500,
    "NotImplementedError": 501,
    "UnsupportedProtocol": 501,
    "ModelNotReady": 503,
    "ServerNotReady": 503,
    "ServerNotLive": 503,
}
_STATUS_MODULES = frozenset(("kserve.errors", "servegraph.compat.kserve_errors", "builtins"))

# Where KServe's `Model` is: KServe's own package, or servegraph's stand-in.
_BASES = frozenset(("kserve.model", "servegraph.compat.kserve"))


def kserve_base(target):
    """The KServe `Model` class `target` subclasses (KServe's own or the stand-in's), or None."""
    return base_class(target, "Model", _BASES)


def status_of(exc):
    """The status KServe's server answers `exc` with: an HTTP exception's own `status_code`
    (FastAPI's `HTTPException`), a `ModelError`'s status, KServe's table (`STATUS`), else
    500."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    if isinstance(exc, ModelError):
        return exc.status
    for cls in type(exc).__mro__:
        status = STATUS.get(cls.__name__)
        if status and cls.__module__ in _STATUS_MODULES:
            return status
    return 500


class Hooks:
    """A model's hooks as KServe's `Model.__call__` runs them: `preprocess(payload, headers)`
    → `validate(payload)` → `predict(payload, headers)` (or `explain`) →
    `postprocess(result, headers)`, each awaited when it is an `async def`; `predict` and
    `postprocess` also get `response_headers` when the model was constructed with
    `return_response_headers=True`. KServe's own `preprocess`, `validate` and `postprocess`
    (which hand their argument back, as they do without a predictor) are skipped. Which hooks
    are coroutines is found once: a call whose hooks are all plain functions runs without
    the event loop."""

    def __init__(self, obj, base):
        def own(name):
            hook = getattr(obj, name)
            if name not in vars(obj) and getattr(type(obj), name) is getattr(base, name):
                return None
            return hook

        self.obj = obj
        self.pre, self.validate, self.post = own("preprocess"), own("validate"), own("postprocess")
        self.predict, self.explain = obj.predict, obj.explain
        coroutine = inspect.iscoroutinefunction
        self.pre_async = coroutine(self.pre)
        self.post_async = coroutine(self.post)
        self.predict_async = coroutine(self.predict)
        self.explain_async = coroutine(self.explain)
        # Whether a call of each verb needs the event loop.
        self.loop_for = {
            False: self.pre_async or self.predict_async or self.post_async,
            True: self.pre_async or self.explain_async or self.post_async,
        }
        # A class that overrides `predict` alone, as a plain function (most do): each call is
        # that one call.
        self.alone = not (self.pre or self.validate or self.post or self.predict_async)

    async def chain(self, body, headers, explain, response_headers):
        """KServe's `Model.__call__`: `(response, response_headers)`."""
        payload = body
        if self.pre is not None:
            payload = await self.pre(payload, headers) if self.pre_async else self.pre(payload, headers)
        if self.validate is not None:
            payload = self.validate(payload)
        respond = getattr(self.obj, "required_response_headers", False)
        if explain:
            call = self.explain(payload, headers)
            result = await call if self.explain_async else call
        else:
            call = self.predict(payload, headers, response_headers) if respond else self.predict(payload, headers)
            result = await call if self.predict_async else call
        if self.post is not None:
            call = self.post(result, headers, response_headers) if respond else self.post(result, headers)
            result = await call if self.post_async else call
        return result, response_headers

    def run(self, body, headers, explain):
        """The response to `body`: on the worker's event loop when a hook is a coroutine, else
        at once (the chain then never suspends)."""
        if self.alone and not explain and not getattr(self.obj, "required_response_headers", False):
            return self.predict(body, headers)
        chain = self.chain(body, headers, explain, {})
        if self.loop_for[explain]:
            return awaited(chain)[0]
        try:
            chain.send(None)
        except StopIteration as done:
            return done.value[0]
        chain.close()
        raise RuntimeError("a KServe call with no coroutine hooks suspended")


# The OIP's datatype of each NumPy dtype a tensor arrives with.
_DATATYPES = {
    np.dtype(t): name
    for name, t in (
        ("BOOL", np.bool_),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("FP16", np.float16),
        ("FP32", np.float32),
        ("FP64", np.float64),
    )
}


def _is_response(value):
    """An `InferResponse` (KServe's or the stand-in's)."""
    return type(value).__name__ == "InferResponse" and hasattr(value, "to_rest")


def _stream(value):
    return inspect.isasyncgen(value) or inspect.isgenerator(value)


def _text(item):
    """A BYTES element as KServe's REST hands it: text (bytes that are not UTF-8 as they are)."""
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            return item
    return item


def _is_oip_output(o):
    return isinstance(o, dict) and "name" in o and "datatype" in o and "shape" in o and "data" in o


def kserve_json(value):
    """An answer as KServe's server writes it (orjson): datetimes, dates and times in ISO 8601
    (RFC 3339), UUIDs as text, enums by their value, dataclasses as objects, NumPy's values as
    numbers and lists, keys as text; anything JSON cannot carry is a TypeError naming it."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): kserve_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [kserve_json(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return kserve_json(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return kserve_json(dataclasses.asdict(value))
    if isinstance(value, np.ndarray):
        return kserve_json(value.tolist())
    from servegraph._apis import jsonable

    return jsonable(value)


class KServe:
    """KServe's `Model` API: `Model(name, **class_args)` (the name is the step's; `model_dir`,
    when the constructor takes it, is the step's `model_uri`), `load()` unless the constructor
    made it `ready`, then per request the hooks as KServe runs them (`Hooks`). A KServe v1
    request (`/v1/models/m:predict`, `:explain`) hands the class its JSON body as it came and
    answers what the class returns as it is; any other request (the OIP's `/v2`, gRPC, Kafka)
    hands it an `InferRequest` of the request's tensors and answers an `InferResponse` (or an
    OIP response dict) as the outputs."""

    name = "kserve"
    # The protocol whose bodies it takes as they came (`predict_body`).
    bodies = "kserve"

    @staticmethod
    def detects(target, spec):
        """A subclass of `kserve.Model` (KServe's own or the stand-in's)."""
        return kserve_base(target) is not None

    def __init__(self, target, spec):
        base = kserve_base(target)
        if base is None:
            raise TypeError(
                "`%s` is not a subclass of kserve.Model, which `api: kserve` serves"
                % getattr(target, "__name__", target)
            )
        kwargs = dict(spec.get("class_args") or {})
        name = kwargs.pop("name", None) or spec.get("step")
        uri = spec.get("model_uri")
        if uri is not None and "model_dir" not in kwargs and _takes(target, "model_dir"):
            kwargs["model_dir"] = uri
        self.obj = obj = target(name, **kwargs)
        if getattr(obj, "engine", False):
            raise TypeError(
                "`%s` is a KServe engine model (`engine = True`: its `start_engine()` runs "
                "beside KServe's server), which servegraph does not serve" % target.__name__
            )
        # KServe's server registers the models its caller loaded (a model file's `__main__`
        # calls `load()`, or the constructor does), then `start()`s them.
        if not obj.ready:
            awaited(obj.load())
        if obj.ready:
            obj.start()
        # A model still not `ready` is not ready: readiness asks `healthy()` from now on.
        self.unready = (
            None if obj.ready else "its `ready` is False after load() (KServe's `healthy()`)"
        )
        if base.__module__ == "kserve.model":
            from kserve.protocol.infer_type import InferInput, InferRequest
        else:
            from servegraph.compat.kserve_infer import InferInput, InferRequest
        self.InferInput, self.InferRequest = InferInput, InferRequest
        self.hooks = Hooks(obj, base)
        self.batchable = bool(getattr(obj, "batchable", False))
        self.metadata = None
        self.base = base
        # Set by the worker before each call: the request's headers, its id, its inputs' own
        # parameters (by name), and whether it came over gRPC.
        self.headers, self.request_id, self.input_parameters = {}, None, None
        self.grpc = False

    def operation(self, op, body):
        from servegraph._adapter import operation

        return operation(self.obj, op, body)

    def health_check(self):
        """`healthy()` (KServe's: `self.ready`), False with why when it says no."""
        obj = self.obj
        if getattr(type(obj), "healthy") is getattr(self.base, "healthy"):
            def check():
                return bool(obj.ready)
        else:
            def check():
                return bool(awaited(obj.healthy()))

        check.not_ready = "its `ready` is False (KServe's `healthy()`)"
        return check

    status_of = staticmethod(status_of)
    jsonable = staticmethod(kserve_json)

    # -- KServe's v1: the body as it came, the answer as it is ---------------------------

    def predict_body(self, body, parameters, explain, event_id):
        result = self.hooks.run(body, self.headers, explain)
        if _is_response(result):
            rest, json_length = result.to_rest()
            if json_length is not None:
                raise ModelError(
                    "the class answered a KServe v1 request with an InferResponse of binary "
                    "outputs, which a v1 answer (JSON) cannot carry",
                    status=500,
                )
            return rest
        if _stream(result):
            raise ModelError("a streamed answer (a generator) is not served for KServe classes", status=501)
        return result

    # -- everything else: an InferRequest of the tensors, the answer as tensors ----------

    def predict(self, inputs, parameters):
        return self._outputs(self.hooks.run(self._request(inputs, parameters), self.headers, False))

    def explain(self, inputs, parameters):
        return self._outputs(self.hooks.run(self._request(inputs, parameters), self.headers, True))

    def _request(self, inputs, parameters):
        """The tensors as KServe's REST hands a v2 request: `InferInput`s whose `data` is the
        flat list of elements (BYTES as text) and whose `parameters` are the request's for that
        input (`{}` without), and the request's parameters (None without); over gRPC as its
        gRPC server does (`from_grpc`, BYTES as bytes)."""
        make = self.InferInput
        own = self.input_parameters
        grpc = self.grpc
        infer_inputs = []
        for name, array in inputs.items():
            if array.dtype == object:
                data = [bytes(v) if grpc else _text(v) for v in array.reshape(-1)]
                datatype = "BYTES"
            else:
                data = array.reshape(-1).tolist()
                datatype = _DATATYPES.get(array.dtype) or from_np_dtype(array.dtype)
            # Without parameters of its own an input has `{}` over REST, None over gRPC (as
            # KServe hands them).
            given = own.get(name) if own else None
            if given:
                given = dict(given)
            elif not grpc:
                given = {}
            infer_inputs.append(make(name, list(array.shape), datatype, data, given))
        return self.InferRequest(
            self.obj.name,
            infer_inputs,
            request_id=self.request_id,
            parameters=parameters or None,
            from_grpc=grpc,
        )

    def _outputs(self, result):
        """What the class answered, as outputs: an `InferResponse`'s (or an OIP response
        dict's) by name, with its `parameters` as the response's; an array or a list as
        `output-0` (as `get_predict_response` names it; a list of strings a BYTES output). Any
        other dict is the answer as it is."""
        if _is_response(result):
            if result.parameters:
                self.parameters_out = dict(result.parameters)
            outputs, own = {}, False
            for o in result.outputs:
                outputs[o.name] = o.as_numpy()
                own = own or bool(o.parameters)
            if own:
                self._output_parameters((o.name, o.parameters) for o in result.outputs)
            return outputs
        if isinstance(result, dict):
            outputs = result.get("outputs")
            if isinstance(outputs, list) and outputs and all(_is_oip_output(o) for o in outputs):
                from servegraph.compat.kserve_infer import to_np_dtype

                if result.get("parameters"):
                    self.parameters_out = dict(result["parameters"])
                self._output_parameters((o["name"], o.get("parameters")) for o in outputs)
                return {
                    o["name"]: np.array(o["data"], dtype=to_np_dtype(o["datatype"])).reshape(o["shape"])
                    for o in outputs
                }
            return Body(result)
        if _stream(result):
            raise ModelError("a streamed answer (a generator) is not served for KServe classes", status=501)
        if isinstance(result, list) and result and isinstance(result[0], str):
            return {"output-0": np.array(result, dtype=object)}
        if isinstance(result, (np.ndarray, np.generic, list, tuple, int, float, bool)):
            return {"output-0": np.asarray(result)}
        raise TypeError(
            "the class answered a %s: a v2 answer is an InferResponse, an OIP response dict, "
            "a dict (answered as it is) or an array" % type(result).__name__
        )

    def _output_parameters(self, pairs):
        """The outputs' own parameters, for the response (`binary_data_size` is the engine's
        to say: it encodes the outputs)."""
        own = None
        for name, given in pairs:
            if given:
                kept = {k: v for k, v in dict(given).items() if k != "binary_data_size"}
                if kept:
                    own = own or {}
                    own[name] = kept
        self.output_parameters_out = own


def _takes(cls, parameter):
    """Whether `cls`'s constructor takes `parameter` by name."""
    try:
        return parameter in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
