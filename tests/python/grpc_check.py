#!/usr/bin/env python3
"""Drives servegraph over gRPC with the stock `tritonclient[grpc]`, unchanged: code written
for Triton. One case per call; prints `ok CASE` when every check passed.

Usage: grpc_check.py CASE HOST:PORT [ARGS...]
"""
import json
import os
import queue
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
with open(os.path.join(ROOT, "models", "iris_expected.json")) as f:
    EXPECTED = json.load(f)
ROWS = np.array(EXPECTED["rows"], dtype=np.float32)


def iris_input(rows=ROWS, dtype="FP32"):
    i = grpcclient.InferInput("input", list(rows.shape), dtype)
    i.set_data_from_numpy(rows)
    return i


def refused(call, code, text):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == f"StatusCode.{code}", (e.status(), e.message())
        assert text in e.message(), (text, e.message())
        return e.message()
    raise AssertionError(f"expected {code} ({text})")


def triton_calls(client):
    """live/ready/metadata/config/infer/statistics/index as a Triton user calls them."""
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "servegraph" and "model_repository" in meta.extensions, meta
    for model in ["iris-lr", "iris-rf"]:
        assert client.is_model_ready(model)
        md = client.get_model_metadata(model)
        assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [("input", "FP32", [-1, 4])], md
        assert sorted(o.name for o in md.outputs) == ["label", "probabilities"], md
        assert md.versions == ["1"] and md.platform == "onnxruntime_onnx", md
        config = client.get_model_config(model, as_json=True)["config"]
        assert config["name"] == model and config["input"][0]["data_type"] == "TYPE_FP32", config
        # Outputs asked for come in that order; as_numpy reads raw_output_contents.
        outputs = [grpcclient.InferRequestedOutput("probabilities"), grpcclient.InferRequestedOutput("label")]
        r = client.infer(model, [iris_input()], outputs=outputs, request_id="g-1")
        response = r.get_response()
        assert [o.name for o in response.outputs] == ["probabilities", "label"], response.outputs
        assert response.id == "g-1" and response.model_name == model, response
        assert r.as_numpy("label").tolist() == EXPECTED[model]["label"]
        assert np.allclose(r.as_numpy("probabilities"), EXPECTED[model]["probabilities"], atol=1e-4)
        # No outputs named: all of them.
        r = client.infer(model, [iris_input()])
        assert r.as_numpy("label").tolist() == EXPECTED[model]["label"]
        # Triton's classification extension, asked as its gRPC users ask it.
        top = client.infer(model, [iris_input()], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=1)])
        assert top.as_numpy("probabilities").shape == (len(ROWS), 1), top.as_numpy("probabilities")
        # Version 1 by number, priority and timeout parameters as the client sends them.
        r = client.infer(model, [iris_input()], model_version="1", priority=1, timeout=10_000_000)
        assert r.as_numpy("label").tolist() == EXPECTED[model]["label"]
    # The router says which route answered.
    r = client.infer("iris", [iris_input()])
    route = r.get_response().parameters["route"].string_param
    assert route in ("iris-lr", "iris-rf"), route
    assert r.as_numpy("label").tolist() == EXPECTED[route]["label"]
    stats = client.get_inference_statistics("iris-lr", as_json=True)["model_stats"]
    assert int(stats[0]["inference_stats"]["success"]["count"]) >= 4, stats
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in everything} >= {"iris", "iris-lr", "iris-rf"}, everything
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {("iris-lr", "READY"), ("iris", "READY")}, index
    # The async API (a future) and the callback API.
    done = queue.Queue()
    client.async_infer("iris-lr", [iris_input()], callback=lambda result, error: done.put((result, error)))
    result, error = done.get(timeout=10)
    assert error is None and result.as_numpy("label").tolist() == EXPECTED["iris-lr"]["label"], error


