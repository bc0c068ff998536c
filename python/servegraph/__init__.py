"""servegraph's Python side: the worker runtime the engine runs models in
(`servegraph._worker`), and what model code may import from it."""

__all__ = ["Model", "ModelError"]


class ModelError(Exception):
    """Raise it from `predict` to choose the status of the answer (default 500), e.g.
    `raise ModelError("the image is empty", status=400)`."""

    def __init__(self, message, status=500):
        super().__init__(message)
        self.status = status


class Model:
    """An optional base for servegraph's own API.

    `predict(inputs, parameters)` takes a dict of read-only NumPy arrays (valid for the call
    only) and the request's parameters, and returns an array (the one output) or a dict of
    arrays by output name. Set `batchable = True` when rows are independent, so the engine
    may join requests into one call (with `batch:` in the graph).
    """

    batchable = False

    def __init__(self, model_uri=None, **kwargs):
        self.model_uri = model_uri
        self.kwargs = kwargs

    def load(self):
        """Loads the model (called once per worker, before any request)."""

    def predict(self, inputs, parameters):
        raise NotImplementedError("a servegraph Model implements predict(inputs, parameters)")



def __getattr__(name):
    # The deployers (servegraph.deploy: deploy_python_closure, ...) load on first use: model
    # workers never import them.
    if not name.startswith("_") and name != "deploy":
        import importlib

        deploy = importlib.import_module(__name__ + ".deploy")
        if name in deploy.__all__:
            return getattr(deploy, name)
    raise AttributeError("module 'servegraph' has no attribute %r" % name)
