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
    "deploy_pytorch_model",
    "deploy_tensorflow_model",
    "deploy_pyspark_model",
    "deploy_mxnet_model",
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
    params = {
        "module": {"string_value": "servegraph.deployed"},
        "class_name": {"string_value": "Closure"},
        "class_args": {"string_value": json.dumps({"input_type": input_type})},
        "python_version": {"string_value": "%d.%d" % sys.version_info[:2]},
    }
    config = _python_config(
        name, input_type, params, batch_size, num_replicas, pkgs_to_install, example, default_output, slo_micros
    )
    return _load(url, name, config, {"%s/func.pkl" % version: payload}, token)


def _python_config(name, input_type, params, batch_size, num_replicas, pkgs_to_install, example, default_output, slo_micros):
    """The Triton model configuration of a Python model whose one input `input` is a row of
    `input_type` per call (a batch of rows with `batch_size` > 1), with `params` and the rest of
    a deployer's keywords as its parameters."""
    datatype = DATATYPES[input_type]
    params = dict(params)
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
    return config


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


def _func_payload(func):
    """`func` cloudpickled, the user's own modules by value (as `deploy_python_closure`)."""
    import cloudpickle

    modules = _local_modules(func)
    for m in modules:
        cloudpickle.register_pickle_by_value(m)
    try:
        return cloudpickle.dumps(func)
    finally:
        for m in modules:
            cloudpickle.unregister_pickle_by_value(m)


def _dir_files(root, prefix):
    """The files under `root` as `{prefix/relative: bytes}`."""
    files = {}
    for folder, _, names in os.walk(root):
        for n in names:
            full = os.path.join(folder, n)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            with open(full, "rb") as f:
                files[prefix + "/" + rel] = f.read()
    return files


def _deploy_framework(
    url,
    name,
    version,
    input_type,
    func,
    class_name,
    files,
    batch_size,
    pkgs_to_install,
    token,
    example,
    default_output,
    slo_micros,
    num_replicas,
    threads,
    python,
    load_mode=None,
):
    """A framework model (its files already saved natively, as `{relative: bytes}`) with its
    closure, as a `servegraph.frameworks` class in the interpreter `python`."""
    if load_mode not in (None, "sync", "async"):
        raise ValueError("load_mode is sync or async, not %r" % (load_mode,))
    if load_mode == "async" and example is not None:
        raise ValueError("an `example` is run before the model serves, which load_mode async does not wait for: give one or the other")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError("threads must be a positive integer, not %r" % (threads,))
    args = {"input_type": input_type, "workers": max(int(num_replicas or 1), 1), "name": name}
    if threads is not None:
        args["threads"] = threads
    params = {
        "module": {"string_value": "servegraph.frameworks"},
        "class_name": {"string_value": class_name},
        "class_args": {"string_value": json.dumps(args)},
        "python_version": {"string_value": "%d.%d" % sys.version_info[:2]},
    }
    if python is not None:
        params["python"] = {"string_value": os.path.abspath(os.fspath(python))}
    if load_mode is not None:
        params["load_mode"] = {"string_value": load_mode}
    config = _python_config(
        name, input_type, params, batch_size, num_replicas, pkgs_to_install, example, default_output, slo_micros
    )
    payload = {"%s/%s" % (version, k): v for k, v in files.items()}
    if func is not None:
        payload["%s/func.pkl" % version] = _func_payload(func)
    return _load(url, name, config, payload, token)


def _framework_checks(name, version, input_type, func):
    name, version = _check(name, version)
    if input_type not in DATATYPES:
        raise ValueError("input_type %r is not one of %s" % (input_type, ", ".join(DATATYPES)))
    if not callable(func):
        raise TypeError("func must be callable: func(model, inputs) -> a list of outputs")
    return name, version


