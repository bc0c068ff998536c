"""MLServer's `MLModel` API (`api: mlserver`): MLServer's own base class and types when
`mlserver` is installed in the model's interpreter, else `servegraph.compat.mlserver`'s."""

import base64

import numpy as np

from servegraph import ModelError
from servegraph._adapter import awaited, base_class, operation

# Where MLServer's base class is defined: MLServer's own module, or servegraph's stand-in.
BASES = ("mlserver.model", "servegraph.compat.mlserver")

# A NumPy dtype's OIP datatype (object arrays: BYTES).
DATATYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype("<u1"): "UINT8",
    np.dtype("<u2"): "UINT16",
    np.dtype("<u4"): "UINT32",
    np.dtype("<u8"): "UINT64",
    np.dtype("<i1"): "INT8",
    np.dtype("<i2"): "INT16",
    np.dtype("<i4"): "INT32",
    np.dtype("<i8"): "INT64",
    np.dtype("<f2"): "FP16",
    np.dtype("<f4"): "FP32",
    np.dtype("<f8"): "FP64",
    np.dtype(object): "BYTES",
}
# A numeric datatype's NumPy dtype.
DTYPES = {name: dtype for dtype, name in DATATYPES.items() if name != "BYTES"}


def base_of(target):
    """The `MLModel` class `target` derives from, or None."""
    return base_class(target, "MLModel", BASES)


class Kit:
    """The types a model is driven with: MLServer's own (`real`) or the stand-in's, and how
    requests are built from tensors in each (without the types' validation per call:
    the values are the engine's, already checked)."""

    def __init__(self, base):
        self.real = base.__module__ == "mlserver.model"
        if self.real:
            import mlserver.errors as errors
            import mlserver.settings as settings
            import mlserver.types as types
        else:
            from servegraph.compat import mlserver as types

            errors = settings = types
        self.types, self.settings, self.errors = types, settings, errors
        self.Parameters = types.Parameters
        if not self.real:
            self.input = types._request_input
            self.inference_request = types._inference_request
            self.parameters = lambda values: types.Parameters(**values)
            self.request_output = lambda name, parameters: types.RequestOutput(name=name, parameters=parameters)
            self.array_data = types.TensorData._of
            self.list_data = types.TensorData
            return
        from servegraph.compat.mlserver import _as_list

        if constructible(types):
            made_as = constructor
        else:
            made_as = lambda cls, names: lambda *values: cls.model_construct(  # noqa: E731
                **{k: v for k, v in zip(names, values) if v is not None}
            )
        input = made_as(types.RequestInput, ("name", "shape", "datatype", "parameters", "data"))
        request = made_as(types.InferenceRequest, ("id", "parameters", "inputs", "outputs"))
        output = made_as(types.RequestOutput, ("name", "parameters"))
        data = made_as(types.TensorData, ("root",))
        Parameters = types.Parameters
        self.input = input
        self.inference_request = request
        self.request_output = output
        if constructible(types) and set(Parameters.model_fields) == {"content_type", "headers"}:
            self.parameters = parameters_constructor(Parameters)
        else:
            self.parameters = lambda values: Parameters(**values)
        # A tensor's flat elements as MLServer's REST server parses them (a list).
        self.array_data = lambda array: data(_as_list(array))
        self.list_data = data

    def model_settings(self, spec, target):
        """The model's `ModelSettings`, as MLServer would have read them from
        `model-settings.json`: the step's `model_settings` (that file), else its name,
        `model_uri` as `parameters.uri` and `class_args` as `parameters.extra`."""
        given = dict(spec.get("model_settings") or {})
        source = given.pop("_source", None)
        given["name"] = spec.get("step") or given.get("name") or ""
        given["implementation"] = "%s.%s" % (target.__module__, target.__name__)
        parameters = dict(given.get("parameters") or {})
        if spec.get("model_uri") is not None:
            parameters["uri"] = spec["model_uri"]
        if spec.get("class_args"):
            parameters["extra"] = dict(spec["class_args"])
        if parameters or source:
            given["parameters"] = parameters
        if source:
            given["_source"] = source
        ModelSettings = self.settings.ModelSettings
        if self.real:
            # MLServer's own way from a file (`parse_file`): validated, no environment read.
            settings = ModelSettings.model_validate(given)
        else:
            settings = ModelSettings(**given)
            settings.implementation = target
        return settings

    def request(self, inputs, parameters, id, input_parameters, outputs, headers):
        """An `InferenceRequest` of the call's tensors, as MLServer's servers would have
        parsed it: each input's `data` its flat elements (text for BYTES), its `parameters`
        as the client sent them; the request's `parameters` with the request's `headers` (as
        MLServer inserts them)."""
        given = input_parameters or {}
        made = self.input
        request_inputs = []
        for name, array in inputs.items():
            datatype = DATATYPES.get(array.dtype)
            if datatype is None:
                raise ModelError("input `%s` has dtype %s, which has no OIP datatype" % (name, array.dtype), status=400)
            params = given.get(name)
            if datatype == "BYTES" and params and params.get("content_type") == "base64":
                # The engine decoded the client's base64: the class gets it as MLServer would.
                data = self.list_data([base64.b64encode(b).decode("ascii") for b in array.reshape(-1).tolist()])
            else:
                data = self.array_data(array)
            request_inputs.append(
                made(name, list(array.shape), datatype, self.parameters(params) if params else None, data)
            )
        if outputs is not None:
            outputs = [
                self.request_output(o["name"], self.parameters(o["parameters"]) if o.get("parameters") else None)
                for o in outputs
            ]
        if headers is not None:
            parameters = dict(parameters, headers=headers)
        return self.inference_request(
            id,
            self.parameters(parameters) if parameters else None,
            request_inputs,
            outputs,
        )


