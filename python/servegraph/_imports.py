"""The peers' import lines, unchanged, inside a worker: `from mlrun.serving import
V2ModelServer`, `from seldon_core.user_model import SeldonComponent`, `seldon_core.Storage`,
`from kserve import Model`, `from mlserver import MLModel` and the rest of `PROVIDED` resolve
to servegraph's own implementations (`servegraph.compat`) when the model's interpreter does
not have the real package.

`install()` (called by `_worker.py` before user code is imported) puts one finder first on
`sys.meta_path`. It answers `mlrun`, `seldon_core`, `kserve`, `kserve_storage` and `mlserver` only when
no other finder finds them (it asks them): an installed package (or one on the step's
`python_path:`) is always the one imported, never shadowed. A folder of that name without `__init__.py` (a
namespace package: a project's `mlrun/` folder beside the model file) does not count as the
package. Any other name costs one dictionary lookup. Installing it imports nothing; the
stand-in modules are made on their first import. Of a real package, it changes one module
once it has run (`PATCHES`): KServe's `ModelServer.start` starts no server inside a worker.

What servegraph does not provide is refused by name, never answered with something else:
`import mlrun.frameworks`, `from mlrun import get_dataitem` and `mlrun.get_dataitem` raise an
ImportError (a ModuleNotFoundError) or an AttributeError saying what servegraph provides and
that the real package is needed for the rest.
"""

import sys

# Each stand-in module: the servegraph module its names come from, and the names (exactly the
# real package's). Every module in between (`mlrun` for `mlrun.serving`) is a stand-in too.
PROVIDED = {
    "mlrun.serving": ("servegraph.compat.mlrun", ("V2ModelServer", "GraphContext")),
    "mlrun.serving.v2_serving": ("servegraph.compat.mlrun", ("V2ModelServer",)),
    "seldon_core": ("servegraph.compat.seldon", ("Storage",)),
    "seldon_core.storage": ("servegraph.compat.seldon", ("Storage",)),
    "seldon_core.user_model": (
        "servegraph.compat.seldon",
        ("SeldonComponent", "SeldonResponse", "SeldonNotImplementedError"),
    ),
    "seldon_core.metrics": (
        "servegraph.compat.seldon",
        ("COUNTER", "GAUGE", "TIMER")
        + ("create_counter", "create_gauge", "create_timer", "validate_metrics"),
    ),
    "seldon_core.flask_utils": ("servegraph.compat.seldon", ("SeldonMicroserviceException",)),
    # Seldon's protobuf messages are not provided: importing the module works (classes import
    # it for type hints), using one of its messages is refused by name.
    "seldon_core.proto.prediction_pb2": (None, ()),
    "kserve": (
        "servegraph.compat.kserve",
        ("Model", "ModelServer", "InferRequest", "InferResponse", "InferInput", "InferOutput"),
    ),
    "kserve.model": (
        "servegraph.compat.kserve",
        ("Model", "BaseKServeModel", "InferenceModel", "InferenceVerb", "PredictorProtocol")
        + ("InferRequest", "InferResponse", "ModelInferRequest"),
    ),
    "kserve.model_server": ("servegraph.compat.kserve", ("ModelServer", "parser", "args", "app")),
    "kserve.errors": (
        "servegraph.compat.kserve_errors",
        ("InferenceError", "InvalidInput", "ModelNotFound", "ModelNotReady", "ModelMissingError")
        + ("UnsupportedProtocol", "ServerNotReady", "ServerNotLive", "NoModelReady")
        + ("WorkersShouldBeLessThanMaxWorkersError",),
    ),
    "kserve.logging": ("servegraph.compat.kserve", ("logger", "trace_logger", "configure_logging")),
    "kserve.storage": ("servegraph.compat.kserve", ("Storage",)),
    "kserve.protocol.infer_type": (
        "servegraph.compat.kserve_infer",
        ("InferInput", "InferOutput", "InferRequest", "InferResponse", "RequestedOutput")
        + ("serialize_byte_tensor", "deserialize_bytes_tensor", "to_http_parameters"),
    ),
    # KServe's gRPC messages: the names import (for type hints and `isinstance`), making one
    # is refused by name.
    "kserve.protocol.grpc.grpc_predict_v2_pb2": (
        "servegraph.compat.kserve",
        ("ModelInferRequest", "ModelInferResponse"),
    ),
    "kserve.utils.utils": (
        "servegraph.compat.kserve",
        ("generate_uuid", "get_predict_input", "get_predict_response", "strtobool", "is_v1", "is_v2"),
    ),
    "kserve.utils.numpy_codec": ("servegraph.compat.kserve_infer", ("to_np_dtype", "from_np_dtype")),
    "kserve_storage": ("servegraph.compat.kserve", ("Storage",)),
}