def stream(client):
    """100 requests on one bidirectional stream; a failing one is answered in the stream."""
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for k in range(100):
        model = "nope" if k == 37 else ("iris-lr" if k % 2 else "iris-rf")
        client.async_stream_infer(model, [iris_input()], request_id=f"s{k}")
    got = [answers.get(timeout=30) for _ in range(100)]
    client.stop_stream()
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1 and "unknown model `nope`" in errors[0].message(), errors
    ids = set()
    for result, error in got:
        if error is None:
            rid = result.get_response().id
            k = int(rid[1:])
            model = "iris-lr" if k % 2 else "iris-rf"
            assert result.as_numpy("label").tolist() == EXPECTED[model]["label"], rid
            ids.add(rid)
    assert ids == {f"s{k}" for k in range(100) if k != 37}, sorted(ids)


def datatypes(client):
    """Every datatype, BYTES with bytes that are not UTF-8 among them, both ways unchanged."""
    arrays = {
        "BOOL": np.array([[True, False, True]]),
        "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
        "UINT16": np.array([[0, 65535]], dtype=np.uint16),
        "UINT32": np.array([[4294967295]], dtype=np.uint32),
        "UINT64": np.array([[18446744073709551615]], dtype=np.uint64),
        "INT8": np.array([[-128, 127]], dtype=np.int8),
        "INT16": np.array([[-32768]], dtype=np.int16),
        "INT32": np.array([[-2147483648, 5]], dtype=np.int32),
        "INT64": np.array([[-9223372036854775808]], dtype=np.int64),
        "FP16": np.array([[1.5, -0.25]], dtype=np.float16),
        "FP32": np.array([[1.25, np.nan, np.inf]], dtype=np.float32),
        "FP64": np.array([[1e300, -2.5]], dtype=np.float64),
        "BYTES": np.array([[b"plain", b"\xff\x00\xfe", "caf\u00e9".encode()]], dtype=np.object_),
    }
    for dtype, a in arrays.items():
        i = grpcclient.InferInput(f"x_{dtype.lower()}", list(a.shape), dtype)
        i.set_data_from_numpy(a)
        r = client.infer("echo", [i])
        out = r.get_response().outputs[0]
        assert (out.name, out.datatype, list(out.shape)) == (f"x_{dtype.lower()}", dtype, list(a.shape)), out
        back = r.as_numpy(out.name)
        if dtype == "BYTES":
            assert back.tolist() == a.tolist(), (back, a)
        else:
            assert back.dtype == a.dtype and np.array_equal(back, a, equal_nan=dtype.startswith("FP")), (dtype, back, a)
    # Several tensors at once, in order.
    a, b = np.arange(6, dtype=np.int32).reshape(2, 3), np.array([[b"q"]], dtype=np.object_)
    i1, i2 = grpcclient.InferInput("a", [2, 3], "INT32"), grpcclient.InferInput("b", [1, 1], "BYTES")
    i1.set_data_from_numpy(a)
    i2.set_data_from_numpy(b)
    r = client.infer("echo", [i1, i2])
    assert np.array_equal(r.as_numpy("a"), a) and r.as_numpy("b").tolist() == [[b"q"]]


