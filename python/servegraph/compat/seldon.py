"""Seldon Core's Python model API, for classes written for `seldon_core.user_model`: replace

    from seldon_core.user_model import SeldonComponent, SeldonResponse

with

    from servegraph.compat.seldon import SeldonComponent, SeldonResponse

A plain class with `predict(X, feature_names, meta)` (PrimeHub's `Model`) needs no import at
all. The worker constructs the class with `model_uri=` and the step's `class_args`, calls
`load()`, and per request `predict(X, feature_names, meta)`.

Inside a servegraph worker whose interpreter has no `seldon_core`, the original lines work as
they are too: `servegraph._imports` answers `seldon_core` (`Storage`),
`seldon_core.user_model`, `seldon_core.storage`, `seldon_core.metrics` and
`seldon_core.flask_utils` with this module's classes and helpers.
"""

import logging
import os


class SeldonResponse:
    """A prediction with tags and metrics (Seldon's `SeldonResponse`)."""

    def __init__(self, data, tags=None, metrics=None):
        self.data = data
        self.tags = tags or {}
        self.metrics = metrics or []

    @classmethod
    def create(cls, data):
        """`data` as a SeldonResponse (itself when it is one)."""
        return data if isinstance(data, cls) else cls(data=data)


class SeldonComponent:
    """Seldon's base class (`seldon_core.user_model.SeldonComponent`), as Seldon has it: every
    method but `__init__` and `load` raises `SeldonNotImplementedError`, which Seldon's wrapper
    (and servegraph's) takes as "not there": default tags, `t:0`, `t:1`, ... names, no metrics,
    healthy."""

    def __init__(self, **kwargs):
        pass

    def load(self):
        pass


def _not_implemented(what):
    def method(self, *args, **kwargs):
        raise SeldonNotImplementedError("%s is not implemented" % what)

    method.__name__ = what
    return method


for _name, _what in (
    ("tags", "tags"),
    ("class_names", "class_names"),
    ("predict", "predict"),
    ("predict_raw", "predict_raw"),
    ("send_feedback_raw", "send_feedback_raw"),
    ("transform_input", "transform_input"),
    ("transform_input_raw", "transform_input_raw"),
    ("transform_output", "transform_output"),
    ("transform_output_raw", "transform_output_raw"),
    ("metrics", "metrics"),
    ("feature_names", "feature_names"),
    ("send_feedback", "send_feedback"),
    ("route", "route"),
    ("route_raw", "route_raw"),
    ("aggregate", "aggregate"),
    ("aggregate_raw", "aggregate_raw"),
    ("health_status", "health"),
    ("health_status_raw", "health_raw"),
    ("metadata", "metadata"),
    ("init_metadata", "init_metadata"),
):
    setattr(SeldonComponent, _name, _not_implemented(_what))


class SeldonMicroserviceException(Exception):
    """Seldon's error with an HTTP status (`seldon_core.flask_utils`): raised from `predict`,
    the answer has `status_code` (default 400) and the message."""

    status_code = 400

    def __init__(self, message, status_code=None, payload=None, reason="MICROSERVICE_BAD_DATA"):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.payload = payload
        self.reason = reason

    @property
    def status(self):
        """The answer's status, as servegraph's worker reads it."""
        return self.status_code

    def to_dict(self):
        return {"status": {"status": 1, "info": self.message, "code": -1, "reason": self.reason}}


class SeldonNotImplementedError(SeldonMicroserviceException):
    """What Seldon's base class raises for a method a component does not implement (400)."""

    status_code = 400

    def __init__(self, message):
        super().__init__(message)


_LOCAL_PREFIX = "file://"


class Storage:
    """Seldon's `seldon_core.Storage` (`seldon_core.storage`). servegraph has already fetched
    the step's `model_uri` into its model cache, so the class receives a local path, and
    `download` only has local paths to deal with."""

    @staticmethod
    def download(uri, out_dir=None):
        """The local folder or file of `uri` (a path or a `file://` URI): the path itself, or,
        with `out_dir`, `out_dir` with links to the path's contents (Seldon's behaviour).
        Remote URIs are refused: give them as the step's `model_uri`, which servegraph
        fetches."""
        uri = os.fspath(uri)
        local = uri[len(_LOCAL_PREFIX):] if uri.startswith(_LOCAL_PREFIX) else uri
        if "://" in local:
            raise ValueError(
                "Storage.download(%r): servegraph fetches remote `model_uri`s itself (s3://, "
                "gs://, az://, http(s)://) into its model cache, and the class receives the "
                "local path; give %r as the step's `model_uri` and pass the `model_uri` the "
                "class gets to Storage.download" % (uri, uri)
            )
        if not os.path.exists(local):
            raise FileNotFoundError("Storage.download(%r): no such file or folder" % uri)
        if out_dir is None:
            return local
        log = logging.getLogger("seldon_core.storage")
        log.info("Linking the contents of %s into %s", local, out_dir)
        os.makedirs(out_dir, exist_ok=True)
        sources = (
            [os.path.join(local, n) for n in sorted(os.listdir(local))]
            if os.path.isdir(local)
            else [local]
        )
        for src in sources:
            os.symlink(os.path.abspath(src), os.path.join(out_dir, os.path.basename(src)))
        return out_dir


# Seldon's custom metrics (`seldon_core.metrics`): what `metrics()` and a SeldonResponse's
# `metrics` list, each `{"type", "key", "value"}`; servegraph turns them into /metrics.
COUNTER = "COUNTER"
GAUGE = "GAUGE"
TIMER = "TIMER"


def _metric(kind, key, value):
    try:
        value + 1
    except TypeError:
        raise TypeError("a %s metric's value is a number; %r is not" % (kind, value)) from None
    return {"key": key, "type": kind, "value": value}


def create_counter(key, value):
    """A COUNTER metric: `value` is added to `key`'s counter."""
    return _metric(COUNTER, key, value)


def create_gauge(key, value):
    """A GAUGE metric: `key`'s gauge is set to `value`."""
    return _metric(GAUGE, key, value)


def create_timer(key, value):
    """A TIMER metric: `value` (milliseconds) is observed in `key`'s histogram."""
    return _metric(TIMER, key, value)


def validate_metrics(metrics):
    """Whether `metrics` is a list of metrics, each with `key`, a `type` among COUNTER, GAUGE
    and TIMER, and a numeric `value`."""
    if not isinstance(metrics, list):
        return False
    for metric in metrics:
        if not isinstance(metric, dict) or not {"key", "type", "value"} <= metric.keys():
            return False
        if metric["type"] not in (COUNTER, GAUGE, TIMER):
            return False
        try:
            metric["value"] + 1
        except TypeError:
            return False
    return True
