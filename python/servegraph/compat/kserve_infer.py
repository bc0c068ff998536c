"""KServe's request and response types (`kserve.protocol.infer_type`: `InferInput`,
`InferOutput`, `InferRequest`, `InferResponse`, `RequestedOutput`) and its NumPy datatype
mapping (`kserve.utils.numpy_codec`), for classes written for `kserve` when the model's
interpreter does not have it (`servegraph._imports` answers those modules with these).

They behave as KServe 0.21's do for REST (the OIP's JSON and its binary extension); what
only concerns KServe's gRPC messages (`from_grpc`, `to_grpc`) is refused by name: under
servegraph a class never sees a protobuf message.
"""

import json
import struct

import numpy as np

from servegraph.compat.kserve_errors import InferenceError, InvalidInput

# The OIP's datatypes and NumPy's.
_NP_OF = {
    "BOOL": bool,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
_OIP_OF = {np.dtype(t): name for name, t in _NP_OF.items() if name != "BYTES"}


def to_np_dtype(dtype):
    """The NumPy type of an OIP datatype (`"FP32"` → `np.float32`), or None."""
    return _NP_OF.get(dtype)


def from_np_dtype(np_dtype):
    """The OIP datatype of a NumPy dtype (`np.float32` → `"FP32"`): strings, bytes, objects and
    datetimes are `BYTES`; None for what the OIP has no datatype for."""
    try:
        np_dtype = np.dtype(np_dtype)
    except TypeError:
        return None
    name = _OIP_OF.get(np_dtype)
    if name is not None:
        return name
    if np_dtype.kind in "OSUM":
        return "BYTES"
    return None


def serialize_byte_tensor(input_tensor):
    """A BYTES tensor as the OIP's binary form: each element (row-major) as a 4-byte
    little-endian length and its bytes (`str` elements as UTF-8, others as `str()`), as a 0-d
    object array holding them joined (an empty one for an empty tensor)."""
    if input_tensor.size == 0:
        return np.empty([0], dtype=np.object_)
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        raise InferenceError("cannot serialize bytes tensor: invalid datatype")
    parts = []
    for item in input_tensor.reshape(-1, order="C"):
        if isinstance(item, bytes):
            raw = item
        elif input_tensor.dtype == np.object_:
            raw = str(item).encode("utf-8")
        else:
            raw = bytes(item)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return np.asarray(b"".join(parts), dtype=np.object_)


def deserialize_bytes_tensor(encoded_tensor):
    """The elements of a BYTES tensor's binary form, as a 1-D object array of `bytes`."""
    items = []
    offset, end = 0, len(encoded_tensor)
    while offset < end:
        (length,) = struct.unpack_from("<I", encoded_tensor, offset)
        offset += 4
        items.append(bytes(encoded_tensor[offset : offset + length]))
        offset += length
    return np.array(items, dtype=np.object_)


def to_http_parameters(parameters):
    """Parameters as REST carries them (a copy of the dict)."""
    return dict(parameters.items())


def _grpc_refused(what):
    raise NotImplementedError(
        "%s: KServe's gRPC messages are not part of servegraph's stand-in for kserve (a class "
        "under servegraph gets REST's InferRequest; servegraph's gRPC port speaks the OIP "
        "itself). Install kserve in the model's interpreter to use them" % what
    )


def _check_array(tensor, datatype, shape, what):
    if not isinstance(tensor, np.ndarray):
        raise InferenceError("input_tensor must be a numpy array")
    got = from_np_dtype(tensor.dtype)
    if datatype != got:
        raise InferenceError(
            "got unexpected datatype {} from numpy array, expected {}".format(got, datatype)
        )
    if list(tensor.shape) != list(shape):
        raise InferenceError(
            "got unexpected numpy array shape [{}], expected [{}]".format(
                str(tuple(tensor.shape))[1:-1], str(list(shape))[1:-1]
            )
        )


def _as_text(tensor):
    """A BYTES array's elements as JSON text (bytes decoded as UTF-8, others as `str()`)."""
    out = []
    for item in tensor.reshape(-1, order="C"):
        if isinstance(item, (bytes, np.bytes_)):
            try:
                out.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError:
                raise InferenceError(
                    'Failed to encode "{}" using UTF-8. Please use binary_data=True, if you '
                    "want to pass a byte array.".format(item)
                )
        else:
            out.append(str(item))
    return out


class _Tensor:
    """What `InferInput` and `InferOutput` share: a name, a shape, a datatype, the data (a
    flat list, a NumPy array, or raw bytes after `set_data_from_numpy(..., binary_data=True)`)
    and parameters."""

    _invalid = "invalid datatype in the input"

    def __init__(self, name, shape, datatype, data=None, parameters=None):
        self._name = name
        self._shape = shape
        self._datatype = datatype.upper()
        self._parameters = parameters
        self._data = data
        self._raw_data = None

    @property
    def name(self):
        return self._name

    @property
    def datatype(self):
        return self._datatype

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, data):
        self._data = data

    @property
    def shape(self):
        return self._shape

    @shape.setter
    def shape(self, shape):
        self._shape = shape

    @property
    def parameters(self):
        return self._parameters

    @parameters.setter
    def parameters(self, params):
        self._parameters = params

    def as_numpy(self):
        """The data as a NumPy array of the datatype's type and the tensor's shape."""
        dtype = to_np_dtype(self._datatype)
        if dtype is None:
            raise InvalidInput(self._invalid)
        if self._raw_data is not None:
            if self._datatype == "BYTES":
                array = deserialize_bytes_tensor(self._raw_data)
            else:
                array = np.frombuffer(self._raw_data, dtype=dtype)
            return array.reshape(self._shape)
        return np.array(self._data, dtype=dtype).reshape(self._shape)

    def set_data_from_numpy(self, tensor, binary_data=True):
        """Sets the data from `tensor` (its datatype and shape must be the tensor's): as a flat
        list for JSON (`binary_data=False`; BYTES as text), or as raw bytes (BYTES in the
        OIP's binary form) with `binary_data_size` in the parameters."""
        if isinstance(tensor, np.ndarray) and np.issubdtype(tensor.dtype, np.datetime64):
            tensor = tensor.astype(np.object_)
        _check_array(tensor, self._datatype, self._shape, self._name)
        if not binary_data:
            if self._parameters:
                self._parameters.pop("binary_data_size", None)
            self._raw_data = None
            if self._datatype == "BYTES":
                self._data = _as_text(tensor) if tensor.size > 0 else []
            else:
                self._data = tensor.reshape(-1).tolist()
            return
        self._data = None
        if self._datatype == "BYTES":
            packed = serialize_byte_tensor(tensor)
            self._raw_data = packed.item() if packed.size > 0 else b""
        else:
            self._raw_data = tensor.tobytes()
        if self._parameters is None:
            self._parameters = {}
        self._parameters["binary_data_size"] = len(self._raw_data)

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self.name == other.name
            and self.shape == other.shape
            and self.datatype == other.datatype
            and self.parameters == other.parameters
            and _same(self.data, other.data)
            and self._raw_data == other._raw_data
        )

    __hash__ = None

    def to_dict(self):
        return {
            "name": self.name,
            "shape": self.shape,
            "datatype": self.datatype,
            "data": self.data,
            "parameters": self.parameters,
        }

    def __repr__(self):
        return '"name": "%s","shape": %s,"datatype": "%s","data": %s,"parameters": %s' % (
            self.name,
            self.shape,
            self.datatype,
            self.data,
            self.parameters,
        )

    __str__ = __repr__


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


