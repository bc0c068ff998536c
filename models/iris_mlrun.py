"""MLRun's iris example (its serving docs' `ClassifierModel`), with one line changed: the
import of `V2ModelServer` (from `mlrun.serving`) now comes from `servegraph.compat.mlrun`.
graphs/python-mlrun.yaml serves it twice, on the pickled logistic regression and random
forest models/generate.py writes."""

from pickle import load

import numpy as np

from servegraph.compat.mlrun import V2ModelServer


class ClassifierModel(V2ModelServer):
    def load(self):
        """load and initialize the model and/or other elements"""
        model_file, extra_data = self.get_model(".pkl")
        self.model = load(open(model_file, "rb"))

    def predict(self, body: dict) -> list:
        """Generate model predictions from sample."""
        feats = np.asarray(body["inputs"])
        result: np.ndarray = self.model.predict(feats)
        return result.tolist()
