"""KServe's `Model` API, for classes written for `kserve` (a subclass of `kserve.Model`):
inside a servegraph worker whose interpreter has no `kserve`, `servegraph._imports` answers
`from kserve import Model, ModelServer, InferRequest, ...`, `kserve.model_server` (its
`parser`), `kserve.errors`, `kserve.logging`, `kserve.storage` / `kserve_storage`
(`Storage.download`), `kserve.utils.utils` (`get_predict_input`, `get_predict_response`,
`generate_uuid`) and `kserve.protocol.infer_type` with this module's names (and those of
`kserve_infer` and `kserve_errors`), so the class's file runs unchanged. Outside a worker
(your own tests), import them from here.

The worker constructs the class as KServe's server does (`Model(name)`, the name being the
step's), calls `load()`, then per request `preprocess` → `validate` → `predict` (or
`explain`) → `postprocess` (`servegraph._api_kserve`). `ModelServer().start([...])` starts
nothing: servegraph serves the model (a model file's `if __name__ == "__main__":` block does
not run at all, the file being imported).
"""

import argparse
import enum
import logging as _logging
import os
import uuid

import numpy as np

from servegraph.compat.kserve_errors import InvalidInput
from servegraph.compat.kserve_infer import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    from_np_dtype,
)

__all__ = [
    "Model",
    "ModelServer",
    "InferRequest",
    "InferResponse",
    "InferInput",
    "InferOutput",
]


class PredictorProtocol(enum.Enum):
    """The protocols KServe's servers speak to each other."""

    REST_V1 = "v1"
    REST_V2 = "v2"
    GRPC_V2 = "grpc-v2"


class InferenceVerb(enum.Enum):
    EXPLAIN = 1
    PREDICT = 2


class BaseKServeModel:
    """What every KServe model has: `name`, `ready` (what readiness reports: servegraph asks
    `healthy()`), `load()`, `start()` and `stop()`."""

    def __init__(self, name):
        self.name = name
        self.ready = False
        self.engine = False

    async def healthy(self):
        """Whether the model can serve: `self.ready` (servegraph's readiness asks it)."""
        return self.ready

    def load(self):
        """Loads the model; sets `ready`. Override it (and set `self.ready = True`)."""
        self.ready = True
        return self.ready

    def start(self):
        self.ready = True

    async def start_engine(self):
        self.ready = True

    def stop(self):
        self.ready = False

    def stop_engine(self):
        self.ready = False


class InferenceModel(BaseKServeModel):
    """A model that answers inference requests (`__call__`), with the tensors it says it
    takes and gives (`get_input_types`, `get_output_types`: empty by default)."""

    def __call__(self, body, headers=None, verb=InferenceVerb.PREDICT):
        raise NotImplementedError

    def get_input_types(self):
        return []

    def get_output_types(self):
        return []


class Model(InferenceModel):
    """KServe's `kserve.Model`: subclass it and override `load`, `predict` (and `preprocess`,
    `postprocess`, `explain`), each sync or `async def`. Called as KServe's server calls it:
    `preprocess(payload, headers)` → `validate(payload)` → `predict(payload, headers)` (with
    `response_headers` too when constructed with `return_response_headers=True`) →
    `postprocess(result, headers)`."""

    def __init__(self, name, return_response_headers=False):
        super().__init__(name)
        self.explainer_host = None
        self._http_client_instance = None
        self._grpc_client_stub = None
        self.enable_latency_logging = False
        self.required_response_headers = return_response_headers

    @property
    def predictor_config(self):
        """The predictor a KServe transformer forwards to: none under servegraph (a graph's
        next step is the predictor)."""
        return None

    async def __call__(self, body, headers=None, verb=InferenceVerb.PREDICT):
        """`preprocess` → `validate` → `predict` (or `explain`) → `postprocess` on `body`, as
        KServe's server calls a model: `(response, response_headers)`."""
        from servegraph._api_kserve import Hooks

        return await Hooks(self, Model).chain(
            body, headers, verb == InferenceVerb.EXPLAIN, {}
        )

    def validate(self, payload):
        return payload

    def load(self):
        self.ready = True
        return self.ready

    async def preprocess(self, payload, headers=None):
        """The payload as `predict` takes it (the payload itself, unless overridden)."""
        return payload

    async def postprocess(self, result, headers=None, response_headers=None):
        """The answer from what `predict` returned (the result itself, unless overridden)."""
        return result

    async def predict(self, payload, headers=None, response_headers=None):
        # KServe's base class forwards to its predictor (`--predictor_host`), which a model
        # under servegraph has none of.
        raise NotImplementedError("Could not find PredictorConfig.")

    async def explain(self, payload, headers=None):
        # KServe's base class forwards to its explainer (`explainer_host`).
        raise NotImplementedError("Could not find explainer_host.")


