"""Framework models inside servegraph's workers (Clipper's framework deployers, and graph YAML).

A model saved with its framework's own format sits in the version's folder (`model_uri`) beside
an optional cloudpickled closure (`func.pkl`). The worker reloads the model natively, then
answers each call with `func(model, inputs)` (PySpark: `func(spark, model, inputs)`): a list
of inputs (one per row of the tensor `input`) in, a list of the same length out, as
`servegraph.deployed.Closure` does. Without a closure, the model itself is called on the
stacked rows (`default_func`).

    TorchModel       model.pt (TorchScript), or model.pkl + weights.pt (the module by value
                     and its state_dict, Clipper's way)
    TensorFlowModel  model.keras (Keras), or saved_model/ (a SavedModel directory)
    SparkModel       spark_model/ (Spark ML `save(path)`, or MLlib `save(sc, path)`) in a
                     local SparkSession (`local[threads]`)
    MXNetModel       model-symbol.json + model-0000.params (`HybridBlock.export`)

`threads` sets the framework's own thread pools (torch.set_num_threads, TensorFlow's intra/
inter-op pools, Spark's local[n], MXNET's OMP threads); by default the cores this process may
use divided by `workers`, at least 1, so models side by side do not fight for the cores.
"""

import importlib
import os
import pickle
import sys
import time

import numpy as np

from . import ModelError
from .deployed import INPUT_TYPES, as_output


def default_threads(workers=1):
    """The cores this process may use divided among `workers` processes, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(workers)))


def _import_func(spec, model_uri):
    """`module:function`, imported with the model's folder first on the path."""
    if ":" not in spec:
        raise ValueError("`func` is `module:function`, not `%s`" % spec)
    module, attr = spec.split(":", 1)
    if model_uri and model_uri not in sys.path:
        sys.path.insert(0, model_uri)
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError("`%s` is not callable" % spec)
    return obj


class _Framework:
    """What the loaders share: the input conversion, the closure and the contract's checks."""

    batchable = True
    framework = "?"

    def __init__(self, model_uri, input_type="doubles", threads=None, workers=1, func=None, name=None):
        if input_type not in INPUT_TYPES:
            raise ValueError("input_type `%s` is not one of %s" % (input_type, ", ".join(INPUT_TYPES)))
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError("threads must be a positive integer, not %r" % (threads,))
        self.model_uri = model_uri
        self.input_type = input_type
        self.threads = threads or default_threads(workers)
        self.func_spec = func
        self.name = name
        self.model = None
        self.func = None

    def _path(self, *parts):
        return os.path.join(self.model_uri, *parts)

    def load(self):
        self.set_threads(self.threads)
        self.model = self.load_model()
        if self.func_spec:
            self.func = _import_func(self.func_spec, self.model_uri)
        elif os.path.exists(self._path("func.pkl")):
            with open(self._path("func.pkl"), "rb") as f:
                self.func = pickle.load(f)

    def set_threads(self, n):
        pass

    def load_model(self):
        raise NotImplementedError

    def call(self, items):
        if self.func is None:
            return self.default_func(items)
        return self.func(self.model, items)

    def default_func(self, items):
        raise NotImplementedError

    def items(self, x):
        if self.input_type == "strings":
            try:
                return [bytes(v).decode("utf-8") for v in x.reshape(-1)]
            except UnicodeDecodeError as exc:
                raise ModelError("input_type is strings, and an element is not UTF-8: %s" % exc, status=400) from None
        if self.input_type == "bytes":
            return [bytes(v) for v in x.reshape(-1)]
        return [np.array(row) for row in x]

    def predict(self, inputs, parameters):
        x = inputs.get("input")
        if x is None:
            raise ModelError("a deployed %s model takes the tensor `input`; got: %s" % (self.framework, ", ".join(inputs)), status=400)
        items = self.items(x)
        outputs = self.call(items)
        if hasattr(outputs, "numpy") and not isinstance(outputs, np.ndarray):
            outputs = outputs.numpy()
        if not isinstance(outputs, (list, tuple, np.ndarray)):
            raise TypeError("the %s model's function returned %s, not a list of outputs" % (self.framework, type(outputs).__name__))
        if len(outputs) != len(items):
            raise ValueError(
                "the %s model's function returned %d outputs for %d inputs (Clipper's contract: one each)"
                % (self.framework, len(outputs), len(items))
            )
        return {"output": as_output(list(outputs), "the %s model's function" % self.framework)}