def errors(client):
    """Errors carry the gRPC code of the one error table, with the message that names what is wrong."""
    refused(lambda: client.get_model_metadata("nope"), "NOT_FOUND", "unknown model `nope`")
    refused(lambda: client.infer("nope", [iris_input()]), "NOT_FOUND", "unknown model `nope`")
    refused(lambda: client.infer("iris-lr", [iris_input()], model_version="7"), "NOT_FOUND", "no version `7`")
    refused(lambda: client.infer("iris-lr", [iris_input(ROWS.astype(np.float64), "FP64")]), "INVALID_ARGUMENT", "must be FP32 but is FP64")
    refused(lambda: client.infer("iris-lr", [iris_input(ROWS[:, :3].copy())]), "INVALID_ARGUMENT", "must have shape [-1, 4] but has shape [10, 3]")
    refused(
        lambda: client.infer("iris-lr", [iris_input()], outputs=[grpcclient.InferRequestedOutput("nothing")]),
        "INVALID_ARGUMENT",
        "unknown output `nothing`",
    )
    wrong = grpcclient.InferInput("pixels", [1, 4], "FP32")
    wrong.set_data_from_numpy(ROWS[:1])
    refused(lambda: client.infer("iris-lr", [wrong]), "INVALID_ARGUMENT", "input `pixels` is not one `iris-lr` takes")
    # RPCs servegraph does not serve, and the repository's actions without --admin-token.
    refused(lambda: client.get_system_shared_memory_status(), "UNIMPLEMENTED", "")
    refused(lambda: client.load_model("m"), "UNIMPLEMENTED", "--admin-token")
    # Larger than --grpc-max-message-bytes (this server's is 64 KiB): RESOURCE_EXHAUSTED for
    # ModelInfer; in a stream, tonic's decoder refuses it with OUT_OF_RANGE.
    big = np.zeros((5000, 4), dtype=np.float32)
    refused(lambda: client.infer("iris-lr", [iris_input(big)]), "RESOURCE_EXHAUSTED", "larger than the limit of 65536 bytes")
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("iris-lr", [iris_input(big)])
    result, error = answers.get(timeout=10)
    client.stop_stream()
    assert error is not None and "StatusCode.OUT_OF_RANGE" in error.status() and "65536" in error.message(), error
    # Still serving.
    assert client.infer("iris-lr", [iris_input()]).as_numpy("label").tolist() == EXPECTED["iris-lr"]["label"]


def slow_input(first):
    x = np.array([[first, 1.0]], dtype=np.float32)
    i = grpcclient.InferInput("input", [1, 2], "FP32")
    i.set_data_from_numpy(x)
    return i


def deadline(client):
    """The request's deadline: Triton's `timeout` parameter (server side: DEADLINE_EXCEEDED
    from the server), and the caller's own (`client_timeout`, sent as grpc-timeout)."""
    # Within its deadline: served (first, while the worker is free).
    r = client.infer("slow", [slow_input(1.0)], client_timeout=30, timeout=20_000_000)
    assert r.as_numpy("output").tolist() == [[2.5, 2.5]], r.as_numpy("output")
    refused(lambda: client.infer("slow", [slow_input(1.0)], timeout=-5), "INVALID_ARGUMENT", "deadline in microseconds")
    t0 = time.monotonic()
    refused(lambda: client.infer("slow", [slow_input(-2.0)], timeout=300_000), "DEADLINE_EXCEEDED", "deadline of 300 ms passed")
    assert time.monotonic() - t0 < 3, time.monotonic() - t0
    t0 = time.monotonic()
    refused(lambda: client.infer("slow", [slow_input(-2.0)], client_timeout=0.5), "DEADLINE_EXCEEDED", "")
    assert time.monotonic() - t0 < 3, time.monotonic() - t0


def in_flight(http_addr):
    """The server's gRPC requests in flight, from its metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://{http_addr}/metrics").read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("servegraph_requests_in_flight") and 'source="grpc"' in line
    )


def admission(client, http_addr):
    """Past the graph's max_in_flight (1 here) a request is RESOURCE_EXHAUSTED at once."""
    done = queue.Queue()
    client.async_infer("slow", [slow_input(-2.0)], callback=lambda result, error: done.put((result, error)))
    deadline = time.monotonic() + 10
    while in_flight(http_addr) < 1:
        assert time.monotonic() < deadline, "the slow request never arrived"
        time.sleep(0.02)
    t0 = time.monotonic()
    refused(lambda: client.infer("slow", [slow_input(1.0)]), "RESOURCE_EXHAUSTED", "too many requests in flight")
    assert time.monotonic() - t0 < 1, time.monotonic() - t0
    result, error = done.get(timeout=30)
    assert error is None, error


