"""Python pre- and post-processing for graphs/python-flow.yaml: the iris logistic regression
without its scaler (iris_lr_core.onnx) between a Python standardizer and a Python step that
names the predicted classes."""

import json

import numpy as np


class Standardize:
    """Standardizes `input` with the training data's mean and std, read at load from the
    `model_uri` file (models/iris_expected.json)."""

    batchable = True

    def __init__(self, model_uri=None):
        self.model_uri = model_uri

    def load(self):
        with open(self.model_uri) as f:
            stats = json.load(f)
        self.mean = np.asarray(stats["mean"], dtype=np.float32)
        self.std = np.asarray(stats["std"], dtype=np.float32)

    def predict(self, inputs, parameters):
        return ((inputs["input"] - self.mean) / self.std).astype(np.float32)


CLASSES = np.array([b"setosa", b"versicolor", b"virginica"], dtype=object)


def name_classes(inputs, parameters):
    """The class name of each row's label, and the probability of that class."""
    label = inputs["label"]
    probabilities = inputs["probabilities"]
    return {
        "class": CLASSES[label],
        "confidence": probabilities[np.arange(len(label)), label].astype(np.float32),
    }
