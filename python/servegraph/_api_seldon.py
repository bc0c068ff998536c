"""Seldon Core's and PrimeHub's API (`api: seldon`): Seldon's own `SeldonComponent` when
`seldon_core` is installed in the model's interpreter, else `servegraph.compat.seldon`'s, or a
plain class with `predict(X, feature_names, meta)`."""

import base64
import json

import numpy as np

from servegraph import ModelError
from servegraph._adapter import construct, operation

# What each role calls (`role:` in the graph, or a router's or ensemble's Seldon class):
# Seldon's method, and the low-level forms that take the message itself, in the precedence
# Seldon's wrapper gives them over REST (`*_rest`, deprecated, then `*_raw`).
ROLES = {
    "model": ("predict", ("predict_rest", "predict_raw")),
    "transformer": ("transform_input", ("transform_input_rest", "transform_input_raw")),
    "output_transformer": ("transform_output", ("transform_output_rest", "transform_output_raw")),
    "router": ("route", ("route_rest", "route_raw")),
    "combiner": ("aggregate", ("aggregate_rest", "aggregate_raw")),
}
FEEDBACK_RAW = ("send_feedback_rest", "send_feedback_raw")


def not_implemented(exc):
    """Seldon's `SeldonNotImplementedError` (its base class's methods raise it): the wrapper
    then goes on as if the method were not there."""
    return type(exc).__name__ == "SeldonNotImplementedError"