def drain(client):
    """SIGTERM arrives (the test sends it once this prints `sent`) while a slow request runs:
    readiness turns false, new requests are still served in the grace period, the slow one
    finishes."""
    done = queue.Queue()
    client.async_infer("slow", [slow_input(-2.0)], callback=lambda result, error: done.put((result, error)))
    print("sent", flush=True)
    deadline = time.monotonic() + 10
    while client.is_server_ready():
        assert time.monotonic() < deadline, "still ready 10 s after SIGTERM"
        time.sleep(0.05)
    assert client.is_server_live()
    r = client.infer("slow", [slow_input(1.0)])
    assert r.as_numpy("output").tolist() == [[2.5, 2.5]]
    result, error = done.get(timeout=30)
    assert error is None, error
    assert result.as_numpy("output").tolist() == [[-5.0, 2.5]], result.as_numpy("output")


def repository(client, token):
    """Triton's load_model/unload_model over gRPC, behind the admin token in the metadata."""
    with open(os.path.join(ROOT, "models", "iris_lr.onnx"), "rb") as f:
        onnx = f.read()
    auth = {"authorization": f"Bearer {token}"}
    refused(lambda: client.load_model("flower", headers={"authorization": "Bearer nope"}, files={"file:1/model.onnx": onnx}), "UNAUTHENTICATED", "Bearer")
    refused(lambda: client.load_model("flower", files={"file:1/model.onnx": onnx}), "UNAUTHENTICATED", "Bearer")
    config = {"backend": "onnxruntime", "max_batch_size": 8, "dynamic_batching": {}, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]}
    client.load_model("flower", headers=auth, config=json.dumps(config), files={"file:1/model.onnx": onnx})
    assert client.is_model_ready("flower")
    assert client.get_model_config("flower", as_json=True)["config"]["max_batch_size"] == 8
    assert client.infer("flower", [iris_input()]).as_numpy("label").tolist() == EXPECTED["iris-lr"]["label"]
    refused(lambda: client.load_model("junk", headers=auth, files={"file:1/model.onnx": b"not onnx"}), "INVALID_ARGUMENT", "ONNX Runtime cannot load")
    client.unload_model("flower", headers=auth)
    index = {(m["name"], m["version"]): m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index[("flower", "1")]["state"] == "UNAVAILABLE", index
    refused(lambda: client.infer("flower", [iris_input()]), "NOT_FOUND", "unknown model `flower`")


def tls(client):
    assert client.is_server_ready()
    r = client.infer("iris-lr", [iris_input()])
    assert r.as_numpy("label").tolist() == EXPECTED["iris-lr"]["label"]


def same_port(client):
    """gRPC and HTTP on one port (--grpc-on-http): both clients, unchanged."""
    import tritonclient.http as httpclient

    assert client.infer("iris-lr", [iris_input()]).as_numpy("label").tolist() == EXPECTED["iris-lr"]["label"]
    http = httpclient.InferenceServerClient(url=sys.argv[2])
    i = httpclient.InferInput("input", list(ROWS.shape), "FP32")
    i.set_data_from_numpy(ROWS)
    assert http.infer("iris-lr", [i]).as_numpy("label").tolist() == EXPECTED["iris-lr"]["label"]


def main():
    case, url, *rest = sys.argv[1:]
    if case == "tls":
        client = grpcclient.InferenceServerClient(url=url, ssl=True, root_certificates=rest[0])
        # The server may still be loading: wait for readiness over gRPC itself.
        for _ in range(300):
            try:
                if client.is_server_ready():
                    break
            except InferenceServerException:
                pass
            time.sleep(0.1)
        tls(client)
    else:
        client = grpcclient.InferenceServerClient(url=url)
        globals()[case](client, *rest)
    print(f"ok {case}")


if __name__ == "__main__":
    main()
