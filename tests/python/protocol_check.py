#!/usr/bin/env python3
"""Protocol conformance checks (issue 12), each driving a running servegraph with the stock
clients a Triton or KServe user has, unchanged: `tritonclient[http]` and the `kserve` SDK's
`InferenceRESTClient`; raw HTTP (urllib) only where no client call exists.

Usage: protocol_check.py CASE HOST:PORT models/iris_expected.json

Each case prints `ok CASE` and exits 0, or fails with an assertion naming what was wrong.
"""
import asyncio
import gzip
import json
import sys
import urllib.error
import urllib.request
import zlib

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def rows_input(rows, binary=True):
    inp = httpclient.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    return inp


def raw(url, path, body=None, headers=None, method=None):
    """(status, headers, body) of one HTTP request."""
    req = urllib.request.Request(
        f"http://{url}{path}", data=body, headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def statistics(client, url, expected, rows):
    for _ in range(3):
        client.infer("iris-lr", [rows_input(rows)])
    client.infer("iris", [rows_input(rows)])
    stats = client.get_inference_statistics("iris-lr")
    [m] = stats["model_stats"]
    assert m["name"] == "iris-lr" and m["version"] == "1", m
    s = m["inference_stats"]
    assert s["success"]["count"] >= 3 and s["success"]["ns"] > 0, m
    assert s["fail"]["count"] == 0, m
    assert m["inference_count"] >= 3 * len(rows), m
    assert m["execution_count"] >= 1 and s["compute_infer"]["count"] >= 1, m
    assert s["queue"]["count"] >= 1, m
    assert sum(b["compute_infer"]["count"] for b in m["batch_stats"]) == m["execution_count"], m
    versioned = client.get_inference_statistics("iris-lr", "1")
    assert versioned["model_stats"][0]["name"] == "iris-lr", versioned
    every = client.get_inference_statistics()
    names = {m["name"] for m in every["model_stats"]}
    assert names == {"iris", "iris-lr", "iris-rf"}, names
    graph = next(m for m in every["model_stats"] if m["name"] == "iris")
    assert graph["inference_stats"]["success"]["count"] >= 1, graph
    # A failed request counts as a failure of the model that refused it.
    bad = httpclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("iris-lr", [bad])
        raise AssertionError("a [1, 3] input was accepted")
    except InferenceServerException:
        pass
    after = client.get_inference_statistics("iris-lr")["model_stats"][0]
    assert after["inference_stats"]["fail"]["count"] == 1, after
    try:
        client.get_inference_statistics("nope")
        raise AssertionError("statistics of an unknown model")
    except InferenceServerException as e:
        assert "unknown model `nope`" in str(e), e
    # The router's experiment statistics have their own path.
    status, _, body = raw(url, "/v2/models/iris/experiment")
    assert status == 200 and "routes" in json.loads(body), (status, body)


def config(client, url, expected, rows):
    c = client.get_model_config("iris-lr")
    assert c["name"] == "iris-lr" and c["platform"] == "onnxruntime_onnx", c
    assert c["backend"] == "onnxruntime", c
    assert c["max_batch_size"] == 64, c
    assert c["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}], c
    outs = {o["name"]: o for o in c["output"]}
    assert outs["label"]["data_type"] == "TYPE_INT64" and outs["label"]["dims"] == [], c
    assert outs["probabilities"]["dims"] == [3], c
    assert c["dynamic_batching"]["max_queue_delay_microseconds"] == 0, c
    assert client.get_model_config("iris-lr", "1") == c
    flow = client.get_model_config("iris")
    assert flow["max_batch_size"] == 0 and flow["input"][0]["dims"] == [-1, 4], flow


def classification(client, url, expected, rows):
    probs = np.array(expected["iris-lr"]["probabilities"])
    for binary in [True, False]:
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
        res = client.infer("iris-lr", [rows_input(rows)], outputs=[out])
        classes = res.as_numpy("probabilities")
        assert classes.shape == (len(rows), 2), classes.shape
        for row, p in zip(classes, probs):
            first = row[0].decode() if isinstance(row[0], bytes) else row[0]
            value, index = first.split(":")
            assert int(index) == int(np.argmax(p)), (row, p)
            assert abs(float(value) - p.max()) < 1e-4, (row, p)
            assert len(value.split(".")[1]) == 6, row
    bad = httpclient.InferRequestedOutput("label", class_count=0)
    bad._parameters["classification"] = -1
    try:
        client.infer("iris-lr", [rows_input(rows)], outputs=[bad])
        raise AssertionError("classification -1 was accepted")
    except InferenceServerException as e:
        assert "`classification` must be a count" in str(e), e


def repository(client, url, expected, rows):
    index = client.get_model_repository_index()
    got = {(m["name"], m["version"], m["state"]) for m in index}
    assert got == {("iris", "1", "READY"), ("iris-lr", "1", "READY"), ("iris-rf", "1", "READY")}, got
    # Load and unload are admin actions: off (404) on a server started without a token
    # (tests/repository.rs drives them with one).
    for call in [client.load_model, client.unload_model]:
        try:
            call("iris-lr")
            raise AssertionError(f"{call.__name__} succeeded")
        except InferenceServerException as e:
            assert str(e.status()) == "404", (e.status(), e)


def versions(client, url, expected, rows):
    md = client.get_model_metadata("iris-lr")
    assert md["versions"] == ["1"], md
    assert client.get_model_metadata("iris-lr", "1")["name"] == "iris-lr"
    assert client.is_model_ready("iris-lr", "1")
    res = client.infer("iris-lr", [rows_input(rows)], model_version="1")
    assert res.as_numpy("label").tolist() == expected["iris-lr"]["label"]
    try:
        client.infer("iris-lr", [rows_input(rows)], model_version="7")
        raise AssertionError("version 7 answered")
    except InferenceServerException as e:
        assert "has no version `7`; its versions are: 1" in str(e), e
    # The body's `model: name:version` selects the version as the URL does.
    body = {
        "model": "iris-lr:1",
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                    "data": rows.flatten().tolist()}],
    }
    status, _, answer = raw(url, "/", json.dumps(body).encode(), {"content-type": "application/json"})
    assert status == 200, answer
    answer = json.loads(answer)
    assert answer["model_name"] == "iris-lr", answer
    label = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
    assert label == expected["iris-lr"]["label"], label
    body["model"] = "iris-lr:9"
    status, _, answer = raw(url, "/", json.dumps(body).encode())
    assert status == 404 and b"its versions are: 1" in answer, (status, answer)
    status, _, answer = raw(url, "/v2/models/nope")
    assert status == 404, answer
    error = json.loads(answer)["error"]
    assert error.count("iris-lr") == 1, error


