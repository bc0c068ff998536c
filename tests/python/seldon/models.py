"""Seldon Core components written as Seldon's documentation writes them (one import line:
`seldon_core.user_model`, served by servegraph's own when Seldon is not installed), driven by
tests/seldon.rs with Seldon's own request bodies."""

import numpy as np

from seldon_core.user_model import SeldonComponent, SeldonResponse


class Doubler:
    """A plain MODEL, as Seldon's docs' `MyModel` (no base class)."""

    def __init__(self, factor=2):
        self.factor = factor

    def predict(self, X, features_names):
        return np.asarray(X) * self.factor


class Kinds(SeldonComponent):
    """Answers text, a dict or bytes for the same kinds of request."""

    def predict(self, X, feature_names, meta=None):
        if isinstance(X, str):
            return X.upper()
        if isinstance(X, dict):
            return {"keys": sorted(X), "meta_tags": (meta or {}).get("tags", {})}
        if isinstance(X, bytes):
            return X[::-1]
        return SeldonResponse(np.asarray(X) + 1, tags={"kind": "array"}, metrics=[{"type": "COUNTER", "key": "kinds_calls", "value": 1}])

    def tags(self):
        return {"component": "kinds"}


class Raw(SeldonComponent):
    """`predict_raw` wins over `predict`, as in Seldon's wrapper."""

    def predict(self, X, feature_names):
        return ["predict was called"]

    def predict_raw(self, msg):
        values = msg["data"]["ndarray"]
        return {"data": {"names": ["sum"], "ndarray": [[sum(r)] for r in values]}, "meta": {"tags": {"raw": True}}}


class Scaler:
    """A TRANSFORMER: `transform_input` scales the features before the model."""

    def transform_input(self, X, feature_names, meta=None):
        return np.asarray(X) / 10.0


class Labeller:
    """An OUTPUT_TRANSFORMER: `transform_output` turns scores into labels."""

    def transform_output(self, X, feature_names):
        return np.where(np.asarray(X) > 0.5, "high", "low")


class Healthy(SeldonComponent):
    def predict(self, X, feature_names):
        return X

    def init_metadata(self):
        return {"name": "healthy", "versions": ["v1"], "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 2]}]}
