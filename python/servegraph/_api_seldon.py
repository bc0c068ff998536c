"""Seldon Core's and PrimeHub's API (`api: seldon`; the classes of `servegraph.compat.seldon`)."""

import numpy as np

from servegraph._adapter import construct, operation


class Seldon:
    """Seldon Core's and PrimeHub's API: `Model(model_uri=..., **params)`, `load()`, and
    `predict(X, feature_names, meta)` with X the one input (a dict when there are several).
    As Seldon's wrapper does, `load()` is called when the class has one, and a `predict` that
    does not take `meta` is called as `predict(X, feature_names)`."""

    name = "seldon"

    @staticmethod
    def detects(target, spec):
        """A class whose `predict` takes `X` (or `features`) first, or `feature_names`."""
        import inspect

        predict = getattr(target, "predict", None) if spec.get("class_name") else None
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