def log_mlserver(model):
    """MLServer's logger (`mlserver.logging.logger`, the `mlserver` logger) to the worker's
    stderr (the engine's log) at INFO, in MLServer's format, unless it or the root logger
    already has a handler."""
    import logging
    import sys

    logger = logging.getLogger("mlserver")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%%(asctime)s [%%(name)s][%s] %%(levelname)s - %%(message)s" % model)
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def constructible(types):
    """Whether MLServer's types are pydantic 2 models without private attributes or a
    post-init, so that `constructor` makes what `model_construct` would."""
    try:
        import pydantic
    except ImportError:
        return False
    if not pydantic.VERSION.startswith("2."):
        return False
    for name in ("RequestInput", "RequestOutput", "InferenceRequest", "TensorData", "Parameters"):
        cls = getattr(types, name)
        if not issubclass(cls, pydantic.BaseModel):
            return False
        if cls.__private_attributes__ or cls.__pydantic_post_init__:
            return False
    return True


def parameters_constructor(cls):
    """`Parameters(**values)` for JSON's values, as `model_construct` makes it: its two
    fields in `__dict__`, any other key an extra one."""
    setattr_ = object.__setattr__
    new = object.__new__

    def make(values):
        model = new(cls)
        extra = dict(values)
        fields = {"content_type": extra.pop("content_type", None), "headers": extra.pop("headers", None)}
        setattr_(model, "__dict__", fields)
        setattr_(model, "__pydantic_extra__", extra)
        setattr_(model, "__pydantic_fields_set__", set(values))
        setattr_(model, "__pydantic_private__", None)
        return model

    return make


def constructor(cls, names):
    """A function of the values of `names` (in order) making what `cls.model_construct` makes
    of those that are not None (the others unset, and None), in a fraction of its time:
    model_construct loops over the fields and their defaults in Python."""
    setattr_ = object.__setattr__
    new = object.__new__
    every = frozenset(names)

    def make(*values):
        model = new(cls)
        fields = dict(zip(names, values))
        setattr_(model, "__dict__", fields)
        setattr_(model, "__pydantic_extra__", None)
        given = set(every) if None not in values else {k for k, v in fields.items() if v is not None}
        setattr_(model, "__pydantic_fields_set__", given)
        setattr_(model, "__pydantic_private__", None)
        return model

    return make


