#!/usr/bin/env python3
"""Sends golden requests over gRPC with the stock `tritonclient[grpc]` and prints the answers
in the OIP JSON response shape, for tests/golden.rs to compare with the golden outputs.

Usage: grpc_golden.py HOST:PORT CASES.json   (CASES: a list of {"model", "request"})

Each request's inputs become `InferInput`s set from NumPy arrays (raw_input_contents, as
tritonclient sends them); BYTES marked `content_type: base64` are decoded first. Answers are
read with `as_numpy()` (which reads raw_output_contents only).
"""
import base64
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import triton_to_np_dtype

def array(inp):
    dt = inp["datatype"]
    data = inp["data"]
    if dt == "BYTES":
        flat = np.array(data, dtype=object).reshape(-1)
        if (inp.get("parameters") or {}).get("content_type") == "base64":
            flat = np.array([base64.b64decode(x) for x in flat], dtype=object)
        else:
            flat = np.array([x.encode() if isinstance(x, str) else x for x in flat], dtype=object)
        return flat.reshape(inp["shape"])
    return np.array(data, dtype=triton_to_np_dtype(dt)).reshape(inp["shape"])


def as_json(x):
    if x.dtype == object:
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in x.reshape(-1)]
    return x.reshape(-1).tolist()


def main():
    url, cases_path = sys.argv[1], sys.argv[2]
    with open(cases_path) as f:
        cases = json.load(f)
    client = grpcclient.InferenceServerClient(url=url)
    answers = []
    for case in cases:
        request = case["request"]
        inputs = []
        for inp in request["inputs"]:
            a = array(inp)
            i = grpcclient.InferInput(inp["name"], list(a.shape), inp["datatype"])
            i.set_data_from_numpy(a)
            inputs.append(i)
        result = client.infer(case["model"], inputs, request_id=request.get("id", ""))
        response = result.get_response()
        outputs = []
        for o in response.outputs:
            x = result.as_numpy(o.name)
            outputs.append({"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": as_json(x)})
        parameters = {}
        for k, p in response.parameters.items():
            parameters[k] = getattr(p, p.WhichOneof("parameter_choice"))
        answers.append({"id": response.id, "model_name": response.model_name, "outputs": outputs, "parameters": parameters})
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
