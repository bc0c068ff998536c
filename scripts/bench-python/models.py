"""Models for scripts/bench-python.sh: the scikit-learn iris classifier MLServer serves, as
a servegraph Python class, and an echo that costs nothing (for the engine's own overhead)."""

import joblib
import numpy as np


class SklearnIris:
    """What MLServer's sklearn runtime does by default: `predict` on the input rows."""

    batchable = True

    def __init__(self, model_uri=None):
        self.model_uri = model_uri

    def load(self):
        self.model = joblib.load(self.model_uri)

    def predict(self, inputs, parameters):
        return self.model.predict(inputs["input"])


def echo(inputs, parameters):
    return inputs["input"]