class TorchModel(_Framework):
    """A PyTorch module: TorchScript (`model.pt`), or the module by value (`model.pkl`) with its
    weights (`weights.pt`, a state_dict). Called without gradients, in eval mode."""

    framework = "PyTorch"

    def set_threads(self, n):
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass  # already set by this process

    def load_model(self):
        import torch

        if os.path.exists(self._path("model.pt")):
            model = torch.jit.load(self._path("model.pt"), map_location="cpu")
        elif os.path.exists(self._path("model.pkl")):
            with open(self._path("model.pkl"), "rb") as f:
                model = pickle.load(f)
            if os.path.exists(self._path("weights.pt")):
                model.load_state_dict(torch.load(self._path("weights.pt"), map_location="cpu"))
        else:
            raise FileNotFoundError("no PyTorch model in %s: model.pt (TorchScript) or model.pkl + weights.pt" % self.model_uri)
        model.eval()
        return model

    def call(self, items):
        import torch

        with torch.no_grad():
            return super().call(items)

    def default_func(self, items):
        import torch

        out = self.model(torch.from_numpy(np.stack(items)))
        return list(out.numpy())


class TensorFlowModel(_Framework):
    """A Keras model (`model.keras`) or a SavedModel (`saved_model/`, loaded with
    `tf.saved_model.load`)."""

    framework = "TensorFlow"

    def set_threads(self, n):
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
        except RuntimeError:
            pass  # TensorFlow already started its pools in this process

    def load_model(self):
        if os.path.exists(self._path("model.keras")):
            import keras

            return keras.models.load_model(self._path("model.keras"))
        if os.path.isdir(self._path("saved_model")):
            import tensorflow as tf

            return tf.saved_model.load(self._path("saved_model"))
        raise FileNotFoundError("no TensorFlow model in %s: model.keras or saved_model/" % self.model_uri)

    def default_func(self, items):
        x = np.stack(items)
        if hasattr(self.model, "predict_on_batch"):
            return list(np.asarray(self.model.predict_on_batch(x)))
        if "serving_default" in getattr(self.model, "signatures", {}):
            import tensorflow as tf

            sig = self.model.signatures["serving_default"]
            (arg,) = sig.structured_input_signature[1].keys()
            out = sig(**{arg: tf.constant(x, dtype=sig.structured_input_signature[1][arg].dtype)})
            return list(next(iter(out.values())).numpy())
        return list(np.asarray(self.model(x)))


class SparkModel(_Framework):
    """A Spark ML model (`PipelineModel.load`, or the class named in `spark_model.json`) or an
    MLlib one (`load(sc, path)`), served from a local SparkSession (`local[threads]`) started in
    the worker; `func(spark, model, inputs)`."""

    framework = "PySpark"

    def load_model(self):
        import json

        from pyspark.sql import SparkSession

        started = time.monotonic()
        self.spark = (
            SparkSession.builder.master("local[%d]" % self.threads)
            .appName("servegraph-%s" % (self.name or "model"))
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", str(self.threads))
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")
        self.startup_seconds = time.monotonic() - started
        with open(self._path("spark_model.json")) as f:
            meta = json.load(f)
        module, cls = meta["class"].rsplit(".", 1)
        model_class = getattr(importlib.import_module(module), cls)
        path = self._path("spark_model")
        if meta.get("api") == "mllib":
            return model_class.load(self.spark.sparkContext, path)
        return model_class.load(path)

    def call(self, items):
        if self.func is None:
            raise ModelError("a PySpark model needs `func(spark, model, inputs)`", status=500)
        return self.func(self.spark, self.model, items)


class MXNetModel(_Framework):
    """An MXNet HybridBlock exported with `export(prefix)`: `model-symbol.json` and
    `model-0000.params`, loaded as a `SymbolBlock` with the input names in `mxnet.json`."""

    framework = "MXNet"

    def set_threads(self, n):
        # Set, not defaulted: the server's own OMP_NUM_THREADS (common in containers) would
        # otherwise win over the model's `threads`.
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ["MXNET_CPU_WORKER_NTHREADS"] = str(n)

    def load_model(self):
        import json

        import mxnet as mx

        with open(self._path("mxnet.json")) as f:
            meta = json.load(f)
        return mx.gluon.SymbolBlock.imports(
            self._path("model-symbol.json"), meta["input_names"], self._path("model-0000.params"), ctx=mx.cpu()
        )

    def default_func(self, items):
        import mxnet as mx

        return list(self.model(mx.nd.array(np.stack(items))).asnumpy())
