"""Model servers written as MLRun's documentation and its framework servers write them
(`mlrun/serving/v2_serving.py`, `mlrun/frameworks/_ml_common/pkl_model_server.py`): the
tests drive them with MLRun's own bodies and check the answers are MLRun's."""

import numpy as np

from mlrun.serving import V2ModelServer


class ClassifierModel(V2ModelServer):
    """MLRun's docs' example, minus the pickle: sums each row."""

    def load(self):
        self.offset = float(self.get_param("offset", 0))

    def predict(self, body: dict) -> list:
        # MLRun hands `inputs` as the JSON's list (its own `validate` insists on a list).
        assert isinstance(body["inputs"], list), type(body["inputs"])
        feats = np.asarray(body["inputs"])
        return (feats.sum(axis=1) + self.offset).tolist()


class Shapes(V2ModelServer):
    """Answers exactly what the request's `kind` asks for: MLRun sends `outputs` as returned."""

    def load(self):
        pass

    def predict(self, body):
        kind = body.get("kind", "list")
        rows = body["inputs"]
        if kind == "scalar":
            return len(rows)
        if kind == "dict":
            return {"predictions": [sum(r) for r in rows], "count": len(rows)}
        if kind == "string":
            return "rows: %d" % len(rows)
        if kind == "numpy":
            return np.asarray(rows).sum(axis=1)
        if kind == "numpy-keys":
            # Keys JSON has no form for: their text, as MLRun's JSON would give them.
            return {np.int64(i): np.float32(sum(r)) for i, r in enumerate(rows)}
        if kind == "object":
            return object()
        return [sum(r) for r in rows]

    def explain(self, body):
        return {"explanation": "sums each row", "rows": len(body["inputs"])}


class Features(V2ModelServer):
    """Like MLRun's PickleModelServer: `inputs` may be a list of rows or `[{feature: column}]`."""

    def load(self):
        pass

    def predict(self, request):
        inputs = request["inputs"]
        if inputs and isinstance(inputs[0], dict):
            columns = inputs[0]
            names = sorted(columns)
            rows = list(zip(*(columns[n] for n in names)))
        else:
            rows = inputs
        return [float(sum(r)) for r in rows]


class Hooks(V2ModelServer):
    """MLRun's order: preprocess → validate → predict → postprocess."""

    def load(self):
        pass

    def preprocess(self, request, operation):
        request["inputs"] = [[x * 10 for x in row] for row in request["inputs"]]
        request["seen"] = [operation]
        return request

    def predict(self, request):
        return {"rows": request["inputs"], "seen": request["seen"]}

    def postprocess(self, response):
        response["post"] = True
        return response


class WithExtra(V2ModelServer):
    """`get_model(suffix)` on a folder: the model file and the folder's other files as
    MLRun's `extra_data` (DataItems)."""

    def load(self):
        model_file, extra_data = self.get_model(".txt")
        self.weight = float(open(model_file).read())
        self.labels = extra_data["labels.csv"].get(encoding="utf-8").split(",")
        self.files = sorted(extra_data)

    def predict(self, body):
        return {"weight": self.weight, "labels": self.labels, "files": self.files}


class EmptyPath(V2ModelServer):
    """MLRun hands `model_path=""` as it is (its test classes check it)."""

    def load(self):
        assert self.model_path == "", repr(self.model_path)

    def predict(self, body):
        return {"model_path": self.model_path}


class Fixed(V2ModelServer):
    """Answers the `outputs` its class_args give, whatever the rows."""

    def load(self):
        self.answer = self.get_param("outputs")

    def predict(self, body):
        return self.answer
