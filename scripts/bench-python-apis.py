"""The worker's side of one call for each Python API, in-process, as `_worker` runs it: the
call's frame JSON decoded, the adapter, the answer encoded into a frame (written nowhere).
`scripts/bench-python-apis.sh` counts the instructions of N calls under callgrind, a
figure a noisy machine does not move (docs/benchmarks.md).

Usage: python bench-python-apis.py CASE N   (CASE: native, mlrun, mlrun-body, seldon, seldon-body,
kserve, kserve-async, kserve-body, mlserver: MLServer's own package when the interpreter has it,
else servegraph's stand-in)
with the package to measure first on PYTHONPATH (python/ of a checkout)."""

import json
import os
import sys
import tempfile

import numpy as np

from servegraph import _frames, _imports, _worker
from servegraph._apis import api_of, import_target

MODELS = '''
from mlrun.serving import V2ModelServer


class MLRunEcho(V2ModelServer):
    def load(self):
        pass

    def predict(self, body):
        return body["inputs"]


class SeldonEcho:
    def predict(self, X, feature_names, meta=None):
        return X


class NativeEcho:
    def predict(self, inputs, parameters):
        return inputs


from kserve import InferOutput, InferResponse, Model


class KServeEcho(Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, dict):
            return {"predictions": payload["instances"]}
        x = payload.inputs[0]
        return InferResponse(payload.id, self.name, [InferOutput(x.name, x.shape, x.datatype, x.data)])


class KServeAsyncEcho(KServeEcho):
    async def predict(self, payload, headers=None):
        return super().predict(payload, headers)


from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceResponse


class MLServerEcho(MLModel):
    async def predict(self, payload):
        x = self.decode_request(payload, default_codec=NumpyRequestCodec)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("output", x)])
'''


class Sink:
    def write(self, data):
        pass

    def flush(self):
        pass


class Waiting:
    """The worker's `Input`, as far as a call uses it."""

    last = 0.0
    spin = 0.0002


def model(path, cls, api):
    spec = {"path": path, "class_name": cls, "api": api, "step": "m"}
    target = import_target(spec)
    return api_of(target, spec)(target, spec)


def main():
    case, n = sys.argv[1], int(sys.argv[2])
    _imports.install()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "echo_models.py")
    with open(path, "w") as f:
        f.write(MODELS)
    row = [[1.0, 2.0, 3.0, 4.0]]
    x = np.array(row, dtype=np.float32)
    sink, inp = Sink(), Waiting()
    api, cls, body = {
        "native": ("servegraph", "NativeEcho", None),
        "mlrun": ("mlrun", "MLRunEcho", None),
        "mlrun-body": ("mlrun", "MLRunEcho", {"inputs": row}),
        "seldon": ("seldon", "SeldonEcho", None),
        "seldon-body": ("seldon", "SeldonEcho", {"data": {"ndarray": row}}),
        "kserve": ("kserve", "KServeEcho", None),
        "kserve-async": ("kserve", "KServeAsyncEcho", None),
        "kserve-body": ("kserve", "KServeEcho", {"instances": row}),
        "mlserver": ("mlserver", "MLServerEcho", None),
    }[case]
    m = model(path, cls, api)
    meta = {"body": body, "id": "r1"} if body is not None else {}
    if api == "kserve":
        # As the engine calls a KServe class: the request's headers (none here) and id.
        meta.update({"headers": {}, "id": "r1"})
    if api == "mlserver":
        # As the engine calls an MLServer class, with what MLServer's own client sends
        # (NumpyRequestCodec.encode_request): the content types of the request and its input.
        meta.update(
            {"parameters": {"content_type": "np"}, "headers": {}, "id": "r1",
             "input_parameters": {"input": {"content_type": "np"}}}
        )
    raw = json.dumps(meta).encode() if meta else b""

    def call():
        meta = _frames.decode_json(memoryview(raw)) if raw else {}
        tensors = {} if body is not None else {"input": x}
        extra, outputs = _worker.infer(m, meta, tensors, [], inp, sink, 1)
        _worker.write_result(sink, 1, extra, outputs, None, 1)

    for _ in range(50):
        call()
    for _ in range(n):
        call()


if __name__ == "__main__":
    main()