def bytes_both_ways(client, url, expected, rows):
    items = np.array([b"a\x00b", b"", b"\xff\xfe\x00", "é".encode()], dtype=np.object_)
    for binary_in in [True]:
        for binary_out in [True, False]:
            inp = httpclient.InferInput("text", [len(items)], "BYTES")
            inp.set_data_from_numpy(items, binary_data=binary_in)
            out = httpclient.InferRequestedOutput("text", binary_data=binary_out)
            res = client.infer("echo", [inp], outputs=[out])
            got = res.as_numpy("text")
            assert got.tolist() == items.tolist(), (binary_out, got)
            if not binary_out:
                # Not UTF-8: sent binary rather than mangled into U+FFFD.
                o = res.get_output("text")
                assert "binary_data_size" in o.get("parameters", {}), o
    # UTF-8 BYTES asked for as JSON stay JSON.
    text = np.array([b"plain", "é".encode()], dtype=np.object_)
    inp = httpclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(text, binary_data=False)
    res = client.infer("echo", [inp], outputs=[httpclient.InferRequestedOutput("text", binary_data=False)])
    assert res.get_output("text")["data"] == ["plain", "é"], res.get_response()


def raw_binary(client, url, expected, rows):
    # iris-lr batches (its first dimension is the batch): as Triton, a raw request is one
    # row, and every output comes back as binary data, which tritonclient reads.
    status, headers, body = raw(
        url, "/v2/models/iris-lr/infer", rows[:1].tobytes(),
        {"Inference-Header-Content-Length": "0", "content-type": "application/octet-stream"},
    )
    assert status == 200, body
    assert headers["content-type"] == "application/octet-stream", headers
    n = int(headers["inference-header-content-length"])
    head = json.loads(body[:n])
    assert all("binary_data_size" in o["parameters"] for o in head["outputs"]), head
    result = httpclient.InferResult.from_response_body(body, header_length=n)
    assert result.as_numpy("label").tolist() == expected["iris-lr"]["label"][:1], head
    assert result.as_numpy("probabilities").shape == (1, 3), head
    # Several rows are not one: refused, saying so.
    status, _, body = raw(url, "/v2/models/iris-lr/infer", rows.tobytes(),
                          {"Inference-Header-Content-Length": "0"})
    assert status == 400 and b"does not fit input `input` of shape [-1, 4] as one row" in body, body
    # 15 bytes are not whole FP32 elements: refused, saying so.
    status, _, body = raw(url, "/v2/models/iris-lr/infer", b"x" * 15,
                          {"Inference-Header-Content-Length": "0"})
    assert status == 400 and b"not a whole number of FP32 elements" in body, (status, body)
    status, _, body = raw(url, "/v2/models/iris-lr/infer", b"x" * 12,
                          {"Inference-Header-Content-Length": "0"})
    assert status == 400 and b"does not fit input `input` of shape [-1, 4]" in body, body


