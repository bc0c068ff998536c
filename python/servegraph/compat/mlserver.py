"""MLServer's model API (1.7), for classes written for `mlserver.MLModel`: inside a servegraph
worker whose interpreter has no `mlserver`, the original import lines (`from mlserver import
MLModel`, `from mlserver.types import InferenceRequest`, `from mlserver.codecs import
NumpyCodec`, ...) resolve to this module (`servegraph._imports`); with `mlserver` installed,
MLServer's own classes are used.

What is here behaves as MLServer's own (the same fields, defaults, codecs and `content_type`
rules, errors and status codes), without pydantic: the types are plain classes with
`__slots__`, checked as pydantic checks them where it matters (a missing required field, an
unknown datatype) and dumped as MLServer dumps them (`model_dump()` leaves out what is unset or
None, `.dict()` does not). What MLServer has and this does not is refused by name when
imported (`servegraph._imports.PROVIDED` lists what is here).

servegraph hands a class the request's tensors as NumPy arrays: a `RequestInput`'s `data`
keeps its array, and its `root` (the list MLServer's REST server would have parsed) is made
from it on first use. `NumpyCodec` decodes from the array itself (a copy, as MLServer's is,
never through a list), and its `encode_output` keeps the answer's array for the engine.
"""

import base64
import binascii
import datetime
import enum
import functools
import json
import logging
import os
import sys
import typing
import uuid

import numpy as np

logger = logging.getLogger("mlserver")


def get_logger():
    return logger


# -- errors (mlserver.errors) ---------------------------------------------------------------


class MLServerError(Exception):
    """MLServer's base error: its `status_code` (default 400) is the answer's status, its
    message the body's `{"error": ...}`."""

    def __init__(self, msg, status_code=400):
        super().__init__(msg)
        self.status_code = status_code


class InvalidModelURI(MLServerError):
    def __init__(self, name, model_uri=None):
        msg = "Invalid URI specified for model %s" % name
        if model_uri:
            msg += " (%s)" % model_uri
        super().__init__(msg, 422)


class ModelNotFound(MLServerError):
    def __init__(self, name, version=None):
        msg = "Model %s not found" % name
        if version is not None:
            msg = "Model %s with version %s not found" % (name, version)
        super().__init__(msg, 404)


class ModelNotReady(MLServerError):
    def __init__(self, name, version=None):
        msg = "Model %s is not ready yet." % name
        if version is not None:
            msg = "Model %s with version %s is not ready yet." % (name, version)
        super().__init__(msg, 400)


class InferenceError(MLServerError):
    def __init__(self, msg):
        super().__init__(msg, 400)


class ModelParametersMissing(MLServerError):
    def __init__(self, model_name):
        super().__init__("Parameters missing for model %s" % model_name, 400)


class ValidationError(ValueError):
    """What pydantic raises for a field that does not validate (a `ValueError`)."""


# -- types (mlserver.types) -----------------------------------------------------------------

_UNSET = object()


class Datatype(enum.Enum):
    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


_DATATYPES = frozenset(d.value for d in Datatype)


def _invalid(owner, field, why):
    return ValidationError("1 validation error for %s\n%s\n  %s" % (owner, field, why))


def _datatype(value, owner):
    """A datatype as MLServer's types keep it (`use_enum_values`: the name, a `str`)."""
    if type(value) is str and value in _DATATYPES:
        return value
    if isinstance(value, Datatype):
        return value.value
    raise _invalid(
        owner,
        "datatype",
        "Input should be %s [input_value=%r]" % (", ".join(sorted(_DATATYPES)), value),
    )


def _shape(value, owner):
    if type(value) is list:
        return value
    try:
        return [int(d) for d in value]
    except (TypeError, ValueError):
        raise _invalid(owner, "shape", "Input should be a valid list [input_value=%r]" % (value,))


def _json_ready(value):
    """A dumped value as JSON carries it (`model_dump(mode="json")`): bytes as UTF-8 text."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        raise TypeError("Unable to serialize unknown type: <class 'numpy.ndarray'>")
    return value


def _excluded(exclude, key):
    """Whether pydantic's `exclude` (a set of names, or a dict of names to `True` or to what
    to leave out below them) leaves `key` out whole."""
    if not exclude:
        return False
    if isinstance(exclude, dict):
        below = exclude.get(key)
        return below is True or below is Ellipsis
    return key in exclude


def _sub_exclude(exclude, key):
    """The part of `exclude` that applies below `key` (`__all__`: every item of a list)."""
    if isinstance(exclude, dict):
        below = exclude.get(key)
        if below is not True and below is not Ellipsis:
            return below
    return None


def _dump(value, unset, none, exclude, json_mode):
    if isinstance(value, _Model):
        return value._dump(unset, none, exclude, json_mode)
    if isinstance(value, TensorData):
        return value._dump(json_mode)
    if isinstance(value, Parameters):
        return value._dump(unset, none, exclude, json_mode)
    if isinstance(value, list):
        items = exclude.get("__all__") if isinstance(exclude, dict) else None
        return [_dump(v, unset, none, items, json_mode) for v in value]
    if json_mode:
        return _json_ready(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


class _Dumps:
    """pydantic's dumping, validating and copying methods, shared by the types."""

    __slots__ = ()

    def model_dump(
        self,
        exclude_unset=True,
        exclude_none=True,
        mode="python",
        exclude=None,
        include=None,
        by_alias=False,
        **kwargs
    ):
        out = self._dump(exclude_unset, exclude_none, exclude, mode == "json")
        if include is not None and isinstance(out, dict):
            out = {k: v for k, v in out.items() if k in include}
        return out

    def model_dump_json(self, exclude_unset=True, exclude_none=True, indent=None, **kwargs):
        dumped = self.model_dump(exclude_unset=exclude_unset, exclude_none=exclude_none, mode="json", **kwargs)
        if indent is None:
            return json.dumps(dumped, separators=(",", ":"), allow_nan=True)
        return json.dumps(dumped, indent=indent)

    def dict(self, exclude_unset=False, exclude_none=False, **kwargs):
        # pydantic 2's deprecated `dict()` hands `exclude_unset=False` on explicitly.
        return self.model_dump(exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    def json(self, exclude_unset=False, exclude_none=False, **kwargs):
        return self.model_dump_json(exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    @classmethod
    def model_validate(cls, obj, **kwargs):
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, dict):
            return cls(**obj)
        raise _invalid(cls.__name__, "", "Input should be a valid dictionary or instance of %s" % cls.__name__)

    parse_obj = model_validate

    @classmethod
    def model_validate_json(cls, data, **kwargs):
        return cls.model_validate(json.loads(data))

    parse_raw = model_validate_json

    @classmethod
    def model_construct(cls, _fields_set=None, **values):
        return cls(**values)

    construct = model_construct

    def model_copy(self, update=None, deep=False):
        import copy

        new = copy.deepcopy(self) if deep else copy.copy(self)
        for k, v in (update or {}).items():
            setattr(new, k, v)
        return new

    copy = model_copy

    def __str__(self):
        return " ".join("%s=%r" % kv for kv in self._items())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self._items()))