# MLServer's model API (`servegraph.compat.mlserver`): each module with the names MLServer's
# has of it that the stand-in provides.
_MLSERVER_TYPES = (
    "InferenceRequest",
    "InferenceResponse",
    "RequestInput",
    "ResponseOutput",
    "RequestOutput",
    "MetadataTensor",
    "MetadataModelResponse",
    "MetadataServerResponse",
    "MetadataModelErrorResponse",
    "MetadataServerErrorResponse",
    "InferenceErrorResponse",
    "Parameters",
    "TensorData",
    "Datatype",
)
_MLSERVER_CODEC_UTILS = (
    "DecodedParameterName",
    "has_decoded",
    "get_decoded",
    "get_decoded_or_raw",
    "encode_inference_response",
    "encode_response_output",
    "decode_request_input",
    "decode_inference_request",
)
_MLSERVER_CODEC_BASE = (
    "InputCodec",
    "RequestCodec",
    "register_input_codec",
    "register_request_codec",
    "InputCodecLike",
    "RequestCodecLike",
)
for _module, _names in {
    "mlserver": ("MLModel", "ModelSettings"),
    "mlserver.model": ("MLModel",),
    "mlserver.types": _MLSERVER_TYPES,
    "mlserver.types.dataplane": _MLSERVER_TYPES,
    "mlserver.codecs": (
        "CodecError",
        "NumpyCodec",
        "NumpyRequestCodec",
        "StringCodec",
        "StringRequestCodec",
        "Base64Codec",
        "DatetimeCodec",
        "PandasCodec",
        "decode_args",
    )
    + _MLSERVER_CODEC_BASE
    + _MLSERVER_CODEC_UTILS,
    "mlserver.codecs.base": _MLSERVER_CODEC_BASE
    + ("find_input_codec", "find_request_codec", "find_input_codec_by_payload")
    + ("find_request_codec_by_payload",),
    "mlserver.codecs.numpy": ("NumpyCodec", "NumpyRequestCodec", "to_dtype", "to_datatype"),
    "mlserver.codecs.string": ("StringCodec", "StringRequestCodec", "encode_str", "decode_str"),
    "mlserver.codecs.base64": ("Base64Codec",),
    "mlserver.codecs.datetime": ("DatetimeCodec",),
    "mlserver.codecs.pandas": ("PandasCodec",),
    "mlserver.codecs.lists": ("is_list_of", "as_list"),
    "mlserver.codecs.utils": _MLSERVER_CODEC_UTILS
    + ("InputOrOutput", "SingleInputRequestCodec", "inject_batch_dimension"),
    "mlserver.codecs.errors": ("CodecError", "CodecNotFound", "OutputNotFound", "InputsNotFound"),
    "mlserver.codecs.decorator": ("decode_args", "SignatureCodec"),
    "mlserver.errors": (
        "MLServerError",
        "InvalidModelURI",
        "ModelNotFound",
        "ModelNotReady",
        "InferenceError",
        "ModelParametersMissing",
    ),
    "mlserver.settings": ("ModelSettings", "ModelParameters"),
    "mlserver.utils": ("get_model_uri", "to_absolute_path", "generate_uuid", "get_wrapped_method"),
    "mlserver.logging": ("logger", "get_logger"),
    "mlserver.handlers": ("custom_handler",),
    "mlserver.handlers.custom": ("custom_handler", "CustomHandler"),
}.items():
    PROVIDED[_module] = ("servegraph.compat.mlserver", _names)
del _module, _names

# The pip name of each package, for the message that says to install it.
DISTRIBUTIONS = {
    "mlrun": "mlrun",
    "seldon_core": "seldon-core",
    "kserve": "kserve",
    "kserve_storage": "kserve-storage",
    "mlserver": "mlserver",
}