def trace(client, url, expected, rows):
    # graphs/iris.yaml sets no `telemetry`: tracing is off, and cannot be turned on here.
    off = {"trace_level": ["OFF"], "trace_rate": "1", "trace_count": "-1",
           "trace_mode": "opentelemetry"}
    assert client.get_trace_settings() == off, client.get_trace_settings()
    set_ = client.update_trace_settings(model_name="iris-lr", settings={"trace_rate": "5"})
    assert set_["trace_rate"] == "5", set_
    assert client.get_trace_settings(model_name="iris-lr")["trace_rate"] == "5"
    assert client.get_trace_settings(model_name="iris-rf")["trace_rate"] == "1"
    assert client.get_trace_settings()["trace_rate"] == "1"
    # null: the model follows the global setting again.
    cleared = client.update_trace_settings(model_name="iris-lr", settings={"trace_rate": None})
    assert cleared["trace_rate"] == "1", cleared
    for settings, says in [
        ({"trace_level": ["TIMESTAMPS"]}, "sets no `telemetry"),
        ({"trace_level": ["TENSORS"]}, "TENSORS is not served"),
        ({"trace_file": "/tmp/trace.json"}, "writes no trace files"),
    ]:
        try:
            client.update_trace_settings(settings=settings)
        except InferenceServerException as e:
            assert says in e.message(), e.message()
        else:
            raise AssertionError(f"{settings} was taken")
    try:
        client.get_trace_settings(model_name="nope")
    except InferenceServerException as e:
        assert "unknown model `nope`" in e.message(), e.message()
    else:
        raise AssertionError("an unknown model's trace settings were answered")


def binary_data_output(client, url, expected, rows):
    req = {
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                    "data": rows.flatten().tolist()}],
        "parameters": {"binary_data_output": True},
    }
    # Outputs listed without `binary_data`: JSON, as Triton's server answers.
    listed = dict(req, outputs=[{"name": "label"}])
    status, headers, body = raw(url, "/v2/models/iris-lr/infer", json.dumps(listed).encode())
    assert status == 200 and "inference-header-content-length" not in headers, headers
    assert json.loads(body)["outputs"][0]["data"] == expected["iris-lr"]["label"]
    # None listed: every output binary.
    status, headers, body = raw(url, "/v2/models/iris-lr/infer", json.dumps(req).encode())
    n = int(headers["inference-header-content-length"])
    head = json.loads(body[:n])
    assert all("binary_data_size" in o["parameters"] for o in head["outputs"]), head
    # Per output, as tritonclient asks: one binary, one JSON.
    res = client.infer("iris-lr", [rows_input(rows)], outputs=[
        httpclient.InferRequestedOutput("label", binary_data=True),
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
    ])
    assert res.as_numpy("label").tolist() == expected["iris-lr"]["label"]
    assert "data" in res.get_output("probabilities"), res.get_response()


def compression(client, url, expected, rows):
    for algorithm in ["gzip", "deflate"]:
        res = client.infer(
            "iris-lr", [rows_input(rows)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert res.as_numpy("label").tolist() == expected["iris-lr"]["label"], algorithm
    body = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.flatten().tolist()}]}).encode()
    status, headers, answer = raw(url, "/v2/models/iris-lr/infer", gzip.compress(body),
                                  {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip", headers
    assert json.loads(gzip.decompress(answer))["outputs"], answer
    status, headers, answer = raw(url, "/v2/models/iris-lr/infer", zlib.compress(body),
                                  {"Content-Encoding": "deflate"})
    assert status == 200 and "content-encoding" not in headers, headers
    # The limit counts what a body decompresses to (the server runs with a 64 KiB limit).
    bomb = gzip.compress(b" " * (1 << 20) + body)
    status, _, answer = raw(url, "/v2/models/iris-lr/infer", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and b"larger than the limit" in answer, (status, answer)


def extra_input(client, url, expected, rows):
    extra = httpclient.InferInput("extra", [1], "FP32")
    extra.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    try:
        client.infer("iris-lr", [rows_input(rows), extra])
        raise AssertionError("an extra input was accepted")
    except InferenceServerException as e:
        assert "input `extra` is not one `iris-lr` takes; it takes: `input` FP32 [-1, 4]" in str(e), e
        assert e.status() == "400", e.status()


def kserve_client(client, url, expected, rows):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run():
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            assert await rest.is_server_ready(f"http://{url}")
            assert await rest.is_model_ready(f"http://{url}", "iris-lr")
            for binary in [False, True]:
                inp = InferInput(name="input", shape=list(rows.shape), datatype="FP32")
                inp.set_data_from_numpy(rows, binary_data=binary)
                req = InferRequest(model_name="iris-lr", infer_inputs=[inp], request_id="k1",
                                   parameters={"binary_data_output": binary})
                res = await rest.infer(f"http://{url}", req, model_name="iris-lr")
                out = {o.name: o for o in res.outputs}
                assert out["label"].as_numpy().tolist() == expected["iris-lr"]["label"], binary
                assert np.allclose(out["probabilities"].as_numpy(),
                                   expected["iris-lr"]["probabilities"], atol=1e-4)
                assert res.id == "k1", res.id
        finally:
            await rest.close()

    asyncio.run(run())


CASES = {f.__name__: f for f in [
    statistics, config, classification, repository, versions, bytes_both_ways, raw_binary, trace,
    binary_data_output, compression, extra_input, kserve_client,
]}


def main():
    case, url, expected_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(expected_path) as f:
        expected = json.load(f)
    rows = np.array(expected["rows"], dtype=np.float32)
    client = httpclient.InferenceServerClient(url=url)
    CASES[case](client, url, expected, rows)
    print(f"ok {case}")


if __name__ == "__main__":
    main()
