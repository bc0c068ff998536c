"""MLRun's `V2ModelServer`, for classes written for `mlrun.serving`: replace

    from mlrun.serving import V2ModelServer

with

    from servegraph.compat.mlrun import V2ModelServer

and serve the class with `class: python, class_name: ...` (the API is detected from the base
class). The worker constructs it as MLRun does (`context`, `name` = the step's name,
`model_path` = the step's `model_path`/`model_uri`, the step's `class_args` as keyword
arguments), calls `load()`, then per request runs MLRun's order: `preprocess(body, op)` →
`validate(body, op)` → `predict(body)` (or `explain`) → `postprocess(response)`, with MLRun's
body as the client sent it (`inputs` the JSON's list; an OIP request's one input tensor as
such a list) and MLRun's response `{"id", "model_name", "outputs", "timestamp"}`
(`servegraph._api_mlrun`).

Inside a servegraph worker whose interpreter has no `mlrun`, the original line works as it is
too: `servegraph._imports` answers `mlrun`, `mlrun.serving` and `mlrun.serving.v2_serving`
with this module's `V2ModelServer`.
"""

import json
import logging
import os


class _Logger:
    """MLRun's logger (`mlrun.utils.Logger`): `info(message, *args, **fields)`, likewise
    `debug`, `warn`, `warning`, `error` and `exception`, the same under `info_with` and the
    like, `bind(**fields)` for fields on every later line, `get_child(suffix)`. Keyword fields
    (which the standard library's logger refuses) follow the message as JSON, as MLRun prints
    them: `model loaded: {"rows": 3}`."""

    def __init__(self, name, bound=None):
        self._logger = logging.getLogger(name)
        self._bound = dict(bound or {})

    def _log(self, level, message, args, fields, exc_info=None):
        if not self._logger.isEnabledFor(level):
            return
        text = str(message) % args if args else str(message)
        fields = {**fields, **self._bound}
        if fields:
            text = "%s: %s" % (text, json.dumps(fields, default=str, sort_keys=True))
        self._logger.log(level, "%s", text, exc_info=exc_info)

    def debug(self, message, *args, **fields):
        self._log(logging.DEBUG, message, args, fields)

    def info(self, message, *args, **fields):
        self._log(logging.INFO, message, args, fields)

    def warn(self, message, *args, **fields):
        self._log(logging.WARNING, message, args, fields)

    def warning(self, message, *args, **fields):
        self._log(logging.WARNING, message, args, fields)

    def error(self, message, *args, **fields):
        self._log(logging.ERROR, message, args, fields)

    def exception(self, message, *args, exc_info=True, **fields):
        self._log(logging.ERROR, message, args, fields, exc_info=exc_info)

    debug_with = debug
    info_with = info
    warn_with = warn
    warning_with = warning
    error_with = error
    exception_with = exception

    def bind(self, **fields):
        self._bound.update(fields)

    def get_child(self, suffix):
        return _Logger("%s.%s" % (self._logger.name, suffix), self._bound)

    @property
    def level(self):
        return self._logger.level

    def set_logger_level(self, level):
        self._logger.setLevel(level.upper() if isinstance(level, str) else level)


class _Stream:
    enabled = False


class _Context:
    """What user code reaches through `self.context`, as MLRun's `GraphContext` has it:
    `logger` (MLRun's, taking keyword fields), `get_param(key, default=None)` (the step's
    `class_args`), `get_secret(key)` (the environment variable of that name: give it in the
    step's `env:`, since workers get a scrubbed environment; None when unset), `verbose`
    (False) and `stream.enabled` (False). Anything else of MLRun's context is refused by
    name."""

    def __init__(self, name, params=None):
        self.logger = _Logger("mlrun." + (name or "model"))
        self.verbose = False
        # MLRun's own V2ModelServer (when mlrun is installed) pushes to the model-monitoring
        # stream when the context's is enabled: servegraph's tracking stream does that job.
        self.stream = _Stream()
        self._params = {} if params is None else params
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO)

    def get_param(self, key, default=None):
        return self._params.get(key, default)

    def get_secret(self, key):
        return os.environ.get(key)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            "servegraph's MLRun context has `logger`, `get_param`, `get_secret`, `verbose` and `stream`, "
            "not `%s`: install mlrun in the model's interpreter (the step's `python:`) to use "
            "it" % name
        )