class _GrpcMessage:
    """KServe's gRPC messages, which a class under servegraph is never handed: the names
    import (classes name them in type hints and `isinstance` checks, which are then false);
    making one is refused."""

    def __init__(self, *args, **kwargs):
        from servegraph.compat.kserve_infer import _grpc_refused

        _grpc_refused(type(self).__name__)


class ModelInferRequest(_GrpcMessage):
    pass


class ModelInferResponse(_GrpcMessage):
    pass


# -- kserve.model_server -----------------------------------------------------------------

# KServe's command line (`kserve.model_server.parser`), for model files that extend it
# (`argparse.ArgumentParser(parents=[model_server.parser])`): the same options and defaults.
parser = argparse.ArgumentParser(add_help=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def _strtobool_arg(value):
    return strtobool(value)


for _flags, _options in (
    (("--http_port",), dict(default=8080, type=int, help="The HTTP Port listened to by the model server.")),
    (("--grpc_port",), dict(default=8081, type=int, help="The GRPC Port listened to by the model server.")),
    (("--workers",), dict(default=1, type=int, help="The number of uvicorn workers for multi-processing.")),
    (("--max_threads",), dict(default=4, type=int, help="The max number of gRPC processing threads.")),
    (("--max_asyncio_workers",), dict(default=None, type=int, help="The max number of asyncio workers to spawn.")),
    (("--enable_grpc",), dict(default=True, type=_strtobool_arg, help="Enable gRPC for the model server.")),
    (("--enable_docs_url",), dict(default=False, type=_strtobool_arg, help="Enable docs url '/docs' to display Swagger UI.")),
    (("--enable_latency_logging",), dict(default=True, type=_strtobool_arg, help="Enable a log line per request with preprocess/predict/postprocess latency metrics.")),
    (("--configure_logging",), dict(default=True, type=_strtobool_arg, help="Enable to configure KServe and Uvicorn logging.")),
    (("--log_config_file",), dict(default=None, type=str, help="File path containing UvicornServer's log config. Needs to be a yaml or json file.")),
    (("--access_log_format",), dict(default=None, type=str, help="The asgi access logging format.")),
    (("--event-loop",), dict(dest="event_loop", default="auto", type=str, choices=["auto", "asyncio", "uvloop"], help="Event loop implementation used by the HTTP server.")),
    (("--timeout-keep-alive",), dict(dest="timeout_keep_alive", default=65, type=int, help="Timeout for keep-alive connections in seconds.")),
    (("--model_name",), dict(default="model", type=str, help="The name of the model used on the endpoint path.")),
    (("--predictor_host",), dict(default=None, type=str, help="The host name used for calling to the predictor from transformer.")),
    (("--protocol",), dict(default="v1", type=str, choices=["v1", "v2", "grpc-v2"], help="Deprecated and replaced by --predictor_protocol")),
    (("--predictor_protocol",), dict(default="v1", type=str, choices=["v1", "v2", "grpc-v2"], help="The inference protocol used for calling to the predictor from transformer.")),
    (("--predictor_use_ssl",), dict(default=False, type=_strtobool_arg, help="Use ssl for the http connection to the predictor.")),
    (("--predictor_request_timeout_seconds",), dict(default=600, type=int, help="The timeout seconds for the request sent to the predictor.")),
    (("--grpc_max_send_message_length",), dict(default=8388608, type=int, help="The max message length for gRPC send message.")),
    (("--grpc_max_receive_message_length",), dict(default=8388608, type=int, help="The max message length for gRPC receive message.")),
    (("--predictor_request_retries",), dict(default=0, type=int, help="The number of retries if predictor request fails.")),
    (("--enable_predictor_health_check",), dict(action="store_true", help="The Transformer will perform readiness check for the predictor.")),
    (("--ssl_certfile",), dict(default=os.environ.get("KSERVE_TLS_CERT_FILE"), type=str, help="The path to the SSL certificate file for serving HTTPS.")),
    (("--ssl_keyfile",), dict(default=os.environ.get("KSERVE_TLS_KEY_FILE"), type=str, help="The path to the SSL private key file for serving HTTPS.")),
):
    parser.add_argument(*_flags, **_options)

# As KServe parses it when `kserve.model_server` is imported: the process's own arguments
# (a worker has none, so the defaults).
args, _ = parser.parse_known_args()

_SERVED_BY = (
    "servegraph serves this model itself (the graph's step; KServe's /v1 and /v2 endpoints on "
    "servegraph's port)"
)


class ModelServer:
    """KServe's server, which does not run under servegraph: constructing one works (a model
    file may make one), `start([...])` starts nothing and says so in the log,
    `register_model` likewise; anything else is refused by name."""

    def __init__(self, *args, **kwargs):
        self.registered_models = kwargs.get("registered_models")
        self._options = kwargs

    def start(self, models):
        """Starts nothing: servegraph serves the model."""
        logger.warning("kserve.ModelServer.start() started no server: %s", _SERVED_BY)

    def register_model(self, model, name=None):
        logger.warning(
            "kserve.ModelServer.register_model(%s) registered nothing: %s",
            name or getattr(model, "name", model),
            _SERVED_BY,
        )

    def __getattr__(self, name):
        raise AttributeError(
            "kserve.ModelServer.%s is not part of servegraph's stand-in for kserve: %s"
            % (name, _SERVED_BY)
        )


class _App:
    """KServe's FastAPI app (`kserve.model_server.app`): the name imports, using it is
    refused (servegraph serves HTTP itself)."""

    def __getattr__(self, name):
        raise AttributeError(
            "kserve.model_server.app.%s: KServe's FastAPI app is not part of servegraph's "
            "stand-in for kserve: %s" % (name, _SERVED_BY)
        )


app = _App()


# -- kserve.logging ---------------------------------------------------------------------

logger = _logging.getLogger("kserve")
trace_logger = _logging.getLogger("kserve.trace")

_FORMATS = {
    "kserve": "%(asctime)s.%(msecs)03d %(process)s %(name)s %(levelname)s "
    "[%(filename)s:%(funcName)s():%(lineno)s] %(message)s",
    "kserve.trace": "%(asctime)s.%(msecs)03d %(process)s %(name)s %(message)s",
}


def configure_logging(log_config=None):
    """KServe's loggers (`kserve`, `kserve.trace`) to stderr, which is the engine's log, in
    KServe's format at `KSERVE_LOGLEVEL` (INFO); or `log_config` (a dict, or a `.json`,
    `.yaml`/`.yml` or `logging.config` file) as KServe reads it. Nothing when the `kserve`
    logger already has handlers and no config is given."""
    import logging.config

    if log_config is None and logger.hasHandlers():
        return
    if log_config is None:
        level = os.environ.get("KSERVE_LOGLEVEL", "INFO").upper()
        for name, fmt in _FORMATS.items():
            log = _logging.getLogger(name)
            handler = _logging.StreamHandler()
            handler.setFormatter(_logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S"))
            log.handlers[:] = [handler]
            log.setLevel(level)
            log.propagate = False
    elif isinstance(log_config, dict):
        logging.config.dictConfig(log_config)
    elif log_config.endswith(".json"):
        import json

        with open(log_config) as f:
            logging.config.dictConfig(json.load(f))
    elif log_config.endswith((".yaml", ".yml")):
        import yaml

        with open(log_config) as f:
            logging.config.dictConfig(yaml.safe_load(f))
    else:
        logging.config.fileConfig(log_config, disable_existing_loggers=False)


# -- kserve.storage, kserve_storage -----------------------------------------------------

_LOCAL_PREFIX = "file://"


class Storage:
    """KServe's `Storage` (`kserve.storage`, `kserve_storage`). servegraph has already fetched
    the step's `model_uri` (S3, GCS, Azure, HTTP) into its model cache, so the class gets a
    local path, and `download` only has local paths to deal with."""

    @staticmethod
    def download(uri, out_dir=None, allow_patterns=None, ignore_patterns=None):
        """The local folder or file of `uri` (a path or a `file://` URI): the path itself, or,
        with `out_dir`, `out_dir` holding links to the path's contents, as KServe does.
        Remote URIs are refused: give them as the step's `model_uri`, which servegraph
        fetches."""
        import fnmatch

        uri = os.fspath(uri)
        local = uri[len(_LOCAL_PREFIX) :] if uri.startswith(_LOCAL_PREFIX) else uri
        if "://" in local:
            raise ValueError(
                "Storage.download(%r): servegraph fetches remote `model_uri`s itself (s3://, "
                "gs://, az://, http(s)://) into its model cache, and the class receives the "
                "local path; give %r as the step's `model_uri` and pass the `model_uri` the "
                "class gets (or its `model_dir`) to Storage.download" % (uri, uri)
            )
        logger.info("Copying contents of %s to local", uri)
        if not os.path.exists(local):
            raise RuntimeError("Local path %s does not exist." % uri)
        if out_dir is None:
            return local
        os.makedirs(out_dir, exist_ok=True)
        sources = (
            [os.path.join(local, n) for n in sorted(os.listdir(local))]
            if os.path.isdir(local)
            else [local]
        )

        def wanted(name):
            if allow_patterns and not any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                return False
            return not (ignore_patterns and any(fnmatch.fnmatch(name, p) for p in ignore_patterns))

        linked = [src for src in sources if wanted(os.path.basename(src))]
        for src in linked:
            dest = os.path.join(out_dir, os.path.basename(src))
            if not os.path.exists(dest):
                os.symlink(os.path.abspath(src), dest)
        if not linked:
            raise RuntimeError("Failed to fetch model. No model found in %s." % uri)
        if len(linked) == 1 and linked[0].endswith((".tar", ".tar.gz", ".tgz", ".zip")):
            raise ValueError(
                "Storage.download(%r, out_dir): unpacking an archive is not part of servegraph's "
                "stand-in for kserve; give the archive as the step's `model_uri` (servegraph "
                "unpacks .tar.gz, .tgz and .tar)" % uri
            )
        return out_dir


# -- kserve.utils.utils -----------------------------------------------------------------


def generate_uuid():
    """A random UUID, as text."""
    return str(uuid.uuid4())


def strtobool(val):
    """`True` for y, yes, t, true, on, 1; `False` for n, no, f, false, off, 0 (any case);
    a ValueError otherwise."""
    val = val.lower()
    if val in ("y", "yes", "t", "true", "on", "1"):
        return True
    if val in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError("invalid truth value %r" % (val,))


def is_v1(protocol):
    return protocol == PredictorProtocol.REST_V1 or (
        isinstance(protocol, str) and protocol.lower() == PredictorProtocol.REST_V1.value
    )


def is_v2(protocol):
    return protocol == PredictorProtocol.REST_V2 or (
        isinstance(protocol, str) and protocol.lower() == PredictorProtocol.REST_V2.value
    )


def _is_dataframe(value):
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _pandas(what):
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "%s needs pandas, which is not installed in the model's interpreter" % what
        ) from None
    return pandas


def get_predict_input(payload, columns=None):
    """What to predict on: a v1 body's `inputs` (else `instances`) as a NumPy array (a list of
    strings as it is; rows of dicts as a pandas DataFrame), or a v2 request's first input as a
    NumPy array (BYTES as its strings; every input as a DataFrame when the request's
    `content_type` parameter is `pd`)."""
    if isinstance(payload, dict):
        instances = payload["inputs"] if "inputs" in payload else payload["instances"]
        if len(instances) == 0:
            return np.array(instances)
        first = instances[0]
        if isinstance(first, dict) or (
            isinstance(first, list) and len(first) != 0 and isinstance(first[0], dict)
        ):
            pd = _pandas("get_predict_input of dict instances")
            return pd.concat([pd.DataFrame(i, columns=columns) for i in instances], axis=0)
        if isinstance(first, str):
            return instances
        return np.array(instances)
    if isinstance(payload, InferRequest):
        content_type = (payload.parameters or {}).get("content_type") if payload.parameters else ""
        if content_type == "pd":
            return payload.as_dataframe()
        first = payload.inputs[0]
        if first.datatype == "BYTES" and len(first.data) > 0 and isinstance(first.data[0], str):
            return first.data
        return first.as_numpy()
    return None


def get_predict_response(payload, result, model_name):
    """The answer to `payload` from a prediction: `{"predictions": ...}` for a v1 body (a
    DataFrame as one dict per row, an array as lists), or an `InferResponse` for a v2
    request (`output-0`, or one output per DataFrame column)."""
    if isinstance(payload, dict):
        outputs = result
        if _is_dataframe(result):
            outputs = [row.to_dict() for _, row in result.iterrows()]
        elif isinstance(result, np.ndarray):
            outputs = result.tolist()
        return {"predictions": outputs}
    if isinstance(payload, InferRequest):
        binary = payload.use_binary_outputs
        outputs = []
        if _is_dataframe(result):
            for column in result.columns:
                output = InferOutput(
                    name=column,
                    shape=list(result[column].shape),
                    datatype=from_np_dtype(result[column].dtype),
                )
                output.set_data_from_numpy(result[column].to_numpy(), binary_data=binary)
                outputs.append(output)
        elif isinstance(result, list) and len(result) > 0 and isinstance(result[0], str):
            output = InferOutput(name="output-0", shape=[len(result)], datatype="BYTES")
            output.set_data_from_numpy(np.array(result, dtype=np.object_), binary_data=binary)
            outputs.append(output)
        else:
            if isinstance(result, list):
                result = np.array(result)
            output = InferOutput(
                name="output-0", shape=list(result.shape), datatype=from_np_dtype(result.dtype)
            )
            output.set_data_from_numpy(result, binary_data=binary)
            outputs.append(output)
        return InferResponse(
            model_name=model_name,
            infer_outputs=outputs,
            response_id=payload.id if payload.id else generate_uuid(),
            use_binary_outputs=binary,
            requested_outputs=payload.request_outputs,
        )
    raise InvalidInput("unsupported payload type %s" % type(payload))
