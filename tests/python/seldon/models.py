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

    def health_status(self):
        return [1, 2]

    def init_metadata(self):
        return {
            "name": "healthy",
            "versions": ["v1"],
            "custom": {"author": "tests"},
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 2]}],
        }


class BestRouter:
    """A ROUTER: by the features until feedback arrives, then the route rewarded most (it
    learns through `send_feedback`, as Seldon's epsilon-greedy router does)."""

    def __init__(self, n_branches=2):
        self.rewards = [0.0] * int(n_branches)

    def route(self, features, feature_names):
        if any(self.rewards):
            return int(np.argmax(self.rewards))
        return 1 if float(np.asarray(features).sum()) > 10 else 0

    def send_feedback(self, features, feature_names, reward, truth, routing=None):
        self.rewards[routing] += reward


class Everyone:
    """A ROUTER sending every request to all its children (`-1`)."""

    def route(self, features, feature_names):
        return -1


class Nobody:
    """A ROUTER answering the request itself (`-2`)."""

    def route(self, features, feature_names):
        return -2


class Averager:
    """A COMBINER: the mean of its members' answers."""

    def aggregate(self, features_list, feature_names_list):
        return np.mean([np.asarray(f) for f in features_list], axis=0)


class Rewarded:
    """A MODEL that learns from `send_feedback`: it answers the rewards it got so far and the
    features and truth of the last feedback."""

    def __init__(self):
        self.total = 0.0
        self.last = None

    def predict(self, X, feature_names):
        return {"total": self.total, "last": self.last}

    def send_feedback(self, features, feature_names, reward, truth, routing=None):
        self.total += reward
        self.last = [np.asarray(features).tolist(), np.asarray(truth).tolist()]


class BadMetrics(SeldonComponent):
    """A metric of a type Seldon does not have: Seldon fails the request (500)."""

    def predict(self, X, feature_names):
        return SeldonResponse(X, metrics=[{"type": "BAD", "key": "k", "value": 1}])


class TransformOnly:
    """A transformer served without its `role:`."""

    def transform_input(self, X, feature_names):
        return X


class UsesProto:
    """Imports Seldon's protobuf module for its type hints; uses a message only when asked."""

    from seldon_core.proto import prediction_pb2

    def predict(self, X, feature_names):
        if float(X[0][0]) < 0:
            return self.prediction_pb2.SeldonMessage()
        return X
