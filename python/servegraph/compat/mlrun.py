"""MLRun's `V2ModelServer`, for classes written for `mlrun.serving`: replace

    from mlrun.serving import V2ModelServer

with

    from servegraph.compat.mlrun import V2ModelServer

and serve the class with `class: python, class_name: ...` (the API is detected from the base
class). The worker constructs it as MLRun does (`context`, `name` = the step's name,
`model_path` = the step's `model_path`/`model_uri`, the step's `class_args` as keyword
arguments), calls `load()`, then per request runs MLRun's order: `preprocess(body, op)` →
`validate(body, op)` → `predict(body)` → `postprocess(response)`, with MLRun's body
`{"id", "inputs": <rows>}` (the request's single input tensor, as a NumPy array: the usual
`np.asarray(body["inputs"])` works) and response `{"id", "model_name", "outputs"}`.
"""

import logging
import os


class _Context:
    """What user code reaches through `self.context`: a logger."""

    def __init__(self, name):
        self.logger = logging.getLogger("mlrun." + (name or "model"))
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO)


class Event:
    """What an `op_<name>(event)` gets, as in MLRun: the request's `body` (parsed JSON),
    its `path` and `method`; what the operation returns is the response's body."""

    def __init__(self, body=None, path="", method="POST", headers=None, id=None):
        self.body = body
        self.path = path
        self.method = method
        self.headers = headers or {}
        self.id = id


class V2ModelServer:
    """MLRun's model server base class (`mlrun.serving.V2ModelServer`), as servegraph runs it."""

    def __init__(
        self,
        context=None,
        name=None,
        model_path=None,
        model=None,
        protocol=None,
        input_path=None,
        result_path=None,
        **kwargs,
    ):
        self.name = name
        self.version = ""
        if name and ":" in name:
            self.name, self.version = name.split(":", 1)
        self.context = context or _Context(name)
        self.model_path = model_path
        self.model = model
        self.protocol = protocol or "v2"
        self.input_path = input_path
        self.result_path = result_path
        self.ready = model is not None
        self.error = ""
        self.model_spec = None
        self._params = kwargs
        self.metrics = {}

    def load(self):
        """Loads the model (a subclass implements it, unless `model=` was given)."""
        if not self.ready and self.model is None:
            raise NotImplementedError("a V2ModelServer subclass implements load()")

    def get_param(self, key, default=None):
        """A parameter: the step's `class_args`."""
        return self._params.get(key, default)

    def get_model(self, suffix=""):
        """The local model file and extra files, as MLRun's `(path, extra_dataitems)`:
        `model_path` itself when it is a file, else the one file in that folder whose name
        ends with `suffix`."""
        path = self.model_path
        if not path:
            raise ValueError("get_model: the step has no `model_path`")
        if str(path).startswith("store://"):
            raise ValueError("get_model: `store://` URLs need MLRun's artifact store; give a local path")
        if os.path.isdir(path):
            found = sorted(f for f in os.listdir(path) if f.endswith(suffix))
            if len(found) != 1:
                raise ValueError(
                    "get_model(%r): %s in %s" % (suffix, "no file" if not found else "several files " + ", ".join(found), path)
                )
            path = os.path.join(path, found[0])
        elif suffix and not str(path).endswith(suffix):
            raise ValueError("get_model(%r): model_path %s does not end with it" % (suffix, path))
        return path, {}

    def set_metric(self, name, value):
        """Records a metric of the current request."""
        self.metrics[name] = value

    def preprocess(self, request, operation):
        return request

    def validate(self, request, operation):
        if self.protocol == "v2":
            if "inputs" not in request:
                raise ValueError('Expected key "inputs" in request body')
            if not isinstance(request["inputs"], list):
                raise ValueError('Expected "inputs" to be a list')
        return request

    def predict(self, request):
        raise NotImplementedError("a V2ModelServer subclass implements predict(request)")

    def explain(self, request):
        raise NotImplementedError("this model has no explain(request)")

    def postprocess(self, request):
        return request

    def post_init(self, mode="sync"):
        """MLRun calls it after construction; servegraph's worker calls `load()` itself."""


def context_for(name, params):
    """The `context` a model server is constructed with: MLRun's `GraphContext` as servegraph
    gives it (a logger, `get_param` over the step's `class_args`)."""
    context = _Context(name)
    context.get_param = lambda key, default=None: params.get(key, default)
    return context
