"""A PrimeHub pre-packaged server's `Model` class (its sklearn skeleton), unchanged in shape:
no base class, the model files mounted at `model_uri` (a folder), `predict(X, feature_names,
meta)`. graphs/python-seldon.yaml serves it on models/iris_seldon/, which
models/generate.py writes."""

import os
import pickle


class Model:
    def __init__(self, model_uri=None):
        self.model_uri = model_uri
        self.ready = False
        self.load()

    def load(self):
        with open(os.path.join(self.model_uri, "model.pkl"), "rb") as f:
            self.model = pickle.load(f)
        self.ready = True

    def predict(self, X, feature_names=None, meta=None):
        return self.model.predict_proba(X)
