#!/usr/bin/env python3
"""Drives a running servegraph with the stock `tritonclient[http]` client, unchanged.

Usage: tritonclient_check.py HOST:PORT models/iris_expected.json

Checks server liveness/readiness and metadata, then infers with the binary tensor extension
(tritonclient's default) and with JSON, on iris-lr, iris-rf and the `iris` router, comparing
labels and probabilities with scikit-learn's. Prints one line per check; exits non-zero on
the first failure.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main():
    url, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    rows = np.array(expected["rows"], dtype=np.float32)
    client = httpclient.InferenceServerClient(url=url)

    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"], meta
    print("ok server live, ready, metadata")

    for model in ["iris-lr", "iris-rf"]:
        assert client.is_model_ready(model), model
        md = client.get_model_metadata(model)
        assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}], md
        names = sorted(o["name"] for o in md["outputs"])
        assert names == ["label", "probabilities"], md
        for binary in [True, False]:
            inp = httpclient.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=binary)
            outputs = [
                httpclient.InferRequestedOutput("label", binary_data=binary),
                httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            ]
            res = client.infer(model, [inp], outputs=outputs, request_id="check-1")
            label = res.as_numpy("label")
            proba = res.as_numpy("probabilities")
            assert label.tolist() == expected[model]["label"], (model, label, expected[model]["label"])
            assert np.allclose(proba, expected[model]["probabilities"], atol=1e-4), (model, proba)
            assert res.get_response()["id"] == "check-1"
            print(f"ok {model} binary={binary}")
        # No outputs named: tritonclient asks for all of them.
        inp = httpclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        res = client.infer(model, [inp])
        assert res.as_numpy("label").tolist() == expected[model]["label"]
        print(f"ok {model} all outputs")

    # The router: each answer comes from one of the two routes and says which.
    seen = set()
    for _ in range(40):
        inp = httpclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        res = client.infer("iris", [inp])
        route = res.get_response()["parameters"]["route"]
        seen.add(route)
        assert res.as_numpy("label").tolist() == expected[route]["label"], route
    assert seen == {"iris-lr", "iris-rf"}, seen
    print("ok iris router reached", sorted(seen))

    # A wrong dtype is refused with 422 and a message naming the tensor.
    bad = httpclient.InferInput("input", list(rows.shape), "FP64")
    bad.set_data_from_numpy(rows.astype(np.float64))
    try:
        client.infer("iris-lr", [bad])
        raise AssertionError("FP64 input was accepted")
    except InferenceServerException as e:
        assert "input `input` must be FP32 but is FP64" in e.message(), e.message()
        assert e.status() == "422", e.status()
    print("ok wrong dtype refused")
    print("all tritonclient checks passed")


if __name__ == "__main__":
    main()
