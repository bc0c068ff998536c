"""An MLRun serving flow's steps, as MLRun's documentation writes them (graphs/mlrun-flow.yaml
serves them with `kind: task`): a handler function of the event's body, a class with
`do(body)`, and a `V2ModelServer` model (`from mlrun.serving import V2ModelServer`, unchanged:
inside servegraph's workers it is servegraph's when MLRun is not installed)."""

from pickle import load

import numpy as np

from mlrun.serving import V2ModelServer


def centimetres(body):
    """A handler step: the request's rows arrive in millimetres; the model takes centimetres."""
    body["inputs"] = [[x / 10 for x in row] for row in body["inputs"]]
    return body


class Note:
    """A class step: MLRun constructs it with `class_args` (and `context`, `name` when it takes
    them) and calls `do(body)`."""

    def __init__(self, context, name, label="iris", **kwargs):
        self.context = context
        self.name = name
        self.label = label

    def do(self, body):
        body["dataset"] = self.label
        return body


class ClassifierModel(V2ModelServer):
    """MLRun's docs' `ClassifierModel`, unchanged."""

    def load(self):
        model_file, extra_data = self.get_model(".pkl")
        self.model = load(open(model_file, "rb"))

    def predict(self, body: dict) -> list:
        feats = np.asarray(body["inputs"])
        result: np.ndarray = self.model.predict(feats)
        return result.tolist()


def summary(body):
    """The last step: the model's response, with the flow's note kept."""
    return {"labels": body["outputs"], "model": body["model_name"]}
