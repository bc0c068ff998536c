"""Python models for tests/python.rs: each exercises one behaviour of `class: python`."""

import os
import time

import numpy as np

from servegraph import ModelError


class Echo:
    """servegraph's API. Returns its input times `scale`, and the worker's pid per row. A
    first element of -1 raises, -2 sleeps 5 s, -3 is refused with a 400; `crash` exits."""

    batchable = True

    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def load(self):
        print("echo loaded with scale", self.scale)

    def predict(self, inputs, parameters):
        x = inputs["input"]
        if parameters.get("crash"):
            os._exit(3)
        first = x.reshape(-1)[0] if x.size else 0
        if first == -1:
            raise ValueError("negative one is not allowed")
        if first == -2:
            time.sleep(5)
        if first == -3:
            raise ModelError("minus three is the caller's mistake", status=400)
        return {
            "output": x * self.scale,
            "pid": np.full(x.shape[0], os.getpid(), dtype=np.int64),
        }


def add_one(inputs, parameters):
    """A `kind: python` handler: replaces `input`."""
    return {"input": inputs["input"] + 1}


def double(inputs, parameters):
    """A plain function (servegraph's API)."""
    return inputs["input"] * 2


def nested(inputs, parameters):
    """Returns a nested dict as an output (MLRun-style models answer such structures)."""
    return {"info": {"rows": int(inputs["input"].shape[0]), "tags": ["a", "b"]}}


def feature_sum(xs):
    """Clipper's example closure: a list of inputs in, a list of outputs (strings) out."""
    return [str(float(sum(x))) for x in xs]


class Model:
    """PrimeHub's skeleton: no base class, `model_uri` a folder, `predict(X, feature_names,
    meta)`."""

    def __init__(self, model_uri=None):
        self.model_uri = model_uri
        self.ready = False

    def load(self):
        with open(os.path.join(self.model_uri, "weight.txt")) as f:
            self.weight = float(f.read())
        self.ready = True

    def predict(self, X, feature_names=None, meta=None):
        return X * self.weight


class Reverse:
    """BYTES in, BYTES out: each element reversed, byte for byte."""

    def predict(self, inputs, parameters):
        s = inputs["s"]
        return np.array([bytes(b)[::-1] for b in s.reshape(-1)], dtype=object).reshape(s.shape)


class Broken:
    def load(self):
        raise RuntimeError("the weights are missing")

    def predict(self, inputs, parameters):
        return inputs


from servegraph.compat.mlrun import V2ModelServer  # noqa: E402 - after the plain classes
from servegraph.compat.seldon import SeldonComponent, SeldonResponse  # noqa: E402


class LinearServer(V2ModelServer):
    """An MLRun model server, as written for `mlrun.serving` (one import changed): the
    weight from `get_model('.txt')`, a factor from `get_param`, rows shifted by one in
    `preprocess` (so the test sees MLRun's order)."""

    def load(self):
        path, _extra = self.get_model(".txt")
        with open(path) as f:
            self.weight = float(f.read()) * self.get_param("factor", 1)

    def preprocess(self, request, operation):
        request["inputs"] = (np.asarray(request["inputs"]) + 1).tolist()
        return request

    def predict(self, request):
        self.set_metric("rows", len(request["inputs"]))
        return (np.asarray(request["inputs"]) * self.weight).tolist()

    def op_scale(self, event):
        """A custom operation (`POST /v2/models/{m}/scale`): MLRun's `op_<name>(event)`."""
        return {"scaled": [x * self.weight for x in event.body["values"]], "path": event.path}


class Component(SeldonComponent):
    """A Seldon Core component (one import changed), answering with a SeldonResponse."""

    def __init__(self, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def tags(self):
        return {"component": "v1", "seen": 0}

    def metrics(self):
        return [{"type": "COUNTER", "key": "calls", "value": 1}, {"type": "TIMER", "key": "took", "value": 3.5}]

    def predict(self, X, feature_names, meta=None):
        return SeldonResponse(X + self.offset, tags={"seen": len(X)})


def where(inputs, parameters):
    """Which interpreter and environment run this model: `sys.prefix`, one BYTES element."""
    import sys

    return {"prefix": np.array([sys.prefix.encode()], dtype=object)}


def _in_shared_memory(arr):
    import mmap

    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


def make_big(inputs, parameters):
    n = int(inputs["n"].reshape(-1)[0])
    return {"big": np.arange(n, dtype=np.float32)}


def pass_big(inputs, parameters):
    big = inputs["big"]
    return {"big": big, "passed_in_shm": np.array([_in_shared_memory(big)])}


def check_big(inputs, parameters):
    big = inputs["big"]
    intact = bool(np.array_equal(big, np.arange(big.size, dtype=np.float32)))
    return {
        "checked_in_shm": np.array([_in_shared_memory(big)]),
        "intact": np.array([intact]),
        "size": np.array([big.size], dtype=np.int64),
    }


class SlowLoad:
    """Takes `seconds` to load, then fails if `fail`; echoes its input."""

    def __init__(self, seconds=1.0, fail=False):
        self.seconds = float(seconds)
        self.fail = fail

    def load(self):
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("the slow load failed")

    def predict(self, inputs, parameters):
        return inputs["input"]


class Moody:
    """A Seldon-style class whose `health_status()` raises while the file `sick` exists."""

    def __init__(self, sick):
        self.sick = sick

    def health_status(self):
        if os.path.exists(self.sick):
            raise RuntimeError("feeling sick")
        return {"status": "ok"}

    def predict(self, X, feature_names, meta=None):
        return X


class Words:
    """Text generation for the generate extension: `predict` yields the words of
    `text_input` upper-cased, one at a time (at most `max_tokens` of them, `pause` seconds
    apart); the word `fail` raises mid-stream."""

    def predict(self, inputs, parameters):
        text = inputs["text_input"].reshape(-1)[0]
        text = text.decode() if isinstance(text, bytes) else str(text)
        for i, word in enumerate(text.split()[: int(parameters.get("max_tokens", 100))]):
            if word == "fail":
                raise ValueError("cannot say fail")
            if i:
                time.sleep(float(parameters.get("pause", 0)))
            yield {"text_output": word.upper() + " "}


class Whole:
    """The same text at once, as a model that does not stream answers."""

    def predict(self, inputs, parameters):
        text = inputs["text_input"].reshape(-1)[0]
        text = text.decode() if isinstance(text, bytes) else str(text)
        return {"text_output": np.array([text.upper()], dtype=object)}
