"""Seldon Core component types as Seldon's documentation writes them (graphs/seldon-graph.yaml
places each with one line): a TRANSFORMER (`transform_input`), a ROUTER (`route`), MODELs
(`predict`), a COMBINER (`aggregate`) and an OUTPUT_TRANSFORMER (`transform_output`). The
models unpickle the scikit-learn iris models models/generate.py writes."""

import os
import pickle

import numpy as np

CLASSES = ["setosa", "versicolor", "virginica"]


class Millimetres:
    """TRANSFORMER: the client sends millimetres; the models take centimetres."""

    def transform_input(self, X, feature_names, meta=None):
        return np.asarray(X, dtype=float) / 10.0


class ByPetal:
    """ROUTER: short petals (setosa, easy) to the one fast model; the rest to the ensemble."""

    def route(self, features, feature_names):
        petal_length = np.asarray(features)[:, 2]
        return 0 if bool((petal_length < 2.5).all()) else 1


class Iris:
    """MODEL: class probabilities of a pickled scikit-learn classifier (`model_file`)."""

    def __init__(self, model_file):
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, model_file), "rb") as f:
            self.model = pickle.load(f)

    def predict(self, X, feature_names=None, meta=None):
        return self.model.predict_proba(np.asarray(X))

    def class_names(self):
        return CLASSES


class MeanProba:
    """COMBINER: the mean of the members' probabilities."""

    def aggregate(self, features_list, feature_names_list):
        return np.mean([np.asarray(f) for f in features_list], axis=0)

    def class_names(self):
        return CLASSES


class Labels:
    """OUTPUT_TRANSFORMER: probabilities to class names."""

    def transform_output(self, X, feature_names):
        return np.array(CLASSES)[np.argmax(np.asarray(X), axis=1)]
