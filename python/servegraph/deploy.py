"""Deploy models into a running servegraph from a Python session (Clipper's deployers).

    import servegraph
    servegraph.deploy_python_closure("http://localhost:8080", "add-one", "1", "doubles",
                                     lambda xs: [x.sum() + 1 for x in xs], token="secret")
    servegraph.create_endpoint("http://localhost:8080", "hello-world", "doubles",
                               lambda xs: [str(sum(x)) for x in xs], default_output="-1.0",
                               slo_micros=100000, token="secret")

Every call talks to the server's model repository (Triton's extension:
`POST /v2/repository/models/{name}/load` with `parameters.config` and base64 `file:` parameters),
behind the server's admin token. A deployed model answers the Open Inference Protocol like any
other: input tensor `input`, output tensor `output`; and Clipper's query API, `POST
/{name}/predict` with `{"input": ...}`, where `default_output` and `slo_micros` (Clipper's
`register_application` settings, which every deployer takes) apply. Needs only the standard
library, NumPy and (for closures) cloudpickle.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request

__all__ = [
    "DeployError",
    "create_endpoint",
    "deploy_python_closure",
    "deploy_onnx_model",
    "deploy_sklearn_model",
    "set_model_version",
    "unload_model",
    "list_models",
]

# Clipper's input types and the OIP datatypes they arrive as.
DATATYPES = {
    "integers": "INT32",
    "floats": "FP32",
    "doubles": "FP64",
    "bytes": "BYTES",
    "strings": "BYTES",
}


class DeployError(Exception):
    """The server refused: `status` is the HTTP status, the message the server's reason (a
    failing model's traceback included)."""

    def __init__(self, status, message):
        super().__init__("[%s] %s" % (status, message))
        self.status = status
        self.message = message


def _post(url, path, body, token=None, timeout=600):
    data = json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            message = json.loads(text).get("error", text.decode("utf-8", "replace"))
        except ValueError:
            message = text.decode("utf-8", "replace")
        raise DeployError(e.code, message) from None
    return json.loads(text) if text else {}


def _url(url):
    return url if "://" in url else "http://" + url


def _check(name, version):
    for what, value in (("name", name), ("version", version)):
        text = str(value)
        if not text or not all(c.isalnum() or c in "-_." for c in text):
            raise ValueError("invalid model %s %r: use letters, digits, '-', '_' and '.'" % (what, value))
    return str(name), str(version)


def _load(url, name, config, files, token):
    params = {"config": json.dumps(config)}
    for path, content in files.items():
        params["file:" + path] = base64.b64encode(content).decode("ascii")
    return _post(_url(url), "/v2/repository/models/%s/load" % name, {"parameters": params}, token)