class Parameters(_Dumps):
    """A tensor's, request's or response's `parameters`: `content_type`, `headers`, and any
    other key (`Parameters(foo=1).foo`)."""

    content_type = None
    headers = None

    def __init__(self, **data):
        ct = data.get("content_type")
        if ct is not None and type(ct) is not str:
            raise _invalid("Parameters", "content_type", "Input should be a valid string")
        self.__dict__.update(data)

    def _items(self):
        d = self.__dict__
        yield "content_type", d.get("content_type")
        yield "headers", d.get("headers")
        for k, v in d.items():
            if k not in ("content_type", "headers") and not k.startswith("_"):
                yield k, v

    def _dump(self, unset, none, exclude, json_mode):
        if unset:
            items = ((k, v) for k, v in self.__dict__.items() if not k.startswith("_"))
        else:
            items = self._items()
        out = {}
        for k, v in items:
            if (none and v is None) or _excluded(exclude, k):
                continue
            out[k] = _dump(v, unset, none, _sub_exclude(exclude, k), json_mode)
        return out

    @property
    def model_fields_set(self):
        return {k for k in self.__dict__ if not k.startswith("_")}

    @property
    def model_extra(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("content_type", "headers") and not k.startswith("_")}

    def __eq__(self, other):
        if not isinstance(other, Parameters):
            return NotImplemented
        mine = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        theirs = {k: v for k, v in other.__dict__.items() if not k.startswith("_")}
        return mine == theirs


def _parameters(value, owner):
    if value is None or isinstance(value, Parameters):
        return value
    if isinstance(value, dict):
        return Parameters(**value)
    raise _invalid(owner, "parameters", "Input should be a valid dictionary or instance of Parameters")


class TensorData(_Dumps):
    """A tensor's `data`: its elements (`root`), a list (a tuple becomes one) or whatever
    else was given. One that servegraph made from a NumPy array keeps it, and makes `root`
    from it when first asked (a flat list: numbers, or for BYTES text where it is UTF-8)."""

    __slots__ = ("_root", "_array", "_encoded")

    def __init__(self, root=_UNSET, **data):
        if root is _UNSET:
            root = data.get("root", _UNSET)
            if root is _UNSET:
                raise _invalid("TensorData", "root", "Field required")
        self._root = list(root) if type(root) is tuple else root
        self._array = None

    @classmethod
    def _of(cls, array, encoded=False):
        """The data of `array`: a request's tensor, or (`encoded`) what MLServer's NumpyCodec
        encodes an answer's array as (its NaN as None)."""
        data = object.__new__(cls)
        data._root = _UNSET
        data._array = array
        data._encoded = encoded
        return data

    @property
    def root(self):
        root = self._root
        if root is _UNSET:
            root = self._root = _as_list(self._array, self._encoded)
        return root

    @root.setter
    def root(self, value):
        self._root = value
        self._array = None

    def _fresh_array(self):
        """The array it was made from, while `root` was never asked for (and so never
        changed)."""
        return self._array if self._root is _UNSET else None

    def __iter__(self):
        return iter(self.root)

    def __getitem__(self, idx):
        return self.root[idx]

    def __len__(self):
        return len(self.root)

    def __eq__(self, other):
        if not isinstance(other, TensorData):
            return NotImplemented
        return self.root == other.root

    def _items(self):
        yield "root", self.root

    def _dump(self, json_mode, *rest):
        root = self.root
        return _json_ready(root) if json_mode else root

    def model_dump(self, mode="python", **kwargs):
        return self._dump(mode == "json")

    @classmethod
    def model_validate(cls, obj, **kwargs):
        return obj if isinstance(obj, cls) else cls(obj)

    def __repr__(self):
        return "TensorData(root=%r)" % (self.root,)

    def __str__(self):
        return "root=%r" % (self.root,)


def _as_list(array, encoded=False):
    """A tensor's elements as MLServer's REST server would have parsed them from JSON: a
    flat list of numbers (with `encoded`, NaN as None, as MLServer's NumpyCodec writes an
    answer's), or of text (bytes that are not UTF-8 stay bytes)."""
    flat = array.reshape(-1)
    if flat.dtype.kind == "O":
        out = []
        for item in flat.tolist():
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            out.append(item)
        return out
    items = flat.tolist()
    if encoded and flat.dtype.kind in "fc" and np.isnan(flat).any():
        items = [None if v != v else v for v in items]
    return items


def _data(value):
    if isinstance(value, TensorData):
        return value
    return TensorData(value)


class _Model(_Dumps):
    """A type of fields by name (`_fields`: name → default, `_REQUIRED` when it has none),
    constructed by keyword as pydantic's are, with `_set` the names given."""

    __slots__ = ("_set",)
    _fields = {}

    def __init__(self, **data):
        owner = type(self).__name__
        for name, default in self._fields.items():
            value = data.get(name, _UNSET)
            if value is _UNSET:
                if default is _REQUIRED:
                    raise _invalid(owner, name, "Field required [type=missing, input_value=%r]" % (data,))
                value = default() if callable(default) else default
            else:
                value = self._check(name, value)
            object.__setattr__(self, name, value)
        self._set = frozenset(n for n in data if n in self._fields)

    def _check(self, name, value):
        return value

    def _items(self):
        for name in self._fields:
            yield name, getattr(self, name)

    def _dump(self, unset, none, exclude, json_mode):
        out = {}
        for name in self._fields:
            if unset and name not in self._set:
                continue
            value = getattr(self, name)
            if (none and value is None) or _excluded(exclude, name):
                continue
            out[name] = _dump(value, unset, none, _sub_exclude(exclude, name), json_mode)
        return out

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in self._fields and name not in self._set:
            object.__setattr__(self, "_set", self._set | {name})

    @property
    def model_fields_set(self):
        return set(self._set)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    __hash__ = None


_REQUIRED = object()


def _tensor_check(self, name, value):
    if name == "datatype":
        return _datatype(value, type(self).__name__)
    if name == "shape":
        return _shape(value, type(self).__name__)
    if name == "parameters":
        return _parameters(value, type(self).__name__)
    if name == "data":
        return _data(value)
    return value


def _list_of(cls, value, owner, field):
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise _invalid(owner, field, "Input should be a valid list")
    return [v if isinstance(v, cls) else cls(**v) for v in value]


class MetadataTensor(_Model):
    __slots__ = ("name", "datatype", "shape", "parameters")
    _fields = {"name": _REQUIRED, "datatype": _REQUIRED, "shape": _REQUIRED, "parameters": None}
    _check = _tensor_check


class RequestInput(_Model):
    __slots__ = ("name", "shape", "datatype", "parameters", "data")
    _fields = {"name": _REQUIRED, "shape": _REQUIRED, "datatype": _REQUIRED, "parameters": None, "data": _REQUIRED}
    _check = _tensor_check


_RESPONSE_OUTPUT_FIELDS = frozenset(("name", "shape", "datatype", "parameters", "data"))


class ResponseOutput(_Model):
    __slots__ = ("name", "shape", "datatype", "parameters", "data")
    _fields = {"name": _REQUIRED, "shape": _REQUIRED, "datatype": _REQUIRED, "parameters": None, "data": _REQUIRED}
    _check = _tensor_check

    def __init__(self, name=_UNSET, shape=_UNSET, datatype=_UNSET, parameters=None, data=_UNSET, **extra):
        # The common case by keyword, without the generic loop: what a class builds per call.
        if name is _UNSET or shape is _UNSET or datatype is _UNSET or data is _UNSET:
            given = dict(extra, name=name, shape=shape, datatype=datatype, parameters=parameters, data=data)
            _Model.__init__(self, **{k: v for k, v in given.items() if v is not _UNSET})
            return
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "shape", shape if type(shape) is list else _shape(shape, "ResponseOutput"))
        setattr_(
            self,
            "datatype",
            datatype if type(datatype) is str and datatype in _DATATYPES else _datatype(datatype, "ResponseOutput"),
        )
        setattr_(self, "parameters", parameters if parameters is None or type(parameters) is Parameters else _parameters(parameters, "ResponseOutput"))
        setattr_(self, "data", data if type(data) is TensorData else _data(data))
        setattr_(self, "_set", _RESPONSE_OUTPUT_FIELDS if parameters is not None else _RESPONSE_OUTPUT_FIELDS - {"parameters"})