class MLServer:
    """MLServer's `MLModel` API: the class constructed with its `ModelSettings`, `load()`ed
    (what it returns is `ready`), then per request `predict(InferenceRequest)` →
    `InferenceResponse`, whose outputs (datatype, shape, data, parameters) are the answer's
    tensors; `predict_stream` for a streamed call when the class has its own."""

    name = "mlserver"
    # The request beyond its tensors (headers, id, inputs' parameters, outputs asked for) is
    # handed over with each call.
    takes_request = True
    # An `MLServerError`'s message is the whole answer (`{"error": str(exc)}`).
    bare_errors = True

    @staticmethod
    def detects(target, spec):
        """A subclass of `MLModel` (MLServer's own or `servegraph.compat.mlserver`'s)."""
        return base_of(target) is not None

    def __init__(self, target, spec):
        base = base_of(target)
        if base is None:
            raise TypeError(
                "`%s` is not a subclass of MLServer's `MLModel` (`api: mlserver` serves those)"
                % getattr(target, "__name__", target)
            )
        self.kit = kit = Kit(base)
        self.error_base = kit.errors.MLServerError
        log_mlserver(spec.get("step") or "")
        settings = kit.model_settings(spec, target)
        self.obj = target(settings)
        # MLServer's registry: `model.ready = await model.load()`.
        self.obj.ready = awaited(self.obj.load())
        # Not ready from the start: readiness says so at once.
        self.unready = None
        if not self.obj.ready:
            error = kit.errors.ModelNotReady(self.obj.name, self.obj.version)
            self.unready = "%s: %s" % (type(error).__name__, error)
        # Rows are independent under `batch:` (MLServer's adaptive batching joins requests).
        self.batchable = True
        self.metadata = None
        self.streams = type(self.obj).predict_stream is not base.predict_stream
        # Set by the worker before each call (`takes_request`).
        self.headers = self.request_id = self.input_parameters = self.requested_outputs = None
        self.streaming = False
        self.handlers = {
            name: getattr(self.obj, name)
            for name in dir(type(self.obj))
            if hasattr(getattr(type(self.obj), name, None), "__custom_handler__")
        }

    def status_of(self, exc):
        """MLServer's status for an exception: an `MLServerError`'s `status_code`."""
        if isinstance(exc, self.error_base):
            return getattr(exc, "status_code", 400)
        return None

    def operation(self, op, body):
        handler = self.handlers.get(op)
        if handler is None:
            return operation(self.obj, op, body)
        return awaited(handler(body))

    def health_check(self):
        """Whether `load()` made the model ready (MLServer's `model.ready`): its
        `ModelNotReady` when not."""
        obj, not_ready = self.obj, self.kit.errors.ModelNotReady

        def ready():
            if not obj.ready:
                raise not_ready(obj.name, obj.version)

        return ready

    def predict(self, inputs, parameters):
        obj = self.obj
        if not obj.ready:
            raise self.kit.errors.ModelNotReady(obj.name, obj.version)
        request = self.kit.request(
            inputs, parameters, self.request_id, self.input_parameters, self.requested_outputs, self.headers
        )
        if self.streaming and self.streams:
            return self._stream(request)
        return self._outputs(awaited(obj.predict(request)))

    def _stream(self, request):
        """`predict_stream` over the one request, each response's outputs in turn."""

        async def payloads():
            yield request

        responses = self.obj.predict_stream(payloads())
        while True:
            try:
                response = awaited(responses.__anext__())
            except StopAsyncIteration:
                return
            yield self._outputs(response)

    def _outputs(self, response):
        """The response's outputs as arrays by name; their parameters and the response's
        (but its `headers`) go with the answer."""
        outputs = getattr(response, "outputs", None)
        if outputs is None:
            raise TypeError(
                "`predict` returned %s, not an InferenceResponse" % type(response).__name__
            )
        arrays = {}
        output_parameters = {}
        for out in outputs:
            name = str(out.name)
            arrays[name] = array_of(out)
            params = dumped(out.parameters)
            if params:
                output_parameters[name] = params
        self.output_parameters_out = output_parameters or None
        params = dumped(response.parameters)
        if params:
            # MLServer sends these as the answer's HTTP headers, not servegraph (left out).
            params.pop("headers", None)
        self.parameters_out = params or None
        return arrays


# The types of parameter values read as they are (anything else is dumped by its type).
_PLAIN = frozenset((str, int, float, bool, type(None)))


def dumped(parameters):
    """`parameters` as MLServer's REST server writes them (`model_dump()`: unset and None
    left out)."""
    if parameters is None:
        return None
    if isinstance(parameters, dict):
        return {k: v for k, v in parameters.items() if v is not None}
    # What model_dump gives, read directly where every value is a plain one (the stand-in's
    # and pydantic's alike keep fields in `__dict__`; pydantic its extra ones apart).
    fields = parameters.__dict__
    extra = getattr(parameters, "__pydantic_extra__", None)
    out = {}
    for items in (fields, extra or {}):
        for k, v in items.items():
            if v is None or k[0] == "_":
                continue
            if type(v) not in _PLAIN:
                return parameters.model_dump()
            out[k] = v
    return out


def array_of(out):
    """A `ResponseOutput`'s data as an array of its shape and datatype."""
    datatype = out.datatype
    if type(datatype) is not str:
        datatype = getattr(datatype, "value", datatype)
    shape = out.shape
    count = 1
    for d in shape:
        count *= d
    data = out.data
    fresh = getattr(data, "_fresh_array", None)
    array = fresh() if fresh is not None else None
    if array is None:
        array = getattr(data, "root", data)
    name = out.name
    if datatype == "BYTES":
        if isinstance(array, (bytes, bytearray, str)):
            flat = np.empty(1, dtype=object)
            flat[0] = array
        else:
            flat = np.asarray(array, dtype=object).reshape(-1)
        # MLServer sends a BYTES output's data and shape as the class set them, even when
        # they disagree (its JSON example: one element of shape [len(text)]); a tensor's
        # shape fits its elements: such an output goes as its elements ([n]).
        return flat.reshape(shape) if flat.size == count else flat
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise ModelError("output `%s` has datatype `%s`, which is not an OIP datatype" % (name, datatype))
    try:
        array = np.asarray(array, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelError("output `%s`: its data is not %s: %s" % (name, datatype, exc)) from None
    if array.size != count:
        raise ModelError(
            "output `%s`: shape %s needs %d elements, its data has %d" % (name, list(shape), count, array.size)
        )
    return array.reshape(shape)