class InferInput(_Tensor):
    """An input tensor of an inference request (KServe's `InferInput`)."""

    def as_numpy(self):
        if to_np_dtype(self._datatype) is None:
            raise InvalidInput("invalid datatype %s in the input" % None)
        return super().as_numpy()

    def as_string(self):
        """A BYTES input's elements as text, one list per row of the data."""
        if self._datatype != "BYTES":
            raise InvalidInput("invalid datatype %s in the input" % self._datatype)
        return [s.decode("utf-8") for row in self._data for s in row]


class InferOutput(_Tensor):
    """An output tensor of an inference response (KServe's `InferOutput`)."""


class RequestedOutput:
    """An output a request asks for, with its parameters (`binary_data`)."""

    def __init__(self, name, parameters=None):
        self._name = name
        self._parameters = parameters

    @property
    def name(self):
        return self._name

    @property
    def parameters(self):
        return self._parameters

    @parameters.setter
    def parameters(self, params):
        self._parameters = params

    @property
    def binary_data(self):
        """The output's `binary_data` parameter, or None when it has none."""
        if self._parameters and "binary_data" in self._parameters:
            return self._parameters["binary_data"]
        return None

    def __eq__(self, other):
        return (
            isinstance(other, RequestedOutput)
            and self.name == other.name
            and self.parameters == other.parameters
        )

    __hash__ = None

    def __repr__(self):
        return "RequestedOutput(name=%s, parameters=%s)" % (self.name, self.parameters)

    __str__ = __repr__