_REQUEST_INPUT_SET = frozenset(("name", "shape", "datatype", "data"))


def _request_input(name, shape, datatype, parameters, data):
    """A `RequestInput` of checked values (the adapter's, from a tensor), without the
    keyword checks."""
    made = object.__new__(RequestInput)
    setattr_ = object.__setattr__
    setattr_(made, "name", name)
    setattr_(made, "shape", shape)
    setattr_(made, "datatype", datatype)
    setattr_(made, "parameters", parameters)
    setattr_(made, "data", data)
    setattr_(made, "_set", _REQUEST_INPUT_SET if parameters is None else _RESPONSE_OUTPUT_FIELDS)
    return made


class RequestOutput(_Model):
    __slots__ = ("name", "parameters")
    _fields = {"name": _REQUIRED, "parameters": None}
    _check = _tensor_check


class InferenceRequest(_Model):
    __slots__ = ("id", "parameters", "inputs", "outputs")
    _fields = {"id": None, "parameters": None, "inputs": _REQUIRED, "outputs": None}

    def _check(self, name, value):
        if name == "parameters":
            return _parameters(value, "InferenceRequest")
        if name == "inputs":
            return _list_of(RequestInput, value, "InferenceRequest", "inputs")
        if name == "outputs":
            return _list_of(RequestOutput, value, "InferenceRequest", "outputs")
        return value


def _inference_request(id, parameters, inputs, outputs):
    """An `InferenceRequest` of checked values (the adapter's), without the keyword checks;
    like a parsed request, only what it has counts as set."""
    made = object.__new__(InferenceRequest)
    setattr_ = object.__setattr__
    setattr_(made, "id", id)
    setattr_(made, "parameters", parameters)
    setattr_(made, "inputs", inputs)
    setattr_(made, "outputs", outputs)
    given = ["inputs"]
    if id is not None:
        given.append("id")
    if parameters is not None:
        given.append("parameters")
    if outputs is not None:
        given.append("outputs")
    setattr_(made, "_set", frozenset(given))
    return made


class InferenceResponse(_Model):
    __slots__ = ("model_name", "model_version", "id", "parameters", "outputs")
    _fields = {"model_name": _REQUIRED, "model_version": None, "id": None, "parameters": None, "outputs": _REQUIRED}

    def __init__(self, model_name=_UNSET, model_version=_UNSET, id=_UNSET, parameters=_UNSET, outputs=_UNSET, **extra):
        # The common case, a list of outputs made by the codecs, without the generic loop.
        plain = type(outputs) is list
        if plain:
            for o in outputs:
                if type(o) is not ResponseOutput:
                    plain = False
                    break
        if model_name is _UNSET or not plain:
            given = dict(extra, model_name=model_name, model_version=model_version, id=id, parameters=parameters, outputs=outputs)
            _Model.__init__(self, **{k: v for k, v in given.items() if v is not _UNSET})
            return
        setattr_ = object.__setattr__
        given = {"model_name", "outputs"}
        setattr_(self, "model_name", model_name)
        setattr_(self, "outputs", outputs)
        for name, value in (("model_version", model_version), ("id", id)):
            if value is _UNSET:
                value = None
            else:
                given.add(name)
            setattr_(self, name, value)
        if parameters is _UNSET:
            parameters = None
        else:
            given.add("parameters")
            parameters = _parameters(parameters, "InferenceResponse")
        setattr_(self, "parameters", parameters)
        setattr_(self, "_set", frozenset(given))

    def _check(self, name, value):
        if name == "parameters":
            return _parameters(value, "InferenceResponse")
        if name == "outputs":
            return _list_of(ResponseOutput, value, "InferenceResponse", "outputs")
        return value


class MetadataModelResponse(_Model):
    __slots__ = ("name", "versions", "platform", "inputs", "outputs", "parameters")
    _fields = {"name": _REQUIRED, "versions": None, "platform": _REQUIRED, "inputs": None, "outputs": None, "parameters": None}

    def _check(self, name, value):
        if name == "parameters":
            return _parameters(value, "MetadataModelResponse")
        if name in ("inputs", "outputs"):
            return _list_of(MetadataTensor, value, "MetadataModelResponse", name)
        return value


class MetadataServerResponse(_Model):
    __slots__ = ("name", "version", "extensions")
    _fields = {"name": _REQUIRED, "version": _REQUIRED, "extensions": _REQUIRED}


class InferenceErrorResponse(_Model):
    __slots__ = ("error",)
    _fields = {"error": None}


class MetadataModelErrorResponse(_Model):
    __slots__ = ("error",)
    _fields = {"error": _REQUIRED}


class MetadataServerErrorResponse(_Model):
    __slots__ = ("error",)
    _fields = {"error": _REQUIRED}


# -- settings (mlserver.settings) -----------------------------------------------------------


def _import_string(path):
    import importlib

    module, _, attr = path.rpartition(".")
    if not module:
        raise ImportError("%r doesn't look like a module path" % path)
    return getattr(importlib.import_module(module), attr)


def _get_import_path(klass):
    return "%s.%s" % (klass.__module__, klass.__name__)