def _modules():
    """Every stand-in module name (the provided ones and their parents)."""
    names = set()
    for name in PROVIDED:
        parts = name.split(".")
        names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return names


MODULES = frozenset(_modules())


def _refusal(top, name):
    mine = sorted(m for m in PROVIDED if m.split(".")[0] == top)
    if len(mine) <= 12:
        provided = ", ".join("`%s` (%s)" % (m, ", ".join(PROVIDED[m][1])) for m in mine)
    else:
        # Many modules (MLServer's): the names of the one asked about, and the modules.
        parent = name.rpartition(".")[0]
        names = PROVIDED.get(parent, (None, ()))[1]
        provided = "`%s` (%s) and the modules %s" % (
            parent,
            ", ".join(names) or "its submodules",
            ", ".join("`%s`" % m for m in mine),
        )
    return (
        "`%s` is not part of servegraph's stand-in for %s (the package is not installed in this "
        "interpreter): servegraph provides %s only. Install %s in the model's interpreter "
        "(the step's `python:`) to use it" % (name, top, provided, DISTRIBUTIONS[top])
    )


class Aliases:
    """The finder and loader of the stand-in modules (one instance, first on `sys.meta_path`)."""

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top not in DISTRIBUTIONS:
            return None
        if fullname == top:
            if self._found_elsewhere(fullname):
                return None
        else:
            parent = sys.modules.get(top)
            spec = getattr(parent, "__spec__", None)
            if spec is None or spec.loader is not self:
                # The real package is imported: its own modules only, some changed once run.
                return self._patched(fullname, path) if fullname in PATCHES else None
            if fullname not in MODULES:
                # Named after the package (`mlrun`), which is what is missing; not after the
                # module, so that `from mlrun import x` reports this rather than its own
                # "cannot import name" (importlib ignores a failure named after `mlrun.x`).
                raise ModuleNotFoundError(_refusal(top, fullname), name=top)
        import importlib.machinery

        return importlib.machinery.ModuleSpec(
            fullname, self, origin="servegraph's stand-in", is_package=True
        )

    def _found_elsewhere(self, name):
        """Whether another finder on `sys.meta_path` finds the package `name`, other than as a
        namespace package (a bare folder of that name)."""
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, None)
            namespace = spec is not None and spec.origin is None and spec.submodule_search_locations
            if spec is not None and not namespace:
                return True
        return False

    def _patched(self, fullname, path):
        """The real module's spec, from the finders after this one, its loader changing the
        module once it has run (`PATCHES`)."""
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path)
            if spec is None:
                continue
            if hasattr(spec.loader, "exec_module"):
                spec.loader = _Patching(spec.loader, PATCHES[fullname])
            return spec
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        import importlib

        name = module.__name__
        top = name.partition(".")[0]
        source, names = PROVIDED.get(name, (None, ()))
        if source is not None:
            provider = importlib.import_module(source)
            for n in names:
                setattr(module, n, getattr(provider, n))
        prefix = name + "."
        below = [m[len(prefix) :] for m in MODULES if m.startswith(prefix)]
        children = sorted(m for m in below if "." not in m)
        module.__all__ = list(names)
        module.__doc__ = "servegraph's stand-in for `%s` (%s is not installed): %s" % (
            name,
            top,
            ", ".join(names + tuple(children)) or "its submodules",
        )

        def __getattr__(attr):
            if attr in children:
                return importlib.import_module(prefix + attr)
            raise AttributeError(_refusal(top, prefix + attr))

        module.__getattr__ = __getattr__


class _Patching:
    """A real module's loader, then a change to the module it ran."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def _no_kserve_server(module):
    """KServe's own `ModelServer.start` starts nothing inside a worker (it would listen on
    KServe's ports and never return from a model file that calls it outside its `__main__`
    block): it says in the log that servegraph serves the model, as the stand-in's does."""
    from servegraph.compat.kserve import ModelServer

    server = getattr(module, "ModelServer", None)
    if isinstance(server, type):
        server.start = ModelServer.start


# Real modules changed once they have run, by name.
PATCHES = {"kserve.model_server": _no_kserve_server}

_ALIASES = Aliases()


def install():
    """Puts the finder first on `sys.meta_path` (once)."""
    if _ALIASES not in sys.meta_path:
        sys.meta_path.insert(0, _ALIASES)
