"""An MLRun serving flow's steps, as MLRun's documentation writes them (graphs/mlrun-flow.yaml
serves them with `kind: task`): a handler function of the event's body, a class with
`do(body)`, and MLRun's docs' `ClassifierModel` (a `V2ModelServer`, from iris_mlrun.py beside
this file)."""

from iris_mlrun import ClassifierModel  # noqa: F401 - the flow's model step


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


def summary(body):
    """The last step: the model's response, with the flow's note kept."""
    return {"labels": body["outputs"], "model": body["model_name"]}
