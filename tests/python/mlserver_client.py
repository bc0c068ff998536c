"""Requests as MLServer's own types and codecs make them (`InferenceRequest(...)
.model_dump_json()`, `NumpyCodec.encode_input`, `StringCodec.encode_input`,
`PandasCodec.encode_request`), posted over plain HTTP to a server's `/v2/models/{model}/infer`,
and the answers read back with MLServer's types and codecs (`InferenceResponse.model_validate`,
`decode_output`, `PandasCodec.decode_response`). Needs the real `mlserver` (the bench venv's
interpreter), for tests/mlserver.rs.

Usage: mlserver_client.py CASE HOST:PORT MODEL

Prints one JSON object: `status`, `body` (the answer as sent) and `decoded` (what MLServer's
codecs make of it).
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
from mlserver.codecs import NumpyCodec, NumpyRequestCodec, PandasCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestOutput


def post(addr, model, request):
    req = urllib.request.Request(
        "http://%s/v2/models/%s/infer" % (addr, model),
        data=request.model_dump_json().encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def numpy(addr, model):
    request = InferenceRequest(
        id="numpy-1",
        inputs=[NumpyCodec.encode_input("input", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))],
    )
    status, body = post(addr, model, request)
    response = InferenceResponse.model_validate(body)
    return status, body, NumpyCodec.decode_output(response.outputs[0]).tolist()


def text(addr, model):
    request = InferenceRequest(inputs=[StringCodec.encode_input("input", ["hello world"])])
    status, body = post(addr, model, request)
    response = InferenceResponse.model_validate(body)
    return status, body, StringCodec.decode_output(response.outputs[0])


def simple(addr, model):
    request = InferenceRequest(
        inputs=[
            NumpyCodec.encode_input("foo", np.array([[1, 2], [3, 4]], dtype=np.int32)),
            StringCodec.encode_input("bar", ["a", "b"]),
        ]
    )
    status, body = post(addr, model, request)
    response = InferenceResponse.model_validate(body)
    return status, body, NumpyCodec.decode_output(response.outputs[0]).tolist()


def frame(addr, model):
    request = PandasCodec.encode_request(pd.DataFrame({"a": [1, 4], "b": [2.5, 3.5]}))
    status, body = post(addr, model, request)
    response = InferenceResponse.model_validate(body)
    return status, body, PandasCodec.decode_response(response).to_dict(orient="list")


def iris(addr, model, outputs=None):
    request = NumpyRequestCodec.encode_request(np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
    if outputs:
        request.outputs = [RequestOutput(name=o) for o in outputs]
    status, body = post(addr, model, request)
    if status != 200:
        return status, body, None
    response = InferenceResponse.model_validate(body)
    return status, body, {o.name: NumpyCodec.decode_output(o).tolist() for o in response.outputs}


CASES = {
    "numpy": numpy,
    "text": text,
    "simple": simple,
    "frame": frame,
    "iris": iris,
    "iris-proba": lambda addr, model: iris(addr, model, ["predict_proba"]),
    "iris-both": lambda addr, model: iris(addr, model, ["predict", "predict_proba"]),
}

if __name__ == "__main__":
    case, addr, model = sys.argv[1:4]
    status, body, decoded = CASES[case](addr, model)
    print(json.dumps({"status": status, "body": body, "decoded": decoded}))