def deploy_pytorch_model(
    url,
    name,
    version,
    input_type,
    func,
    pytorch_model,
    base_image="default",
    labels=None,
    registry=None,
    num_replicas=1,
    batch_size=-1,
    pkgs_to_install=None,
    token=None,
    example=None,
    default_output=None,
    slo_micros=None,
    threads=None,
    python=None,
    onnx=False,
    save_format="state_dict",
):
    """Clipper's `deploy_pytorch_model`: `func(model, inputs)` takes the module (reloaded in
    the worker, in eval mode, without gradients) and a list of inputs, and returns a list of
    outputs of the same length.

    The module is saved natively: `save_format="state_dict"` (the default, Clipper's way: the
    module by value with cloudpickle, `model.pkl`, and its `state_dict`, `weights.pt`, so
    `func` gets the user's own class with all its methods), `"torchscript"`
    (`torch.jit.script`, `model.pt`: `func` gets a ScriptModule, which keeps `forward` and
    what it calls, not the class's other methods), or `"auto"` (TorchScript, else the
    state_dict). `python` is
    the server's interpreter (a virtualenv with the same torch) the model runs in; `threads`
    its `torch.set_num_threads` (default: the server's cores / `num_replicas`).

    `onnx=True` exports the module with `torch.onnx.export` instead (input `input`, output
    `output`, the first axis dynamic; `example` gives the input's shape) and serves it with
    ONNX Runtime, as `deploy_onnx_model` does: no Python runs there, so the served answer is
    `pytorch_model(input)` and `func` must be None (as must `pkgs_to_install`, `threads` and
    `python`: each is refused by name rather than ignored). `base_image`, `labels` and `registry` (Docker's, in Clipper) are
    accepted and unused."""
    del base_image, labels, registry
    import io

    if onnx:
        unused = [
            arg
            for arg, value in (
                ("func", func),
                ("pkgs_to_install", pkgs_to_install),
                ("threads", threads),
                ("python", python),
            )
            if value is not None
        ]
        if save_format != "state_dict":
            unused.append("save_format")
        if unused:
            raise ValueError(
                "`%s`: onnx=True serves the exported graph with ONNX Runtime and runs no Python, so %s "
                "would not be used: pass %s, or deploy without onnx=True to run `func` in a worker"
                % (name, ", ".join("`%s`" % a for a in unused), ", ".join("%s=None" % a for a in unused if a != "save_format") or "no save_format")
            )
        name, version = _check(name, version)
        if input_type not in DATATYPES:
            raise ValueError("input_type %r is not one of %s" % (input_type, ", ".join(DATATYPES)))
    else:
        name, version = _framework_checks(name, version, input_type, func)
    import torch

    if not isinstance(pytorch_model, torch.nn.Module):
        raise TypeError("pytorch_model must be a torch.nn.Module, not %s" % type(pytorch_model).__name__)
    if save_format not in ("auto", "torchscript", "state_dict"):
        raise ValueError("save_format must be auto, torchscript or state_dict, not %r" % (save_format,))
    was_training = pytorch_model.training
    pytorch_model.eval()
    try:
        if onnx:
            if example is None:
                raise ValueError("onnx=True needs `example` (a list of inputs) for torch.onnx.export's input shape")
            dtype = {"floats": torch.float32, "doubles": torch.float64, "integers": torch.int32}.get(input_type)
            if dtype is None:
                raise ValueError("onnx=True serves numeric inputs: input_type floats, doubles or integers")
            x = torch.tensor([list(map(float, row)) if dtype != torch.int32 else list(row) for row in example], dtype=dtype)
            buf = io.BytesIO()
            try:
                torch.onnx.export(
                    pytorch_model,
                    (x,),
                    buf,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                )
            except Exception as exc:
                raise ValueError("`%s`: torch.onnx.export failed, nothing was deployed: %s: %s" % (name, type(exc).__name__, exc)) from exc
            config = None
            if batch_size and int(batch_size) > 1:
                config = {"max_batch_size": int(batch_size), "dynamic_batching": {"max_queue_delay_microseconds": 0}}
            if num_replicas and int(num_replicas) > 1:
                config = dict(config or {}, instance_group=[{"count": int(num_replicas), "kind": "KIND_CPU"}])
            return deploy_onnx_model(
                url, name, version, buf.getvalue(), token=token, config=config, input_type=input_type,
                default_output=default_output, slo_micros=slo_micros,
            )
        files, errors = {}, []
        if save_format in ("auto", "torchscript"):
            try:
                buf = io.BytesIO()
                torch.jit.save(torch.jit.script(pytorch_model), buf)
                files["model.pt"] = buf.getvalue()
            except Exception as exc:
                errors.append("TorchScript (torch.jit.script): %s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else ""))
        if not files and save_format in ("auto", "state_dict"):
            try:
                import cloudpickle

                buf = io.BytesIO()
                torch.save(pytorch_model.state_dict(), buf)
                files["weights.pt"] = buf.getvalue()
                files["model.pkl"] = cloudpickle.dumps(pytorch_model)
            except Exception as exc:
                files = {}
                errors.append("state_dict + the module by value (cloudpickle): %s: %s" % (type(exc).__name__, exc))
        if not files:
            raise ValueError("`%s`: the PyTorch model cannot be saved, nothing was deployed; %s" % (name, "; ".join(errors)))
    finally:
        pytorch_model.train(was_training)
    return _deploy_framework(
        url, name, version, input_type, func, "TorchModel", files, batch_size, pkgs_to_install, token,
        example, default_output, slo_micros, num_replicas, threads, python,
    )


def deploy_tensorflow_model(
    url,
    name,
    version,
    input_type,
    func,
    tf_sess_or_saved_model_path,
    base_image="default",
    labels=None,
    registry=None,
    num_replicas=1,
    batch_size=-1,
    pkgs_to_install=None,
    token=None,
    example=None,
    default_output=None,
    slo_micros=None,
    threads=None,
    python=None,
):
    """Clipper's `deploy_tensorflow_model`: `func(model, inputs)` with the model reloaded in
    the worker. `tf_sess_or_saved_model_path` is a Keras model (saved as `model.keras`), a
    `tf.Module` (saved with `tf.saved_model.save`), or the path of a SavedModel directory or of
    a `.keras` file. TF1's `tf.Session` is gone from TensorFlow 2 (Clipper saved sessions with
    `tf.train.Saver`): a session is refused; save a SavedModel instead. `threads` is
    TensorFlow's intra-op pool (inter-op: up to 2)."""
    del base_image, labels, registry
    import tempfile

    name, version = _framework_checks(name, version, input_type, func)
    m = tf_sess_or_saved_model_path
    kind = type(m).__module__ + "." + type(m).__name__
    if "Session" in type(m).__name__ and "tensorflow" in type(m).__module__:
        raise TypeError(
            "`%s`: a TF1 session (%s) cannot be deployed: sessions and tf.train.Saver are gone "
            "from TensorFlow 2; pass a Keras model, a tf.Module or a SavedModel directory" % (name, kind)
        )
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(m, (str, bytes, os.PathLike)):
            path = os.fspath(m)
            if os.path.isdir(path):
                if not os.path.exists(os.path.join(path, "saved_model.pb")):
                    raise ValueError("`%s`: %s is a directory without saved_model.pb (not a SavedModel)" % (name, path))
                files = _dir_files(path, "saved_model")
            elif os.path.isfile(path) and path.endswith(".keras"):
                with open(path, "rb") as f:
                    files = {"model.keras": f.read()}
            else:
                raise ValueError("`%s`: %s is neither a SavedModel directory nor a .keras file" % (name, path))
        else:
            import tensorflow as tf

            try:
                import keras

                keras_model = isinstance(m, keras.Model)
            except ImportError:
                keras_model = False
            try:
                if keras_model:
                    out = os.path.join(tmp, "model.keras")
                    m.save(out)
                    with open(out, "rb") as f:
                        files = {"model.keras": f.read()}
                elif isinstance(m, tf.Module):
                    out = os.path.join(tmp, "saved_model")
                    tf.saved_model.save(m, out)
                    files = _dir_files(out, "saved_model")
                else:
                    raise TypeError("not a Keras model, a tf.Module or a SavedModel path: %s" % kind)
            except Exception as exc:
                raise ValueError(
                    "`%s`: the TensorFlow model cannot be saved, nothing was deployed: %s: %s" % (name, type(exc).__name__, exc)
                ) from exc
    return _deploy_framework(
        url, name, version, input_type, func, "TensorFlowModel", files, batch_size, pkgs_to_install, token,
        example, default_output, slo_micros, num_replicas, threads, python,
    )


def deploy_pyspark_model(
    url,
    name,
    version,
    input_type,
    func,
    pyspark_model,
    sc,
    base_image="default",
    labels=None,
    registry=None,
    num_replicas=1,
    batch_size=-1,
    pkgs_to_install=None,
    token=None,
    example=None,
    default_output=None,
    slo_micros=None,
    threads=None,
    python=None,
    load_mode="async",
):
    """Clipper's `deploy_pyspark_model`: `func(spark, model, inputs)` takes a SparkSession, the
    model and a list of inputs. The model is saved with Spark's own `save` (Spark ML:
    `model.save(path)`; MLlib: `model.save(sc, path)`) and reloaded in a local SparkSession
    (`local[threads]`) in the worker, which needs Java. `load_mode="async"` (the default): the
    deploy returns at once and the server serves its other models while the JVM starts,
    readiness naming this one as loading (with how long) until it has; `"sync"` waits."""
    del base_image, labels, registry
    import shutil
    import tempfile

    name, version = _framework_checks(name, version, input_type, func)
    cls = type(pyspark_model)
    if not cls.__module__.startswith("pyspark."):
        raise TypeError("`%s`: pyspark_model must be a Spark ML or MLlib model, not %s" % (name, cls.__name__))
    mllib = cls.__module__.startswith("pyspark.mllib")
    tmp = tempfile.mkdtemp()
    try:
        out = os.path.join(tmp, "spark_model")
        try:
            if mllib:
                pyspark_model.save(sc, out)
            else:
                pyspark_model.save(out)
        except Exception as exc:
            raise ValueError(
                "`%s`: the PySpark model cannot be saved, nothing was deployed: %s: %s" % (name, type(exc).__name__, exc)
            ) from exc
        files = _dir_files(out, "spark_model")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files["spark_model.json"] = json.dumps(
        {"class": cls.__module__ + "." + cls.__name__, "api": "mllib" if mllib else "ml"}
    ).encode("utf-8")
    return _deploy_framework(
        url, name, version, input_type, func, "SparkModel", files, batch_size, pkgs_to_install, token,
        example, default_output, slo_micros, num_replicas, threads, python, load_mode,
    )


def deploy_mxnet_model(
    url,
    name,
    version,
    input_type,
    func,
    mxnet_model,
    mxnet_data_shapes,
    base_image="default",
    labels=None,
    registry=None,
    num_replicas=1,
    batch_size=-1,
    pkgs_to_install=None,
    token=None,
    example=None,
    default_output=None,
    slo_micros=None,
    threads=None,
    python=None,
):
    """Clipper's `deploy_mxnet_model`: a Gluon `HybridBlock`, exported with `export` (symbol
    JSON + params) and reloaded as a `SymbolBlock`; `mxnet_data_shapes` is Clipper's list of
    `(name, shape)` input descriptions (e.g. `[("data", (1, 4))]`), the input names of the
    reloaded block."""
    del base_image, labels, registry
    import tempfile

    name, version = _framework_checks(name, version, input_type, func)
    try:
        shapes = [(str(n), tuple(int(d) for d in s)) for n, s in mxnet_data_shapes]
    except (TypeError, ValueError):
        raise ValueError("mxnet_data_shapes is a list of (name, shape), e.g. [('data', (1, 4))], not %r" % (mxnet_data_shapes,)) from None
    if not shapes:
        raise ValueError("mxnet_data_shapes names no input")
    import mxnet as mx

    if isinstance(mxnet_model, mx.mod.Module):
        raise TypeError(
            "`%s`: Clipper's symbolic `mx.mod.Module` is not served: deploy a Gluon HybridBlock "
            "(`mx.gluon.SymbolBlock(module.symbol, ...)` wraps a Module's symbol and parameters)" % name
        )
    if not isinstance(mxnet_model, mx.gluon.HybridBlock):
        raise TypeError("`%s`: mxnet_model must be a Gluon HybridBlock (export needs one), not %s" % (name, type(mxnet_model).__name__))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mxnet_model.hybridize()
            mxnet_model(*[mx.nd.zeros(s) for _, s in shapes])
            mxnet_model.export(os.path.join(tmp, "model"), epoch=0)
        except Exception as exc:
            raise ValueError(
                "`%s`: the MXNet model cannot be exported, nothing was deployed: %s: %s" % (name, type(exc).__name__, exc)
            ) from exc
        files = _dir_files(tmp, ".")
    files = {k[2:] if k.startswith("./") else k: v for k, v in files.items()}
    files["mxnet.json"] = json.dumps({"input_names": [n for n, _ in shapes]}).encode("utf-8")
    return _deploy_framework(
        url, name, version, input_type, func, "MXNetModel", files, batch_size, pkgs_to_install, token,
        example, default_output, slo_micros, num_replicas, threads, python,
    )


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
