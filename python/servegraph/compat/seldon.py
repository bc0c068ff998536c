"""Seldon Core's Python model API, for classes written for `seldon_core.user_model`: replace

    from seldon_core.user_model import SeldonComponent, SeldonResponse

with

    from servegraph.compat.seldon import SeldonComponent, SeldonResponse

A plain class with `predict(X, feature_names, meta)` (PrimeHub's `Model`) needs no import at
all. The worker constructs the class with `model_uri=` and the step's `class_args`, calls
`load()`, and per request `predict(X, feature_names, meta)`.
"""


class SeldonResponse:
    """A prediction with tags and metrics (Seldon's `SeldonResponse`)."""

    def __init__(self, data, tags=None, metrics=None):
        self.data = data
        self.tags = tags or {}
        self.metrics = metrics or []


class SeldonComponent:
    """Seldon's base class: every method optional."""

    def __init__(self, **kwargs):
        pass

    def load(self):
        pass

    def tags(self):
        return {}

    def metrics(self):
        return []

    def class_names(self):
        return []

    def health_status(self):
        return None

    def init_metadata(self):
        return {}
