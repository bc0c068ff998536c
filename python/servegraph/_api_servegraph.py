"""servegraph's own API (`api: servegraph`): `predict(inputs, parameters)`, or a function."""

import numpy as np

from servegraph import ModelError
from servegraph._adapter import construct, operation, takes_one


class Native:
    """servegraph's own API: `predict(inputs: dict[str, ndarray], parameters: dict)`."""

    name = "servegraph"

    @staticmethod
    def detects(target, spec):
        """Anything the other APIs do not recognize (it is tried last)."""
        return True

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
            if callable(getattr(self.obj, "explain", None)):
                self.explain = self.obj.explain  # explain(inputs, parameters), at /explain
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