class DataItem:
    """A file of the model's folder, as MLRun's `DataItem` reads it."""

    def __init__(self, path):
        self.url = path
        self.key = os.path.basename(path)
        self.kind = "file"

    def local(self):
        return self.url

    def get(self, size=None, offset=0, encoding=None):
        with open(self.url, "rb") as f:
            f.seek(offset)
            data = f.read() if size is None else f.read(size)
        return data.decode(encoding) if encoding else data

    def open(self, mode="r"):
        return open(self.url, mode)

    def download(self, target_path):
        import shutil

        shutil.copyfile(self.url, target_path)

    def as_df(self, **kwargs):
        import pandas as pd

        lower = self.url.lower()
        if lower.endswith((".parquet", ".pq")):
            return pd.read_parquet(self.url, **kwargs)
        if lower.endswith(".json"):
            return pd.read_json(self.url, **kwargs)
        return pd.read_csv(self.url, **kwargs)

    def __repr__(self):
        return "DataItem(%r)" % self.url


class GraphContext(_Context):
    """MLRun's `GraphContext` (`mlrun.serving.GraphContext`): the context steps and model
    servers get (`isinstance(context, GraphContext)` holds), as servegraph gives it (see
    `_Context`)."""

    def __init__(self, level="info", logger=None, server=None, nuclio_context=None, name=None, params=None):
        super().__init__(name, params)
        if logger is not None:
            self.logger = logger


class Event:
    """What an `op_<name>(event)` gets, as in MLRun: the request's `body` (parsed JSON),
    its `path` and `method`; what the operation returns is the response's body."""

    def __init__(self, body=None, path="", method="POST", headers=None, id=None):
        self.body = body
        self.path = path
        self.method = method
        self.headers = headers or {}
        self.id = id
        # An error handler's event: the failure's message and the step that failed.
        self.error = None
        self.origin_state = None


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
        self._params = kwargs
        self.context = context or _Context(name, self._params)
        self.model_path = model_path
        self.model = model
        self.protocol = protocol or "v2"
        self.input_path = input_path
        self.result_path = result_path
        self.ready = model is not None
        self.error = ""
        self.model_spec = None
        self.metrics = {}

    def load(self):
        """Loads the model (a subclass implements it, unless `model=` was given)."""
        if not self.ready and self.model is None:
            raise NotImplementedError("a V2ModelServer subclass implements load()")

    def get_param(self, key, default=None):
        """A parameter: the step's `class_args`, else the context's."""
        if key in self._params:
            return self._params[key]
        return self.context.get_param(key, default)

    def get_model(self, suffix=""):
        """The local model file and the extra files, as MLRun's `get_model` gives them:
        `(model_file, extra_data)`. `model_path` is the file itself, or a folder: then the
        model file is the first (by name) ending with `suffix` (default `.pkl`), and
        `extra_data` maps every file's name in the folder to a `DataItem` (`.local()`,
        `.get()`, `.as_df()`, `.download(path)`, `.open()`, `.url`). MLRun's artifact store
        (`store://`, `model_spec.yaml`) is not served: a clear error."""
        path = self.model_path
        suffix = suffix or ".pkl"
        if not path:
            raise ValueError("get_model: the step has no `model_path`")
        path = str(path)
        if path.startswith("store://") or path.lower().endswith(".yaml"):
            raise ValueError(
                "get_model: %s is an MLRun artifact (store:// or a model spec), which needs "
                "MLRun's artifact store: give the model file or its folder" % path
            )
        if not os.path.isdir(path):
            return path, {}
        names = sorted(os.listdir(path))
        if "model_spec.yaml" in names:
            raise ValueError(
                "get_model: %s holds an MLRun model spec (model_spec.yaml), which needs MLRun's "
                "artifact store: give the model file itself" % path
            )
        extra = {name: DataItem(os.path.join(path, name)) for name in names}
        for name in names:
            if name.endswith(suffix):
                return os.path.join(path, name), extra
        raise ValueError("cant resolve model file for %s suffix%s" % (path, suffix))

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
    gives it (`_Context`: a logger, `get_param` over the step's `class_args`, `get_secret`,
    `verbose`)."""
    return GraphContext(name=name, params=params)