class ModelParameters(_Dumps):
    """`parameters` of a model's settings: `uri`, `version`, `content_type`, `extra`, ...,
    and any other key (MLServer's allow them: `parameters.load_error`)."""

    _defaults = {
        "uri": None,
        "version": None,
        "environment_path": None,
        "environment_tarball": None,
        "inference_pool_gid": None,
        "autogenerate_inference_pool_gid": False,
        "format": None,
        "content_type": None,
        "extra": dict,
    }

    def __init__(self, **data):
        for name, default in self._defaults.items():
            if name not in data:
                self.__dict__[name] = default() if callable(default) else default
        self.__dict__.update(data)
        self.__dict__["_set"] = frozenset(data)
        if self.autogenerate_inference_pool_gid and self.inference_pool_gid is None:
            self.inference_pool_gid = str(uuid.uuid4())

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            self.__dict__["_set"] = self._set | {name}

    def _items(self):
        return ((k, v) for k, v in self.__dict__.items() if not k.startswith("_"))

    def _dump(self, unset, none, exclude, json_mode):
        out = {}
        for k, v in self._items():
            if (unset and k not in self._set) or (none and v is None) or _excluded(exclude, k):
                continue
            out[k] = _dump(v, unset, none, _sub_exclude(exclude, k), json_mode)
        return out

    def dict(self, by_alias=True, exclude_unset=True, exclude_none=True, **kwargs):
        return self.model_dump(exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    def model_dump(self, exclude_unset=False, exclude_none=False, **kwargs):
        return _Dumps.model_dump(self, exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    def __eq__(self, other):
        return isinstance(other, ModelParameters) and dict(self._items()) == dict(other._items())


class ModelSettings(_Dumps):
    """A model's settings, as MLServer builds them from `model-settings.json` (`name`,
    `implementation`, `parameters`, `inputs`, `outputs`, `max_batch_size`, ...). servegraph
    builds them from the step: its name, `model_uri` as `parameters.uri`, `class_args` as
    `parameters.extra` (or the step's `model_settings:` file)."""

    _defaults = {
        "name": "",
        "platform": "",
        "versions": list,
        "inputs": list,
        "outputs": list,
        "parallel_workers": None,
        "warm_workers": False,
        "max_batch_size": 0,
        "max_batch_time": 0.0,
        "parameters": None,
        "cache_enabled": False,
    }

    def __init__(self, **data):
        data = dict(data)
        implementation = data.pop("implementation", data.pop("implementation_", None))
        if implementation is None:
            raise _invalid("ModelSettings", "implementation", "Field required")
        source = data.pop("_source", None)
        d = self.__dict__
        d["_source"] = source
        d["_set"] = frozenset(data) | {"implementation"}
        d["_implementation_class"] = None
        if isinstance(implementation, type):
            d["_implementation_class"] = implementation
            implementation = _get_import_path(implementation)
        d["implementation_"] = implementation
        for name, default in self._defaults.items():
            d[name] = default() if callable(default) else default
        for name, value in data.items():
            if name == "parameters":
                value = value if value is None or isinstance(value, ModelParameters) else ModelParameters(**value)
            elif name in ("inputs", "outputs"):
                value = _list_of(MetadataTensor, value, "ModelSettings", name)
            elif name not in self._defaults:
                continue  # MLServer's settings ignore what they do not know
            d[name] = value

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in self._defaults or name == "implementation":
            self.__dict__["_set"] = self._set | {name}

    @classmethod
    def parse_file(cls, path):
        with open(path, "r") as f:
            obj = json.load(f)
        obj["_source"] = path
        return cls.model_validate(obj)

    @classmethod
    def model_validate(cls, obj, **kwargs):
        if isinstance(obj, cls):
            return obj
        return cls(**obj)

    @property
    def implementation(self):
        if self._implementation_class is not None:
            return self._implementation_class
        if not self._source:
            return _import_string(self.implementation_)
        folder = os.path.dirname(self._source)
        sys.path.insert(0, folder)
        try:
            return _import_string(self.implementation_)
        finally:
            sys.path.remove(folder)

    @implementation.setter
    def implementation(self, value):
        self.__dict__["_implementation_class"] = value
        self.__dict__["implementation_"] = _get_import_path(value)

    @property
    def version(self):
        params = self.parameters
        if params is not None:
            return params.version
        return None

    def _items(self):
        yield "implementation_", self.implementation_
        for name in self._defaults:
            yield name, self.__dict__[name]

    def _dump(self, unset, none, exclude, json_mode, alias=False):
        out = {}
        for k, v in self._items():
            key = "implementation" if alias and k == "implementation_" else k
            set_name = "implementation" if k == "implementation_" else k
            if (unset and set_name not in self._set) or (none and v is None) or _excluded(exclude, key):
                continue
            out[key] = _dump(v, unset, none, _sub_exclude(exclude, key), json_mode)
        return out

    def model_dump(self, exclude_unset=False, exclude_none=False, by_alias=False, exclude=None, mode="python", **kwargs):
        return self._dump(exclude_unset, exclude_none, exclude, mode == "json", alias=by_alias)

    def dict(self, by_alias=True, exclude_unset=True, exclude_none=True, **kwargs):
        return self.model_dump(by_alias=by_alias, exclude_unset=exclude_unset, exclude_none=exclude_none, **kwargs)

    def json(self, by_alias=True, exclude_unset=True, exclude_none=True, **kwargs):
        return json.dumps(self.model_dump(by_alias=by_alias, exclude_unset=exclude_unset, exclude_none=exclude_none, mode="json"))


# -- codecs (mlserver.codecs) ---------------------------------------------------------------


class CodecNotFound(MLServerError):
    def __init__(self, name=None, payload_type=None, is_input=False, is_request=False):
        msg = ""
        if name:
            msg = "with name '%s'" % name
            if payload_type:
                msg = "%s and type %s" % (msg, payload_type)
        elif payload_type:
            msg = "with type %s" % payload_type
        if is_input:
            category = "input request" if is_request else "input field"
        else:
            category = "output response" if is_request else "output field"
        super().__init__("Codec not found for %s %s" % (category, msg))


class CodecError(MLServerError):
    def __init__(self, msg):
        super().__init__("There was an error encoding / decoding the payload: %s" % msg)


class OutputNotFound(MLServerError):
    def __init__(self, output_idx, output_type, output_hints):
        expected = ["'%s'" % h for h in output_hints]
        super().__init__(
            "Unexpected output value at position '%s' (%s). Expected outputs are %s outputs."
            % (output_idx, output_type, ", ".join(expected))
        )


class InputsNotFound(MLServerError):
    def __init__(self, inputs, input_hints):
        names = ["'%s'" % i.name for i in inputs]
        available = ["'%s'" % n for n in input_hints.keys()]
        super().__init__(
            "Input %s was not found. Available inputs are %s." % (", ".join(names), ", ".join(available))
        )


def _deprecated(reason):
    def wrap(func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            logger.warning("DEPRECATED! %s" % reason)
            return func(*args, **kwargs)

        return inner

    return wrap


class InputCodec:
    """Conversions of one input (output) to and from a Python value (MLServer's)."""

    ContentType = ""
    TypeHint = type(None)

    @classmethod
    def can_encode(cls, payload):
        return False

    @classmethod
    @_deprecated("The encode() method is now deprecated. Use encode_output() instead.")
    def encode(cls, name, payload):
        return cls.encode_output(name, payload)

    @classmethod
    def encode_output(cls, name, payload, **kwargs):
        raise NotImplementedError()

    @classmethod
    def decode_output(cls, response_output):
        raise NotImplementedError()

    @classmethod
    def encode_input(cls, name, payload, **kwargs):
        raise NotImplementedError()

    @classmethod
    @_deprecated("The decode() method is now deprecated. Use decode_input() instead.")
    def decode(cls, request_input):
        return cls.decode_input(request_input)

    @classmethod
    def decode_input(cls, request_input):
        raise NotImplementedError()


class RequestCodec:
    """Conversions of a whole request (response) to and from a Python value (MLServer's)."""

    ContentType = ""
    TypeHint = type(None)

    @classmethod
    def can_encode(cls, payload):
        return False

    @classmethod
    @_deprecated("The encode() method is now deprecated. Use encode_response() instead.")
    def encode(cls, model_name, payload, model_version=None):
        return cls.encode_response(model_name, payload, model_version)

    @classmethod
    def encode_response(cls, model_name, payload, model_version=None, **kwargs):
        raise NotImplementedError()

    @classmethod
    def decode_response(cls, response):
        raise NotImplementedError()

    @classmethod
    def encode_request(cls, payload, **kwargs):
        raise NotImplementedError()

    @classmethod
    @_deprecated("The decode() method is now deprecated. Use decode_request() instead.")
    def decode(cls, request):
        return cls.decode_request(request)

    @classmethod
    def decode_request(cls, request):
        raise NotImplementedError()


InputCodecLike = typing.Union[typing.Type[InputCodec], InputCodec]
RequestCodecLike = typing.Union[typing.Type[RequestCodec], RequestCodec]
InputOrOutput = typing.Union[RequestInput, ResponseOutput]


def _find_codec_by_payload(payload, codecs):
    matching = [c for c in codecs if c.can_encode(payload)]
    if not matching:
        logger.warning("No codec was found for payload with type %s." % type(payload))
        return None
    first = matching[0]
    if len(matching) > 1:
        logger.warning(
            "Multiple codecs (%d were found for a payload with type %s. The first one found "
            "will be used (%s)." % (len(matching), type(payload), first.ContentType)
        )
    return first


def _find_codec_by_type_hint(type_hint, codecs):
    matching = [c for c in codecs if c.TypeHint == type_hint]
    if not matching:
        logger.warning("No codec was found for type hint %s." % (type_hint,))
        return None
    first = matching[0]
    if len(matching) > 1:
        logger.warning(
            "Multiple codecs (%d were found for a type hint %s. The first one found will be "
            "used (%s)." % (len(matching), type_hint, first.ContentType)
        )
    return first


_input_codecs = {}
_request_codecs = {}
# Whether a codec other than MLServer's own was registered (after this module's own, once
# `_loaded`).
_user_codecs = False
_loaded = False


def find_input_codec(content_type=None, payload=None, type_hint=None):
    if content_type:
        return _input_codecs.get(content_type)
    elif payload:
        return find_input_codec_by_payload(payload)
    elif type_hint:
        return find_input_codec_by_type_hint(type_hint)
    return None


def find_input_codec_by_payload(payload):
    # An array, while only MLServer's own codecs are registered, is NumpyCodec's alone (the
    # others take lists): found without asking each.
    if type(payload) is np.ndarray and not _user_codecs:
        return NumpyCodec
    return _find_codec_by_payload(payload, list(_input_codecs.values()))


def find_input_codec_by_type_hint(type_hint):
    return _find_codec_by_type_hint(type_hint, list(_input_codecs.values()))


def find_request_codec(content_type=None, payload=None, type_hint=None):
    if content_type:
        return _request_codecs.get(content_type)
    elif payload:
        return find_request_codec_by_payload(payload)
    elif type_hint:
        return find_request_codec_by_type_hint(type_hint)
    return None


def find_request_codec_by_payload(payload):
    return _find_codec_by_payload(payload, list(_request_codecs.values()))


def find_request_codec_by_type_hint(type_hint):
    return _find_codec_by_type_hint(type_hint, list(_request_codecs.values()))


def register_request_codec(CodecKlass):
    if CodecKlass.ContentType is not None:
        _request_codecs[CodecKlass.ContentType] = CodecKlass
    return CodecKlass


def register_input_codec(CodecKlass):
    global _user_codecs
    _user_codecs = _loaded
    if CodecKlass.ContentType is not None:
        _input_codecs[CodecKlass.ContentType] = CodecKlass
    return CodecKlass


DefaultOutputPrefix = "output-"
DefaultInputPrefix = "input-"
DecodedParameterName = "_decoded_payload"


def inject_batch_dimension(shape):
    """`[N]` as `[N, 1]` (MLServer's codecs' rule)."""
    if len(shape) > 1:
        return shape
    return shape + [1]


def _get_content_type(request, metadata=None):
    params = request.parameters
    if params and params.content_type:
        return params.content_type
    if metadata is not None:
        if metadata.parameters and metadata.parameters.content_type:
            return metadata.parameters.content_type
    return None


def _save_decoded(parametrised_obj, decoded_payload):
    if not parametrised_obj.parameters:
        parametrised_obj.parameters = Parameters()
    setattr(parametrised_obj.parameters, DecodedParameterName, decoded_payload)


def encode_response_output(payload, request_output, metadata_outputs={}):
    output_metadata = metadata_outputs.get(request_output.name)
    content_type = _get_content_type(request_output, output_metadata)
    codec = find_input_codec(content_type) if content_type else find_input_codec_by_payload(payload)
    if not codec:
        return None
    return codec.encode_output(name=request_output.name, payload=payload)


def encode_inference_response(payload, model_settings):
    codec = find_request_codec_by_payload(payload)
    if not codec:
        return None
    model_version = None
    if model_settings.parameters:
        model_version = model_settings.parameters.version
    return codec.encode_response(model_settings.name, payload, model_version)


def decode_request_input(request_input, metadata_inputs={}):
    input_metadata = metadata_inputs.get(request_input.name)
    content_type = _get_content_type(request_input, input_metadata)
    if content_type is None:
        return None
    codec = find_input_codec(content_type)
    if codec is None:
        return None
    decoded_payload = codec.decode_input(request_input)
    _save_decoded(request_input, decoded_payload)
    return decoded_payload


def decode_inference_request(inference_request, model_settings=None, metadata_inputs={}):
    for request_input in inference_request.inputs:
        decode_request_input(request_input, metadata_inputs)
    request_content_type = _get_content_type(inference_request, model_settings)
    if request_content_type is not None:
        codec = find_request_codec(request_content_type)
        if codec is not None:
            decoded_payload = codec.decode_request(inference_request)
            _save_decoded(inference_request, decoded_payload)
            return decoded_payload
    return inference_request


def has_decoded(parametrised_obj):
    parameters = parametrised_obj.parameters
    return parameters is not None and DecodedParameterName in parameters.__dict__


def get_decoded(parametrised_obj):
    parameters = parametrised_obj.parameters
    if parameters is not None:
        return parameters.__dict__.get(DecodedParameterName)


def get_decoded_or_raw(parametrised_obj):
    parameters = parametrised_obj.parameters
    if parameters is not None and DecodedParameterName in parameters.__dict__:
        return parameters.__dict__[DecodedParameterName]
    if isinstance(parametrised_obj, (RequestInput, ResponseOutput)):
        return parametrised_obj.data
    return parametrised_obj


class SingleInputRequestCodec(RequestCodec):
    """A request codec that decodes the whole request as its first input (MLServer's)."""

    InputCodec = None

    @classmethod
    def can_encode(cls, payload):
        if cls.InputCodec is None:
            return False
        return cls.InputCodec.can_encode(payload)

    @classmethod
    def encode_response(cls, model_name, payload, model_version=None, **kwargs):
        if cls.InputCodec is None:
            raise NotImplementedError("No input codec found for %s request codec" % type(cls))
        output = cls.InputCodec.encode_output("%s1" % DefaultOutputPrefix, payload, **kwargs)
        return InferenceResponse(
            model_name=model_name,
            model_version=model_version,
            parameters=Parameters(content_type=cls.ContentType),
            outputs=[output],
        )

    @classmethod
    def decode_response(cls, response):
        if len(response.outputs) != 1:
            raise CodecError(
                "The '%s' codec only supports a single output tensor (%d were received)"
                % (cls.ContentType, len(response.outputs))
            )
        first_output = response.outputs[0]
        if not has_decoded(first_output) and cls.InputCodec is not None:
            _save_decoded(first_output, cls.InputCodec.decode_output(first_output))
        return get_decoded_or_raw(first_output)

    @classmethod
    def encode_request(cls, payload, **kwargs):
        if cls.InputCodec is None:
            raise NotImplementedError("No input codec found for %s request codec" % type(cls))
        inp = cls.InputCodec.encode_input("%s1" % DefaultInputPrefix, payload, **kwargs)
        return InferenceRequest(inputs=[inp], parameters=Parameters(content_type=cls.ContentType))

    @classmethod
    def decode_request(cls, request):
        if len(request.inputs) != 1:
            raise CodecError(
                "The '%s' codec only supports a single input tensor (%d were received)"
                % (cls.ContentType, len(request.inputs))
            )
        first_input = request.inputs[0]
        if not has_decoded(first_input) and cls.InputCodec is not None:
            _save_decoded(first_input, cls.InputCodec.decode_input(first_input))
        return get_decoded_or_raw(first_input)


def is_list_of(payload, instance_type):
    if not isinstance(payload, list):
        return False
    return all(isinstance(p, instance_type) for p in payload)


def as_list(payload):
    if isinstance(payload, list):
        yield from payload
    else:
        yield payload


_DatatypeToNumpy = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "bytes",
}
_NumpyToDatatype = {v: k for k, v in _DatatypeToNumpy.items()}
_NumpyToDatatype["object"] = "BYTES"
_NumpyToDatatype["S"] = "BYTES"
_NumpyToDatatype["U"] = "BYTES"
# A numeric datatype's NumPy dtype, for arrays already at hand.
_NUMERIC_DTYPES = {k: np.dtype(v) for k, v in _DatatypeToNumpy.items() if k != "BYTES"}


def to_dtype(input_or_output):
    datatype = Datatype(input_or_output.datatype).value
    dtype = _DatatypeToNumpy[datatype]
    if datatype == "BYTES":
        data = getattr(input_or_output.data, "root", input_or_output.data)
        if is_list_of(data, str):
            return np.dtype(str)
        elem_size = input_or_output.shape[-1]
        return np.dtype((dtype, elem_size))
    return np.dtype(dtype)


def to_datatype(dtype):
    datatype = _DTYPE_DATATYPES.get(dtype)
    if datatype is not None:
        return datatype
    as_str = str(dtype)
    if as_str not in _NumpyToDatatype:
        as_str = getattr(dtype, "kind")
    datatype = Datatype(_NumpyToDatatype[as_str])
    if len(_DTYPE_DATATYPES) < 64:
        _DTYPE_DATATYPES[dtype] = datatype
    return datatype


# The datatypes of dtypes seen (`str(dtype)` costs more than the rest of `to_datatype`).
_DTYPE_DATATYPES = {}


def _to_ndarray(input_or_output):
    data = getattr(input_or_output.data, "root", input_or_output.data)
    dtype = to_dtype(input_or_output)
    if Datatype(input_or_output.datatype) == Datatype.BYTES:
        if is_list_of(data, bytes):
            decoded = [np.frombuffer(buffer, dtype) for buffer in data]
            return np.concatenate(decoded)
    return np.array(data, dtype)


def convert_nan(val):
    if np.isnan(val):
        return None
    return val


def _encode_data(data, datatype):
    if datatype == "BYTES":
        if np.issubdtype(data.dtype, str):
            return [encode_str(s) for s in data.flatten().tolist()]
        if np.issubdtype(data.dtype, bytes):
            return [data.tobytes()]
    flattened_list = data.flatten().tolist()
    if datatype != "BYTES":
        if np.isnan(data).any():
            flattened_list = list(map(convert_nan, flattened_list))
    return flattened_list


@register_input_codec
class NumpyCodec(InputCodec):
    """A request input (response output) as a NumPy array."""

    ContentType = "np"
    TypeHint = np.ndarray

    @classmethod
    def can_encode(cls, payload):
        return isinstance(payload, np.ndarray)

    @classmethod
    def encode_output(cls, name, payload, **kwargs):
        datatype = to_datatype(payload.dtype).value
        shape = inject_batch_dimension(list(payload.shape))
        if datatype == "BYTES":
            data = TensorData(_encode_data(payload, datatype))
        else:
            # The elements as MLServer's list of them holds them (a copy, taken now), kept as
            # an array: the list is made only when asked for.
            data = TensorData._of(np.array(payload, copy=True).reshape(-1), encoded=True)
        return ResponseOutput(
            name=name,
            datatype=datatype,
            shape=shape,
            data=data,
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_output(cls, response_output):
        return cls.decode_input(response_output)

    @classmethod
    def encode_input(cls, name, payload, **kwargs):
        output = cls.encode_output(name=name, payload=payload)
        return RequestInput(
            name=output.name,
            datatype=output.datatype,
            shape=output.shape,
            data=output.data,
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_input(cls, request_input):
        data = request_input.data
        array = data._fresh_array() if type(data) is TensorData else None
        if array is not None and array.dtype.kind != "O":
            # The tensor's own array, copied (as MLServer's `np.array(data)` copies).
            dtype = _NUMERIC_DTYPES.get(request_input.datatype)
            if dtype is not None:
                return np.array(array, dtype=dtype).reshape(request_input.shape)
        return _to_ndarray(request_input).reshape(request_input.shape)


@register_request_codec
class NumpyRequestCodec(SingleInputRequestCodec):
    """The first input (output) of a request (response) as a NumPy array."""

    InputCodec = NumpyCodec
    ContentType = NumpyCodec.ContentType


_DefaultStrCodec = "utf-8"


def encode_str(elem):
    return elem.encode(_DefaultStrCodec)


def decode_str(encoded, str_codec=_DefaultStrCodec):
    if encoded is None:
        return None
    if isinstance(encoded, bytes):
        return encoded.decode(str_codec)
    if isinstance(encoded, str):
        return encoded
    return ""


def _decode_input_or_output(input_or_output):
    return [decode_str(e) for e in as_list(input_or_output.data.root)]


@register_input_codec
class StringCodec(InputCodec):
    """A list of Python strings as a BYTES input (output)."""

    ContentType = "str"
    TypeHint = typing.List[str]

    @classmethod
    def can_encode(cls, payload):
        return is_list_of(payload, str)

    @classmethod
    def encode_output(cls, name, payload, use_bytes=True, **kwargs):
        packed = payload
        if use_bytes:
            packed = [encode_str(p) for p in payload]
        return ResponseOutput(
            name=name,
            datatype="BYTES",
            shape=[len(payload), 1],
            data=list(packed),
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_output(cls, response_output):
        return _decode_input_or_output(response_output)

    @classmethod
    def decode_input(cls, request_input):
        return _decode_input_or_output(request_input)

    @classmethod
    def encode_input(cls, name, payload, use_bytes=True, **kwargs):
        output = cls.encode_output(name, payload, use_bytes)
        return RequestInput(
            name=output.name,
            datatype=output.datatype,
            shape=output.shape,
            data=output.data,
            parameters=output.parameters,
        )


@register_request_codec
class StringRequestCodec(SingleInputRequestCodec):
    """The first input (output) of a request (response) as a list of strings."""

    InputCodec = StringCodec
    ContentType = StringCodec.ContentType
    TypeHint = typing.List[str]


_Base64StrCodec = "ascii"


def _ensure_bytes(elem):
    if isinstance(elem, str):
        return elem.encode(_Base64StrCodec)
    return elem


def _encode_base64(elem, use_bytes):
    b64 = base64.b64encode(_ensure_bytes(elem))
    if use_bytes:
        return b64
    return b64.decode(_Base64StrCodec)


def _decode_base64(elem):
    as_bytes = _ensure_bytes(elem)
    try:
        return base64.b64decode(as_bytes, validate=True)
    except binascii.Error:
        return as_bytes


@register_input_codec
class Base64Codec(InputCodec):
    """A list of bytes as a BYTES input (output) of base64 text."""

    ContentType = "base64"
    TypeHint = typing.List[bytes]

    @classmethod
    def can_encode(cls, payload):
        return is_list_of(payload, bytes)

    @classmethod
    def encode_output(cls, name, payload, use_bytes=True, **kwargs):
        packed = [_encode_base64(p, use_bytes) for p in payload]
        return ResponseOutput(
            name=name,
            datatype="BYTES",
            shape=[len(payload), 1],
            data=packed,
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_output(cls, response_output):
        return [_decode_base64(e) for e in as_list(response_output.data.root)]

    @classmethod
    def encode_input(cls, name, payload, use_bytes=True, **kwargs):
        output = cls.encode_output(name, payload, use_bytes)
        return RequestInput(
            name=output.name,
            datatype=output.datatype,
            shape=output.shape,
            data=output.data,
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_input(cls, request_input):
        return [_decode_base64(e) for e in as_list(request_input.data.root)]


_DatetimeStrCodec = "ascii"


def _encode_datetime(elem, use_bytes):
    iso = elem if isinstance(elem, str) else elem.isoformat()
    if not use_bytes:
        return iso
    return iso.encode(_DatetimeStrCodec)


def _decode_datetime(elem):
    text = elem if isinstance(elem, str) else elem.decode(_DatetimeStrCodec)
    return datetime.datetime.fromisoformat(text)


@register_input_codec
class DatetimeCodec(InputCodec):
    """A list of datetimes as a BYTES input (output) of ISO 8601 text."""

    ContentType = "datetime"
    TypeHint = typing.List[typing.Union[str, datetime.datetime]]

    @classmethod
    def can_encode(cls, payload):
        return is_list_of(payload, datetime.datetime)

    @classmethod
    def encode_output(cls, name, payload, use_bytes=True, **kwargs):
        return ResponseOutput(
            name=name,
            datatype="BYTES",
            shape=[len(payload), 1],
            data=[_encode_datetime(p, use_bytes) for p in payload],
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_output(cls, response_output):
        return [_decode_datetime(e) for e in as_list(response_output.data.root)]

    @classmethod
    def encode_input(cls, name, payload, use_bytes=True, **kwargs):
        output = cls.encode_output(name, payload, use_bytes=use_bytes)
        return RequestInput(
            name=output.name,
            datatype=output.datatype,
            shape=output.shape,
            data=output.data,
            parameters=Parameters(content_type=cls.ContentType),
        )

    @classmethod
    def decode_input(cls, request_input):
        return [_decode_datetime(e) for e in as_list(request_input.data.root)]


def decode_json_input_or_output(input_or_output):
    return [json.loads(e) for e in as_list(input_or_output.data.root)]


class _JSONEncoderWithArray(json.JSONEncoder):
    def default(self, obj):
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        elif isinstance(obj, np.floating):
            return float(obj)
        elif isinstance(obj, np.integer):
            return int(obj)
        return json.JSONEncoder.default(self, obj)


def encode_to_json(v, use_bytes=True):
    enc = json.dumps(
        v, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"), cls=_JSONEncoderWithArray
    )
    return enc.encode("utf-8") if use_bytes else enc


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "PandasCodec needs pandas, which is not installed in the model's interpreter (the "
            "step's `python:`)"
        ) from None
    return pandas


class _NoPandas:
    """What `PandasCodec.TypeHint` is without pandas: no type hint is it."""


class _PandasHint(type):
    """`PandasCodec.TypeHint` is `pandas.DataFrame`, imported only when asked for."""

    @property
    def TypeHint(cls):
        try:
            return _pandas().DataFrame
        except ImportError:
            return _NoPandas


def _to_series(input_or_output):
    pd = _pandas()
    parameters = input_or_output.parameters
    if parameters and parameters.content_type == PandasCodec.JsonContentType:
        return pd.Series(decode_json_input_or_output(input_or_output))
    payload = get_decoded_or_raw(input_or_output)
    if Datatype(input_or_output.datatype) == Datatype.BYTES:
        return pd.Series(payload)
    if isinstance(payload, np.ndarray):
        payload = payload.reshape(input_or_output.shape[0], 1).squeeze(axis=1)
    elif isinstance(payload, TensorData) and payload._fresh_array() is not None:
        payload = payload.root
    return pd.Series(payload, dtype=to_dtype(input_or_output))


def _process_bytes(data, use_bytes=True):
    processed = []
    content_type = StringCodec.ContentType
    for elem in data:
        converted = elem
        if not isinstance(elem, (str, bytes)):
            content_type = None
        elif isinstance(elem, str) and use_bytes:
            converted = encode_str(elem)
        processed.append(converted)
    return processed, content_type


def _to_response_output(series, use_bytes=True):
    datatype = to_datatype(series.dtype).value
    data = series.tolist()
    if series.isnull().any():
        data = list(map(convert_nan, data))
    content_type = None
    if datatype == "BYTES":
        processed, content_type = _process_bytes(data, use_bytes)
        if content_type is None:
            data = [encode_to_json(e, use_bytes) for e in data]
            content_type = PandasCodec.JsonContentType
        else:
            data = processed
    return ResponseOutput(
        name=series.name,
        shape=inject_batch_dimension(list(series.shape)),
        data=data,
        datatype=datatype,
        parameters=Parameters(content_type=content_type) if content_type else None,
    )


@register_request_codec
class PandasCodec(RequestCodec, metaclass=_PandasHint):
    """A request (response) as a pandas DataFrame, each input (output) a column. Needs pandas
    in the model's interpreter."""

    ContentType = "pd"
    JsonContentType = "pd_json"

    @classmethod
    def can_encode(cls, payload):
        pd = sys.modules.get("pandas")
        return pd is not None and isinstance(payload, pd.DataFrame)

    @classmethod
    def encode_response(cls, model_name, payload, model_version=None, use_bytes=True, **kwargs):
        return InferenceResponse(
            model_name=model_name,
            model_version=model_version,
            parameters=Parameters(content_type=cls.ContentType),
            outputs=cls.encode_outputs(payload, use_bytes=use_bytes),
        )

    @classmethod
    def decode_response(cls, response):
        pd = _pandas()
        return pd.DataFrame({o.name: _to_series(o) for o in response.outputs})

    @classmethod
    def encode_outputs(cls, payload, use_bytes=True):
        return [_to_response_output(payload[col], use_bytes=use_bytes) for col in payload]

    @classmethod
    def encode_request(cls, payload, use_bytes=True, **kwargs):
        outputs = cls.encode_outputs(payload, use_bytes=use_bytes)
        return InferenceRequest(
            parameters=Parameters(content_type=cls.ContentType),
            inputs=[
                RequestInput(name=o.name, datatype=o.datatype, shape=o.shape, data=o.data, parameters=o.parameters)
                for o in outputs
            ],
        )

    @classmethod
    def decode_request(cls, request):
        pd = _pandas()
        return pd.DataFrame({i.name: _to_series(i) for i in request.inputs})


# `decode_args` (mlserver.codecs.decorator)


def _as_hints(a):
    if a is None:
        return []
    if isinstance(a, tuple):
        return list(a)
    if typing.get_origin(a) is tuple:
        return list(typing.get_args(a))
    return [a]


def _is_codec_type(c, t):
    return (isinstance(c, type) and issubclass(c, t)) or isinstance(c, t)


def _unwrap_optional(t):
    origin = typing.get_origin(t)
    if origin is typing.Union:
        args = typing.get_args(t)
        if len(args) == 2 and type(None) in args:
            return next(a for a in args if a is not type(None))
    return t


class SignatureCodec(RequestCodec):
    """Maps a `predict`'s type hints to codecs (MLServer's, behind `decode_args`)."""

    def __init__(self, predict):
        self._predict = predict
        self._input_hints = {n: _unwrap_optional(h) for n, h in typing.get_type_hints(predict).items()}
        self._output_hints = _as_hints(self._input_hints.pop("return", None))
        self._input_codecs = {
            name: self._find_codec(name=name, type_hint=hint, is_input=True)
            for name, hint in self._input_hints.items()
        }
        self._output_codecs = [
            self._find_codec(name=None, type_hint=hint, is_input=False) for hint in self._output_hints
        ]

    def _find_codec(self, name, type_hint, is_input=False):
        codec = find_input_codec(type_hint=type_hint)
        if codec is not None:
            return codec
        codec = find_request_codec(type_hint=type_hint)
        if codec is not None:
            return codec
        raise CodecNotFound(name=name, payload_type=str(type_hint), is_input=is_input)

    def decode_request(self, request):
        inputs = {}
        extra = []
        for request_input in request.inputs:
            name = request_input.name
            if name not in self._input_codecs:
                extra.append(request_input)
                continue
            codec = self._input_codecs[name]
            if not _is_codec_type(codec, InputCodec):
                raise CodecNotFound(name=name, is_input=True)
            inputs[name] = codec.decode_input(request_input)
        if extra:
            request_codec = self._get_request_codec()
            if not request_codec:
                raise InputsNotFound(extra, self._input_codecs)
            name, codec = request_codec
            inputs[name] = codec.decode_request(InferenceRequest(inputs=extra))
        return inputs

    def _get_request_codec(self):
        for name, codec in self._input_codecs.items():
            if _is_codec_type(codec, RequestCodec):
                return name, codec
        return None

    def encode_response(self, model_name, payload, model_version=None):
        outputs = []
        for idx, p in enumerate(_as_hints(payload)):
            outputs += self._encode_outputs(idx, p)
        return InferenceResponse(model_name=model_name, model_version=model_version, outputs=outputs)

    def _encode_outputs(self, idx, payload):
        output_type = type(payload)
        if idx >= len(self._output_codecs):
            raise OutputNotFound(idx, output_type, self._output_hints)
        codec = self._output_codecs[idx]
        if not codec.can_encode(payload):
            raise OutputNotFound(idx, output_type, self._output_hints)
        if _is_codec_type(codec, InputCodec):
            return [codec.encode_output(name="output-%d" % idx, payload=payload)]
        if _is_codec_type(codec, RequestCodec):
            return codec.encode_response(model_name="", payload=payload).outputs
        return []


def decode_args(predict):
    """Decodes a request into `predict`'s arguments by their type hints, and encodes what it
    returns (MLServer's decorator)."""
    codec = SignatureCodec(predict)

    @functools.wraps(predict)
    async def _f(self, request):
        inputs = codec.decode_request(request=request)
        outputs = await predict(self, **inputs)
        return codec.encode_response(model_name=self.name, payload=outputs, model_version=self.version)

    return _f


# -- the model (mlserver.model) -------------------------------------------------------------


def _generate_metadata_index(metadata_tensors):
    return {t.name: t for t in metadata_tensors or ()}


class MLModel:
    """MLServer's base class of a model (its `mlserver.MLModel`): constructed with its
    `ModelSettings`, `load()`ed (its answer is `ready`), then `predict(payload)` per request."""

    def __init__(self, settings):
        self._settings = settings
        self._inputs_index = _generate_metadata_index(self._settings.inputs)
        self._outputs_index = _generate_metadata_index(self._settings.outputs)
        self.ready = False

    async def load(self):
        return True

    async def predict(self, payload):
        raise NotImplementedError("predict() method not implemented")

    async def predict_stream(self, payloads):
        yield await self.predict((await payloads.__anext__()))

    async def unload(self):
        return True

    @property
    def name(self):
        return self._settings.name

    @property
    def version(self):
        return self._settings.version

    @property
    def settings(self):
        return self._settings

    @property
    def inputs(self):
        return self._settings.inputs

    @inputs.setter
    def inputs(self, value):
        self._settings.inputs = value
        self._inputs_index = _generate_metadata_index(self._settings.inputs)

    @property
    def outputs(self):
        return self._settings.outputs

    @outputs.setter
    def outputs(self, value):
        self._settings.outputs = value
        self._outputs_index = _generate_metadata_index(self._settings.outputs)

    def decode(self, request_input, default_codec=None):
        decode_request_input(request_input, self._inputs_index)
        if has_decoded(request_input):
            return get_decoded(request_input)
        if default_codec:
            return default_codec.decode_input(request_input)
        return request_input.data

    def decode_request(self, inference_request, default_codec=None):
        decode_inference_request(inference_request, self._settings, self._inputs_index)
        if has_decoded(inference_request):
            return get_decoded(inference_request)
        if default_codec:
            return default_codec.decode_request(inference_request)
        return inference_request

    def encode_response(self, payload, default_codec=None):
        inference_response = encode_inference_response(payload, self._settings)
        if inference_response:
            return inference_response
        if default_codec:
            return default_codec.encode_response(self.name, payload, self.version)
        raise CodecNotFound(payload_type=str(type(payload)), is_input=False, is_request=True)

    def encode(self, payload, request_output, default_codec=None):
        response_output = encode_response_output(payload, request_output, self._outputs_index)
        if response_output:
            return response_output
        if default_codec:
            return default_codec.encode_output(request_output.name, payload)
        raise CodecNotFound(name=request_output.name, is_input=False, is_request=False)

    async def metadata(self):
        model_metadata = MetadataModelResponse(
            name=self.name,
            platform=self._settings.platform,
            versions=self._settings.versions,
            inputs=self._settings.inputs,
            outputs=self._settings.outputs,
        )
        if self._settings.parameters:
            model_metadata.parameters = Parameters(content_type=self._settings.parameters.content_type)
        return model_metadata


# -- utils (mlserver.utils) -----------------------------------------------------------------


async def get_model_uri(settings, wellknown_filenames=[]):
    """The model's file: `parameters.uri`, relative to the settings file's folder, or the
    first of `wellknown_filenames` in that folder (MLServer's)."""
    import urllib.parse

    if not settings.parameters:
        raise InvalidModelURI(settings.name)
    model_uri = settings.parameters.uri
    if not model_uri:
        raise InvalidModelURI(settings.name)
    components = urllib.parse.urlparse(model_uri, scheme="file")
    if components.scheme != "file":
        return model_uri
    full_model_path = to_absolute_path(settings, components.path)
    if os.path.isfile(full_model_path):
        return full_model_path
    if os.path.isdir(full_model_path):
        for fname in wellknown_filenames:
            model_path = os.path.join(full_model_path, fname)
            if os.path.isfile(model_path):
                return model_path
        return full_model_path
    raise InvalidModelURI(settings.name, full_model_path)


def to_absolute_path(model_settings, uri):
    source = model_settings._source
    if source is None:
        return uri
    return os.path.normpath(os.path.join(os.path.dirname(source), uri))


def generate_uuid():
    return str(uuid.uuid4())


def get_wrapped_method(f):
    while hasattr(f, "__wrapped__"):
        f = f.__wrapped__
    return f


# -- custom handlers (mlserver.handlers.custom) ---------------------------------------------

_CustomHandlerAttr = "__custom_handler__"


class CustomHandler(_Model):
    __slots__ = ("rest_path", "rest_method")
    _fields = {"rest_path": _REQUIRED, "rest_method": "POST"}


def custom_handler(rest_path, rest_method="POST"):
    """Marks a method as a custom REST endpoint (MLServer's); servegraph serves it as the
    model's operation `POST /v2/models/{model}/{method name}`."""

    def _wraps(f):
        setattr(f, _CustomHandlerAttr, CustomHandler(rest_path=rest_path, rest_method=rest_method))
        return f

    return _wraps


_loaded = True