def _parse_json(raw):
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidInput("Unrecognized request format: %s" % exc)


def _dumps(value):
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class InferRequest:
    """An inference request as KServe hands a v2 request to a class (its `InferRequest`):
    `id`, `model_name`, `inputs` (`InferInput`s), `parameters`, `request_outputs`."""

    def __init__(
        self,
        model_name,
        infer_inputs,
        request_id=None,
        raw_inputs=None,
        from_grpc=False,
        parameters=None,
        request_outputs=None,
        model_version=None,
    ):
        self.id = request_id
        self.model_name = model_name
        self.inputs = infer_inputs
        self.parameters = parameters
        self.from_grpc = from_grpc
        self._use_raw_outputs = False
        if raw_inputs:
            self._use_raw_outputs = True
            for infer_input, raw in zip(self.inputs, raw_inputs):
                infer_input._raw_data = raw
        self.request_outputs = request_outputs
        self.model_version = model_version

    @property
    def use_binary_outputs(self):
        """Whether outputs go as binary data: the request's `binary_data_output` (REST)."""
        if self._use_raw_outputs and self.from_grpc:
            return True
        if self.parameters and not self.from_grpc:
            return self.parameters.get("binary_data_output", False)
        return False

    @classmethod
    def from_grpc(cls, request):
        _grpc_refused("InferRequest.from_grpc")

    @classmethod
    def from_inference_request(cls, request, model_name):
        _grpc_refused("InferRequest.from_inference_request (KServe's pydantic InferenceRequest)")

    @classmethod
    def from_bytes(cls, req_bytes, json_length, model_name):
        """A request from a REST body: its JSON (the first `json_length` bytes), then the
        binary data of the inputs that have `binary_data_size`."""
        body = _parse_json(req_bytes[:json_length])
        inputs = []
        start = json_length
        for spec in body["inputs"]:
            parameters = spec.get("parameters", None)
            infer_input = InferInput(
                name=spec["name"],
                shape=spec["shape"],
                datatype=spec["datatype"],
                parameters=parameters,
            )
            data = spec.get("data", None)
            if data is not None:
                if infer_input.datatype == "FP16":
                    raise InvalidInput(
                        "Receiving FP16 data via JSON is not supported. Please use the binary "
                        "data format for input %s" % infer_input.name
                    )
                infer_input.data = data
            elif parameters and "binary_data_size" in parameters:
                size = parameters.get("binary_data_size", None)
                if size is None:
                    raise InvalidInput(
                        "'binary_data_size' is not specified for input '%s' for model '%s'"
                        % (infer_input.name, model_name)
                    )
                infer_input._raw_data = req_bytes[start : start + size]
                infer_input.set_data_from_numpy(infer_input.as_numpy(), binary_data=False)
                start += size
            else:
                raise InvalidInput(
                    "'data' field is missing for input '%s' for model '%s'"
                    % (infer_input.name, model_name)
                )
            inputs.append(infer_input)
        requested = None
        if body.get("outputs", None) is not None:
            requested = [
                RequestedOutput(name=o["name"], parameters=o.get("parameters", None))
                for o in body["outputs"]
            ]
        return cls(
            model_name=model_name,
            request_id=body.get("id", None),
            parameters=body.get("parameters", None),
            infer_inputs=inputs,
            request_outputs=requested,
        )

    def to_rest(self):
        """The request as a REST body: `(dict, None)`, or `(bytes, json_length)` when an input
        holds binary data."""
        inputs, raws = [], []
        for infer_input in self.inputs:
            if infer_input.data is None and infer_input._raw_data is None:
                raise InvalidInput(
                    "'data' field is missing for output '%s' for model '%s'"
                    % (infer_input.name, self.model_name)
                )
            if isinstance(infer_input.data, np.ndarray):
                infer_input.set_data_from_numpy(infer_input.data, binary_data=False)
            if infer_input.data and infer_input._raw_data:
                raise InvalidInput(
                    "Both 'data' and 'raw_data' fields are set for input '%s' for model '%s'"
                    % (infer_input.name, self.model_name)
                )
            if infer_input.datatype == "FP16" and infer_input.data:
                raise InvalidInput(
                    "Sending FP16 data via JSON is not supported. Please use the binary data "
                    "format for input %s" % infer_input.name
                )
            entry = {
                "name": infer_input.name,
                "shape": infer_input.shape,
                "datatype": infer_input.datatype,
            }
            if infer_input.parameters:
                entry["parameters"] = to_http_parameters(infer_input.parameters)
            if infer_input._raw_data:
                raws.append(infer_input._raw_data)
            else:
                entry["data"] = infer_input.data
            inputs.append(entry)
        import uuid

        rest = {"id": self.id if self.id else str(uuid.uuid4()), "model_name": self.model_name, "inputs": inputs}
        if self.request_outputs:
            outputs = []
            for r in self.request_outputs:
                entry = {"name": r.name}
                if r.parameters:
                    entry["parameters"] = to_http_parameters(r.parameters)
                outputs.append(entry)
            rest["outputs"] = outputs
        if self.parameters:
            rest["parameters"] = to_http_parameters(self.parameters)
        if raws:
            head = _dumps(rest)
            return b"".join([head] + raws), len(head)
        return rest, None

    def to_grpc(self):
        _grpc_refused("InferRequest.to_grpc")

    def as_dataframe(self):
        """The inputs as a pandas DataFrame, one column each (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "InferRequest.as_dataframe needs pandas, which is not installed in the model's "
                "interpreter"
            ) from None
        frames = []
        for infer_input in self.inputs:
            data = infer_input.data
            if infer_input.datatype == "BYTES":
                data = [str(v, "utf-8") if isinstance(v, bytes) else v for v in data]
            frames.append(pd.DataFrame(data, columns=[infer_input.name]))
        return pd.concat(frames, axis=1)

    def get_input_by_name(self, name):
        """The input named `name`, or None."""
        for infer_input in self.inputs:
            if infer_input.name == name:
                return infer_input
        return None

    def __eq__(self, other):
        return (
            isinstance(other, InferRequest)
            and self.model_name == other.model_name
            and self.id == other.id
            and self.from_grpc == other.from_grpc
            and self.parameters == other.parameters
            and self.inputs == other.inputs
            and self.request_outputs == other.request_outputs
        )

    __hash__ = None

    def to_dict(self):
        return {
            "id": self.id,
            "model_name": self.model_name,
            "inputs": [i.to_dict() for i in self.inputs],
            "parameters": self.parameters,
            "from_grpc": self.from_grpc,
        }

    def __repr__(self):
        return '"id": "%s","model_name": "%s","inputs": %r,"parameters": %s,"from_grpc": %s' % (
            self.id,
            self.model_name,
            self.inputs,
            self.parameters,
            self.from_grpc,
        )

    __str__ = __repr__


class InferResponse:
    """An inference response (KServe's `InferResponse`): `id`, `model_name`, `model_version`,
    `outputs` (`InferOutput`s), `parameters`."""

    def __init__(
        self,
        response_id,
        model_name,
        infer_outputs,
        model_version=None,
        raw_outputs=None,
        from_grpc=False,
        parameters=None,
        use_binary_outputs=False,
        requested_outputs=None,
    ):
        self.id = response_id
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = infer_outputs
        self.parameters = parameters
        self.from_grpc = from_grpc
        self._requested_outputs = requested_outputs
        self._use_binary_outputs = use_binary_outputs
        if raw_outputs:
            for output, raw in zip(self.outputs, raw_outputs):
                output._raw_data = raw

    @classmethod
    def from_grpc(cls, response):
        _grpc_refused("InferResponse.from_grpc")

    @classmethod
    def from_rest(cls, response):
        """A response from its REST dict (`outputs` with their `data`)."""
        outputs = [
            InferOutput(
                name=o["name"],
                shape=list(o["shape"]),
                datatype=o["datatype"],
                data=o["data"],
                parameters=o.get("parameters", None),
            )
            for o in response["outputs"]
        ]
        return cls(
            model_name=response.get("model_name"),
            model_version=response.get("model_version", None),
            response_id=response.get("id", None),
            parameters=response.get("parameters", None),
            infer_outputs=outputs,
        )

    @classmethod
    def from_bytes(cls, res_bytes, json_length):
        """A response from a REST body: its JSON, then the binary data of the outputs that
        have `binary_data_size`."""
        body = _parse_json(res_bytes[:json_length])
        model_name = body["model_name"]
        outputs = []
        start = json_length
        for spec in body["outputs"]:
            parameters = spec.get("parameters", None)
            output = InferOutput(
                name=spec["name"],
                shape=spec["shape"],
                datatype=spec["datatype"],
                parameters=parameters,
            )
            if parameters and "binary_data_size" in parameters:
                size = parameters.get("binary_data_size")
                output._raw_data = res_bytes[start : start + size]
                output.set_data_from_numpy(output.as_numpy(), binary_data=False)
                start += size
            else:
                data = spec.get("data", None)
                if data is None:
                    raise InvalidInput(
                        "'data' field is missing for output '%s' for model '%s'"
                        % (output.name, model_name)
                    )
                output.data = data
            outputs.append(output)
        return cls(
            model_name=model_name,
            response_id=body.get("id", None),
            parameters=body.get("parameters", None),
            infer_outputs=outputs,
        )

    def to_rest(self):
        """The response as a REST body: `(dict, None)`, or `(bytes, json_length)` when outputs
        go as binary data (the requested outputs only, when the request named some)."""
        outputs, raws = [], []
        binary = self._use_binary_outputs
        wanted = self._requested_outputs if self._requested_outputs else self.outputs
        for want in wanted:
            output = self.get_output_by_name(want.name) if self._requested_outputs else want
            if self._requested_outputs:
                binary = want.binary_data
            if output is None:
                raise InvalidInput(
                    "Unexpected inference output '%s' for model '%s'" % (want.name, self.model_name)
                )
            if output.data is None and output._raw_data is None:
                raise InvalidInput(
                    "'data' field is missing for output '%s' for model '%s'"
                    % (output.name, self.model_name)
                )
            if isinstance(output.data, np.ndarray):
                output.set_data_from_numpy(output.data, binary_data=binary)
            elif output.data or output._raw_data:
                output.set_data_from_numpy(output.as_numpy(), binary_data=binary)
            if output.datatype == "FP16" and output.data:
                raise InvalidInput(
                    "Sending FP16 data via JSON is not supported. Please use the binary data "
                    "format for output %s" % output.name
                )
            entry = {"name": output.name, "shape": output.shape, "datatype": output.datatype}
            if output.parameters:
                entry["parameters"] = to_http_parameters(output.parameters)
            if binary:
                raws.append(output._raw_data)
            else:
                entry["data"] = output.data
            outputs.append(entry)
        rest = {
            "id": self.id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "outputs": outputs,
        }
        if self.parameters:
            rest["parameters"] = to_http_parameters(self.parameters)
        if raws:
            head = _dumps(rest)
            return b"".join([head] + raws), len(head)
        return rest, None

    def to_grpc(self):
        _grpc_refused("InferResponse.to_grpc")

    def get_output_by_name(self, name):
        """The output named `name`, or None."""
        for output in self.outputs:
            if output.name == name:
                return output
        return None

    def __eq__(self, other):
        return (
            isinstance(other, InferResponse)
            and self.model_name == other.model_name
            and self.model_version == other.model_version
            and self.id == other.id
            and self.from_grpc == other.from_grpc
            and self.parameters == other.parameters
            and self.outputs == other.outputs
        )

    __hash__ = None

    def to_dict(self):
        return {
            "id": self.id,
            "model_name": self.model_name,
            "outputs": [o.to_dict() for o in self.outputs],
            "parameters": self.parameters,
            "from_grpc": self.from_grpc,
        }

    def __repr__(self):
        return '"id": "%s","model_name": "%s","outputs": %r,"parameters": %s,"from_grpc": %s' % (
            self.id,
            self.model_name,
            self.outputs,
            self.parameters,
            self.from_grpc,
        )

    __str__ = __repr__
