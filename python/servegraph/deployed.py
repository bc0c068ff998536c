"""What models deployed from a Python session run as, inside servegraph's workers.

`servegraph.deploy_python_closure` ships a function (cloudpickled, `func.pkl`) served by
`Closure`; `servegraph.deploy_sklearn_model` ships an estimator (pickled, `model.pkl`) served by
`Sklearn`. Both take the tensor `input` and answer the tensor `output`.
"""

import os
import pickle

import numpy as np

from . import ModelError

INPUT_TYPES = ("integers", "floats", "doubles", "bytes", "strings")


def as_output(values, what):
    """A list of outputs as one tensor: strings or bytes as BYTES, numbers and equal-shaped
    arrays as a numeric tensor; anything else is refused with the reason."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values
    if all(isinstance(v, (str, bytes)) for v in values):
        return np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], dtype=object)
    try:
        arr = np.asarray(values)
    except ValueError as exc:
        raise TypeError("%s returned outputs of different shapes: %s" % (what, exc)) from None
    if arr.dtype == object:
        raise TypeError(
            "%s returned outputs servegraph cannot make one tensor of (mixed types or shapes): "
            "return numbers, equal-shaped arrays, or strings" % what
        )
    return arr


class Closure:
    """Clipper's contract: the function takes a list of inputs (one per row of `input`) and
    returns a list of outputs of the same length."""

    batchable = True

    def __init__(self, model_uri, input_type="doubles"):
        if input_type not in INPUT_TYPES:
            raise ValueError("input_type `%s` is not one of %s" % (input_type, ", ".join(INPUT_TYPES)))
        self.model_uri = model_uri
        self.input_type = input_type
        self.func = None

    def load(self):
        with open(os.path.join(self.model_uri, "func.pkl"), "rb") as f:
            self.func = pickle.load(f)

    def predict(self, inputs, parameters):
        x = inputs.get("input")
        if x is None:
            raise ModelError("a deployed function takes the tensor `input`; got: %s" % ", ".join(inputs), status=400)
        if self.input_type == "strings":
            try:
                items = [bytes(v).decode("utf-8") for v in x.reshape(-1)]
            except UnicodeDecodeError as exc:
                raise ModelError("input_type is strings, and an element is not UTF-8: %s" % exc, status=400) from None
        elif self.input_type == "bytes":
            items = [bytes(v) for v in x.reshape(-1)]
        else:
            items = [np.array(row) for row in x]
        outputs = self.func(items)
        if not isinstance(outputs, (list, tuple)) and not hasattr(outputs, "__len__"):
            raise TypeError("the function returned %s, not a list of outputs" % type(outputs).__name__)
        if len(outputs) != len(items):
            raise ValueError(
                "the function returned %d outputs for %d inputs (Clipper's contract: one each)"
                % (len(outputs), len(items))
            )
        return {"output": as_output(list(outputs), "the function")}


class Sklearn:
    """A pickled scikit-learn estimator (or anything with `predict`): `output` is
    `predict(input)` (or the method named by `method`, e.g. `predict_proba`)."""

    batchable = True

    def __init__(self, model_uri, method="predict"):
        self.model_uri = model_uri
        self.method = method
        self.model = None

    def load(self):
        with open(os.path.join(self.model_uri, "model.pkl"), "rb") as f:
            self.model = pickle.load(f)
        if not callable(getattr(self.model, self.method, None)):
            raise TypeError("the model (%s) has no method `%s`" % (type(self.model).__name__, self.method))

    def predict(self, inputs, parameters):
        x = inputs.get("input")
        if x is None:
            raise ModelError("this model takes the tensor `input`; got: %s" % ", ".join(inputs), status=400)
        return {"output": as_output(getattr(self.model, self.method)(x), "the model")}