def _example_request(example, input_type):
    """Clipper-style inputs (a list) as an OIP request for the server's smoke test."""
    import numpy as np

    datatype = DATATYPES[input_type]
    if datatype == "BYTES":
        data = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in example]
        shape = [len(data)]
    else:
        arr = np.asarray(example, dtype={"INT32": np.int32, "FP32": np.float32, "FP64": np.float64}[datatype])
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        data, shape = arr.reshape(-1).tolist(), list(arr.shape)
    return {"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]}


def _app_params(input_type=None, default_output=None, slo_micros=None):
    """Clipper's application settings as configuration parameters: the server keeps them
    for `POST /{name}/predict` (a later load that gives none keeps them)."""
    params = {}
    if input_type is not None:
        params["input_type"] = {"string_value": str(input_type)}
    if default_output is not None:
        params["default_output"] = {"string_value": str(default_output)}
    if slo_micros is not None:
        micros = int(slo_micros)
        if micros <= 0:
            raise ValueError("slo_micros must be a positive number of microseconds, not %r" % (slo_micros,))
        params["slo_micros"] = {"string_value": str(micros)}
    return params


def _local_modules(func):
    """Modules the function uses that are the user's own (not installed, not the standard
    library): cloudpickle ships them by value, so the server needs no copy of them."""
    import inspect
    import sysconfig

    installed = {os.path.realpath(p) for p in sysconfig.get_paths().values() if p}
    installed |= {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}

    def local(module):
        path = getattr(module, "__file__", None)
        if not path or module.__name__ in sys.builtin_module_names:
            return False
        real = os.path.realpath(path)
        return not any(real.startswith(p + os.sep) for p in installed)

    seen = []
    names = [getattr(func, "__module__", None)]
    try:
        used = inspect.getclosurevars(func)
        values = list(used.nonlocals.values()) + list(used.globals.values())
    except (TypeError, ValueError):
        values = list(getattr(func, "__globals__", {}).values())
    for value in values:
        if inspect.ismodule(value):
            names.append(value.__name__)
        else:
            names.append(getattr(value, "__module__", None))
    for name in names:
        module = sys.modules.get(name) if name else None
        if module is not None and name != "__main__" and local(module) and module not in seen:
            seen.append(module)
    return seen


def deploy_python_closure(
    url,
    name,
    version,
    input_type,
    func,
    batch_size=-1,
    pkgs_to_install=None,
    token=None,
    example=None,
    default_output=None,
    slo_micros=None,
    num_replicas=1,
):
    """Deploys `func` as model `name`, version `version` (Clipper's contract: `func` takes a
    list of inputs and returns a list of outputs of the same length).

    `input_type` is one of integers, floats, doubles, bytes, strings: each input is a 1-D
    NumPy array (a row of `input`), or `bytes`/`str`. `batch_size` > 1 lets the server join
    requests into one call of up to that many inputs. `pkgs_to_install` (pip requirements) go
    into a virtualenv of the model's own, when the server allows it (`--allow-pip`). `example`
    (a list of inputs) is run by the server before the model serves: a failure is raised here
    with the function's traceback. The function is pickled with cloudpickle (your own modules
    by value) and needs the server's Python version. `num_replicas` worker processes serve it.

    Clipper's queries (`POST /{name}/predict`) answer `default_output` (with `"default":
    true`) when the function fails or takes longer than `slo_micros`; without
    `default_output` they answer an error."""
    import cloudpickle

    name, version = _check(name, version)
    if input_type not in DATATYPES:
        raise ValueError("input_type %r is not one of %s" % (input_type, ", ".join(DATATYPES)))
    if not callable(func):
        raise TypeError("func must be callable")
    modules = _local_modules(func)
    for m in modules:
        cloudpickle.register_pickle_by_value(m)
    try:
        payload = cloudpickle.dumps(func)
    finally:
        for m in modules:
            cloudpickle.unregister_pickle_by_value(m)
    datatype = DATATYPES[input_type]
    params = {
        "module": {"string_value": "servegraph.deployed"},
        "class_name": {"string_value": "Closure"},
        "class_args": {"string_value": json.dumps({"input_type": input_type})},
        "python_version": {"string_value": "%d.%d" % sys.version_info[:2]},
    }
    params.update(_app_params(input_type, default_output, slo_micros))
    if pkgs_to_install:
        params["pkgs_to_install"] = {"string_value": json.dumps(list(pkgs_to_install))}
    if example is not None:
        params["example"] = {"string_value": json.dumps(_example_request(example, input_type))}
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": max(int(batch_size), 0),
        "input": [{"name": "input", "data_type": "TYPE_" + datatype, "dims": [-1] if datatype == "BYTES" else [-1, -1]}],
        "parameters": params,
    }
    if batch_size and int(batch_size) > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": 0}
        config["input"][0]["dims"] = [] if datatype == "BYTES" else [-1]
    if num_replicas and int(num_replicas) > 1:
        config["instance_group"] = [{"count": int(num_replicas), "kind": "KIND_CPU"}]
    return _load(url, name, config, {"%s/func.pkl" % version: payload}, token)