class Seldon:
    """Seldon Core's and PrimeHub's API: `Model(model_uri=..., **params)`, `load()`, and per
    request, as Seldon's wrapper (`seldon_core.seldon_methods`) does: the `*_raw` method of the
    role when the class has one (the message in, the message out), else `predict(X,
    feature_names, meta)` (`transform_input`, `transform_output` for those roles; without
    `meta` when it does not take it) with X from the message's `data.ndarray`, `data.tensor`,
    `jsonData`, `strData` or `binData`, answered as Seldon's `construct_response_json` shapes
    it. OIP requests hand X the one input tensor (a dict when there are several)."""

    name = "seldon"
    # The protocol whose bodies it takes as they came (`predict_body`).
    bodies = "seldon"

    @staticmethod
    def detects(target, spec):
        """A class whose `predict` takes `X` (or `features`) first, or `feature_names`; or any
        class with a Seldon `role:` or a `*_raw` method."""
        import inspect

        if not spec.get("class_name"):
            return False
        if spec.get("role") or any(hasattr(target, r) for _, raws in ROLES.values() for r in raws):
            return True
        predict = getattr(target, "predict", None)
        if predict is None:
            return False
        try:
            params = [p for p in inspect.signature(predict).parameters if p != "self"]
        except (TypeError, ValueError):
            return False
        return bool(
            params and params[0] in ("X", "features") or "feature_names" in params or "names" in params
        )

    def __init__(self, target, spec):
        kwargs = dict(spec.get("class_args") or {})
        if spec.get("model_uri") is not None:
            kwargs["model_uri"] = spec["model_uri"]
        self.step = spec.get("step")
        self.role = spec.get("role") or "model"
        self.method, self.raws = ROLES[self.role]
        self.obj = construct(target, kwargs)
        load = getattr(self.obj, "load", None)
        if callable(load):
            load()
        if self.role in ("model", "router", "combiner") and not any(
            callable(getattr(self.obj, m, None)) for m in (self.method,) + self.raws
        ):
            hint = ""
            if self.role == "model":
                for method, where in (
                    ("transform_input", "give the step `role: transformer`"),
                    ("transform_output", "give the step `role: output_transformer`"),
                    ("route", "make it a router's `policy: {type: seldon, ...}`"),
                    ("aggregate", "make it an ensemble's `combine: seldon` class"),
                ):
                    if callable(getattr(self.obj, method, None)):
                        hint = "; it has `%s`: %s" % (method, where)
                        break
            raise TypeError(
                "class `%s` has no `%s` (nor %s): a Seldon %s needs one%s"
                % (
                    target.__name__,
                    self.method,
                    " or ".join("`%s`" % r for r in self.raws),
                    self.role.upper(),
                    hint,
                )
            )
        self.batchable = bool(getattr(self.obj, "batchable", False))
        # Whether the class has a low-level form of its role's method (looked for once, after
        # `load()`: Seldon's wrapper looks on every call, for methods no class adds later).
        self.raw = any(callable(getattr(self.obj, r, None)) for r in self.raws)
        # Seldon's feedback reaches the class when it takes it.
        self.feedback = any(
            callable(getattr(self.obj, m, None)) for m in ("send_feedback",) + FEEDBACK_RAW
        )
        self.metadata = None
        if callable(getattr(self.obj, "init_metadata", None)):
            self.metadata = lambda: call_optional(self.obj, "init_metadata") or {}

    def operation(self, op, body):
        return operation(self.obj, op, body)

    def health_check(self):
        """The class's `health_status()`, when it has one; Seldon's base class's (which says
        it is not implemented) counts as healthy, as in Seldon."""
        if not callable(getattr(self.obj, "health_status", None)):
            return None
        return lambda: call_optional(self.obj, "health_status")

    # -- the message path (Seldon's protocol) -------------------------------------------

    def _call_raw(self, message, raws=None):
        """The role's low-level method (`*_rest`, else `*_raw`), unless the class has none (or
        `*_raw` says it is not implemented); `None` then."""
        for name in raws or self.raws:
            raw = getattr(self.obj, name, None)
            if not callable(raw):
                continue
            try:
                return raw(message)
            except Exception as exc:  # noqa: BLE001 - Seldon's fallback, exactly
                if not_implemented(exc) and name.endswith("_raw"):
                    return None
                raise
        return None

    def _call(self, x, names, meta):
        """The role's method as Seldon's `client_*` calls it: with `meta`, then without on a
        TypeError; a role method the class lacks passes X through (transformers) or is a 500."""
        method = getattr(self.obj, self.method, None)
        if not callable(method):
            if self.role in ("model", "router", "combiner"):
                raise ModelError("class has no `%s`" % self.method, status=500)
            return x
        try:
            try:
                return method(x, names, meta=meta)
            except TypeError:
                return method(x, names)
        except Exception as exc:  # noqa: BLE001 - Seldon's fallback, exactly
            if not_implemented(exc):
                return [] if self.role == "model" else x
            raise

    def predict_body(self, message, parameters, explain, event_id):
        if explain:
            raise ModelError("a Seldon component cannot explain (Seldon serves explainers apart)", status=400)
        answer = self._call_raw(message) if self.raw else None
        if answer is not None:
            self.metrics_out = ((answer.get("meta") or {}).get("metrics") if isinstance(answer, dict) else None)
            return answer
        if self.role == "combiner":
            return self._aggregate(message)
        x, meta, datadef = request_parts(message)
        names = (datadef or {}).get("names") or []
        result = self._call(x, names, meta)
        data, tags, metrics = self._unpack(result)
        if self.role == "router":
            if isinstance(data, (bool, np.bool_)) or not isinstance(data, (int, np.integer)):
                raise ModelError("Routing response must be int but got " + str(data), status=500)
            data = np.array([[int(data)]])
            meta = None
        return response_json(self.obj, message, data, meta, metrics, tags)

    def _aggregate(self, message):
        """A COMBINER: `aggregate(features_list, feature_names_list)` over the members'
        messages (Seldon's `SeldonMessageList`: `{"seldonMessages": [...]}`)."""
        messages = message.get("seldonMessages") if isinstance(message, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ModelError("a combiner takes `seldonMessages`, a list of messages", status=400)
        features, names = [], []
        for m in messages:
            x, _, datadef = request_parts(m)
            features.append(x)
            names.append((datadef or {}).get("names") or [])
        aggregate = getattr(self.obj, "aggregate")
        data, tags, metrics = self._unpack(aggregate(features, names))
        return response_json(self.obj, messages[0], data, None, metrics, tags)

    def seldon_health(self):
        """Seldon's `/health/status`: `health_status_raw()`, else `health_status()` (or
        "healthy") as Seldon's wrapper answers it."""
        raw = getattr(self.obj, "health_status_raw", None)
        if callable(raw):
            try:
                return raw()
            except Exception as exc:  # noqa: BLE001 - Seldon's fallback, exactly
                if not not_implemented(exc):
                    raise
        health = getattr(self.obj, "health_status", None)
        if callable(health):
            try:
                data = health()
            except Exception as exc:  # noqa: BLE001 - Seldon's fallback, exactly
                if not not_implemented(exc):
                    raise
                data = "not implemented - assuming healthy"
        else:
            data = "healthy"
        return response_json(self.obj, {}, data, None, [], {})

    def send_feedback(self, body):
        """Seldon's feedback: `send_feedback_raw(feedback)` when the class has it, else
        `send_feedback(features, feature_names, reward, truth, routing=...)` with the request's
        features when the feedback carried them."""
        body = body or {}
        answer = self._call_raw(body, FEEDBACK_RAW)
        if answer is not None:
            return answer
        method = getattr(self.obj, "send_feedback", None)
        if not callable(method):
            return None
        request = body.get("request") or {}
        try:
            x, _, datadef = request_parts(request)
            names = (datadef or {}).get("names") or []
        except ModelError:
            x, names = np.array([]), []
        truth = body.get("truth")
        if truth is not None:
            truth, _, _ = request_parts(truth)
        try:
            method(x, names, body.get("reward"), truth, routing=body.get("routing"))
        except Exception as exc:  # noqa: BLE001 - Seldon's fallback, exactly
            if not not_implemented(exc):
                raise
        return None

    def _unpack(self, result):
        """A SeldonResponse's data, tags and metrics (with the class's `tags()`/`metrics()`,
        the response's winning, as in Seldon)."""
        # (The optional methods are called through `call_optional` only when the class has
        # them: a look-up that misses is cheap, a Python call is not.)
        obj = self.obj
        tags = dict(call_optional(obj, "tags") or {}) if callable(getattr(obj, "tags", None)) else {}
        runtime = []
        if type(result).__name__ == "SeldonResponse":
            tags.update(getattr(result, "tags", None) or {})
            runtime = list(getattr(result, "metrics", None) or [])
            result = result.data
        # Seldon's `client_custom_metrics`: the response's metrics, then the class's, each
        # checked (a bad one fails the request with 500, as in Seldon).
        class_metrics = None
        if callable(getattr(obj, "metrics", None)):
            class_metrics = call_optional(obj, "metrics")
        for metrics in (runtime, class_metrics):
            if metrics is not None and metrics != [] and not valid_metrics(metrics):
                raise ModelError(
                    "Bad metric created during request: %s" % json.dumps(metrics, default=str),
                    status=500,
                )
        metrics = list(class_metrics or []) + runtime if class_metrics or runtime else []
        self.metrics_out = metrics
        return result, tags, metrics

    # -- the tensor path (OIP requests) -------------------------------------------------

    def predict(self, inputs, parameters):
        x = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        names = parameters.get("feature_names") or []
        if self.raw:
            # The raw method takes Seldon's message: the request as one, its answer's data back.
            message = {"data": {"names": list(names), "ndarray": np.asarray(x).tolist()}, "meta": {}}
            answer = self._call_raw(message)
            if answer is not None:
                return tensor_of(answer)
        result = self._call(x, names, parameters)
        result, tags, _ = self._unpack(result)
        self.tags = tags
        if isinstance(result, dict):
            return result
        if self.role != "model" and len(inputs) == 1:
            # A transformer's answer stands for the tensor it transformed.
            return {next(iter(inputs)): np.asarray(result)}
        return np.asarray(result)


def valid_metrics(metrics):
    """Seldon's `validate_metrics`: a list of `{"key", "type": COUNTER|GAUGE|TIMER, "value"}`
    with a numeric value."""
    if not isinstance(metrics, list):
        return False
    for m in metrics:
        if not isinstance(m, dict) or not {"key", "type", "value"} <= m.keys():
            return False
        if m["type"] not in ("COUNTER", "GAUGE", "TIMER"):
            return False
        if isinstance(m["value"], bool) or not isinstance(m["value"], (int, float, np.number)):
            return False
    return True


def call_optional(obj, name):
    f = getattr(obj, name, None)
    if not callable(f):
        return None
    try:
        return f()
    except Exception as exc:  # noqa: BLE001
        if not_implemented(exc):
            return None
        raise


def request_parts(message):
    """X, meta and `data` of a SeldonMessage, as Seldon's `extract_request_parts_json`."""
    if not isinstance(message, dict):
        raise ModelError("Invalid request data type: %r" % (message,), status=400)
    meta = message.get("meta")
    datadef = None
    if "data" in message:
        datadef = message["data"]
        if "tensor" in datadef:
            tensor = datadef["tensor"]
            x = np.array(tensor["values"]).reshape(tensor["shape"])
        elif "ndarray" in datadef:
            x = np.array(datadef["ndarray"])
        else:
            x = np.array([])
    elif "jsonData" in message:
        x = message["jsonData"]
    elif "strData" in message:
        x = message["strData"]
    elif "binData" in message:
        x = base64.b64decode(message["binData"])
    else:
        raise ModelError("Invalid request data type: %r" % (message,), status=400)
    return x, meta, datadef


def class_names(obj, predictions):
    """Seldon's `client_class_names`: the class's `class_names()` for a 2-D answer, else
    `t:0`, `t:1`, ...; none for 1-D."""
    if predictions.ndim > 1:
        names = getattr(obj, "class_names", None)
        if callable(names):
            names = call_optional(obj, "class_names")
        if names is not None:
            return list(names)
        return default_names(predictions.shape[1])
    return []


# Seldon's names for the columns a class does not name, by count (shared: never changed).
_DEFAULT_NAMES = {}


def default_names(n):
    """`t:0`, `t:1`, ... (the same list each time for a count: the answer is only encoded)."""
    names = _DEFAULT_NAMES.get(n)
    if names is None:
        names = ["t:%d" % i for i in range(n)]
        if len(_DEFAULT_NAMES) < 64:
            _DEFAULT_NAMES[n] = names
    return names


def response_json(obj, request, data, meta, metrics, tags):
    """The answer as Seldon's `construct_response_json` builds it."""
    response = {}
    if isinstance(data, dict):
        response["jsonData"] = data
    elif isinstance(data, (bytes, bytearray)):
        response["binData"] = base64.b64encode(bytes(data)).decode("utf-8")
    elif isinstance(data, str):
        response["strData"] = data
    else:
        if not isinstance(data, (np.ndarray, list)):
            raise ModelError(
                "Unknown data type returned as payload (must be list or np array):" + str(data),
                status=500,
            )
        arr = data if isinstance(data, np.ndarray) else np.array(data)
        as_list = data.tolist() if isinstance(data, np.ndarray) else data
        # np.issubdtype(dtype, np.number)'s answer, sooner: signed (timedelta64 among them),
        # unsigned, float, complex.
        numeric = arr.dtype.kind in "iufcm"
        if "data" in request:
            if numeric and "tensor" in request["data"]:
                kind, value = "tensor", {"values": arr.ravel().tolist(), "shape": list(arr.shape)}
            else:
                kind, value = "ndarray", as_list
        elif numeric:
            kind, value = "tensor", {"values": arr.ravel().tolist(), "shape": list(arr.shape)}
        else:
            kind, value = "ndarray", as_list
        response["data"] = {kind: value, "names": class_names(obj, arr)}
    out_meta = {}
    if meta or tags or metrics:
        tags_out = dict((meta or {}).get("tags") or {})
        tags_out.update(tags or {})
        metrics_out = list((meta or {}).get("metrics") or [])
        metrics_out.extend(metrics or [])
        if tags_out:
            out_meta["tags"] = tags_out
        if metrics_out:
            out_meta["metrics"] = metrics_out
    request_meta = request.get("meta")
    puid = request_meta.get("puid") if request_meta else None
    if puid:
        out_meta["puid"] = puid
    request_path = (meta.get("requestPath") or {}) if meta else None
    if request_path:
        out_meta["requestPath"] = request_path
    response["meta"] = out_meta
    return response


def tensor_of(message):
    """The data of a Seldon answer, for an OIP response."""
    if not isinstance(message, dict):
        raise ModelError("the raw method returned a %s, not a SeldonMessage" % type(message).__name__)
    if "data" in message:
        x, _, _ = request_parts(message)
        return x
    if "jsonData" in message:
        return message["jsonData"]
    if "strData" in message:
        return np.array([message["strData"].encode()], dtype=object)
    if "binData" in message:
        return np.array([base64.b64decode(message["binData"])], dtype=object)
    raise ModelError("the raw method's answer has no `data`, `jsonData`, `strData` or `binData`")