def create_endpoint(
    url,
    name,
    input_type,
    func,
    default_output="None",
    version=1,
    slo_micros=3000000,
    labels=None,
    registry=None,
    base_image="default",
    num_replicas=1,
    batch_size=-1,
    pkgs_to_install=None,
    token=None,
    example=None,
):
    """Clipper's `create_endpoint`: registers the application `name` and deploys `func` as
    the model it is linked to, in one call. Queries go to `POST {url}/{name}/predict` with
    `{"input": ...}` or `{"input_batch": [...]}`; one the function fails, or does not answer
    within `slo_micros` (default 3 s), answers `default_output` (Clipper's default, the text
    "None") with `"default": true`. `labels`, `registry` and `base_image` (Docker's, in
    Clipper) are accepted and unused; `url` stands where Clipper takes its connection."""
    del labels, registry, base_image
    return deploy_python_closure(
        url,
        name,
        version,
        input_type,
        func,
        batch_size=batch_size,
        pkgs_to_install=pkgs_to_install,
        token=token,
        example=example,
        default_output=default_output,
        slo_micros=slo_micros,
        num_replicas=num_replicas,
    )


def deploy_onnx_model(
    url, name, version, path_or_bytes, token=None, config=None, input_type=None, default_output=None, slo_micros=None
):
    """Deploys an ONNX model (a file path or its bytes) as `name`, version `version`; its
    tensors keep the model's names. PyTorch users export with `torch.onnx.export` first.
    `config` is a Triton model configuration (dict) for batching or sessions.
    `input_type`, `default_output` and `slo_micros` are its Clipper app's
    (`POST /{name}/predict`)."""
    name, version = _check(name, version)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        content = bytes(path_or_bytes)
    else:
        with open(os.fspath(path_or_bytes), "rb") as f:
            content = f.read()
    cfg = dict(config or {})
    cfg.setdefault("name", name)
    cfg.setdefault("backend", "onnxruntime")
    app = _app_params(input_type, default_output, slo_micros)
    if app:
        cfg["parameters"] = dict(cfg.get("parameters") or {}, **app)
    return _load(url, name, cfg, {"%s/model.onnx" % version: content}, token)


def deploy_sklearn_model(
    url,
    name,
    version,
    model,
    token=None,
    method="predict",
    pkgs_to_install=None,
    example=None,
    default_output=None,
    slo_micros=None,
):
    """Deploys a scikit-learn estimator (pickled; served by the server's Python, which needs
    scikit-learn) as `name`, version `version`: `output` is `model.predict(input)` (or
    `method`, e.g. `predict_proba`). `example` (rows) is run by the server before it serves.
    `default_output` and `slo_micros` are its Clipper app's (`POST /{name}/predict`)."""
    import pickle

    name, version = _check(name, version)
    if not callable(getattr(model, method, None)):
        raise TypeError("the model has no method %r" % method)
    features = getattr(model, "n_features_in_", None)
    params = {
        "module": {"string_value": "servegraph.deployed"},
        "class_name": {"string_value": "Sklearn"},
        "class_args": {"string_value": json.dumps({"method": method})},
    }
    params.update(_app_params("doubles", default_output, slo_micros))
    if pkgs_to_install:
        params["pkgs_to_install"] = {"string_value": json.dumps(list(pkgs_to_install))}
    if example is not None:
        params["example"] = {"string_value": json.dumps(_example_request(example, "doubles"))}
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "input", "data_type": "TYPE_FP64", "dims": [-1, int(features) if features else -1]}],
        "parameters": params,
    }
    return _load(url, name, config, {"%s/model.pkl" % version: pickle.dumps(model)}, token)


def set_model_version(url, name, version, token=None):
    """Makes `version` the one requests naming no version get (a rollback, or a roll forward)."""
    name, version = _check(name, version)
    return _post(_url(url), "/v2/repository/models/%s/default" % name, {"version": version}, token)


def unload_model(url, name, version=None, token=None):
    """Stops serving `name` (every version, or only `version`); its files stay on the server,
    and `load` without files brings it back."""
    body = {"parameters": {"version": {"string_value": str(version)}}} if version is not None else {}
    return _post(_url(url), "/v2/repository/models/%s/unload" % name, body, token)


def list_models(url):
    """The server's models: a list of `{"name", "version", "state"}` (Triton's repository index)."""
    return _post(_url(url), "/v2/repository/index", {})
