#!/usr/bin/env python3
"""servegraph's stand-in for `kserve` (`servegraph.compat.kserve*`) side by side with the real
`kserve` 0.21 (both in the test venv): the same calls give the same results, the same
exceptions with the same messages.

Usage: kserve_compat_check.py CASE PYTHON_DIR

PYTHON_DIR is the repository's `python/` folder. Prints `ok CASE` and exits 0, or fails with
an assertion naming what differed.
"""
import asyncio
import datetime
import os
import sys
import tempfile

import numpy as np


def same(a, b, what):
    """`a` and `b` are equal (NumPy arrays by value, dtype and shape)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), (what, a, b)
        assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
        assert a.tolist() == b.tolist(), (what, a, b)
        return
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), (what, a, b)
        for k in a:
            same(a[k], b[k], "%s.%s" % (what, k))
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), (what, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (what, i))
        return
    assert type(a) is type(b) and a == b, (what, a, b)


def outcome(f):
    """What `f()` gives: ("ok", value) or ("raised", type name, message)."""
    try:
        return ("ok", f())
    except Exception as exc:  # noqa: BLE001 - the outcome is compared
        return ("raised", type(exc).__name__, str(exc))


def both(what, f):
    """`f(module)` with the real `kserve.protocol.infer_type` and the stand-in's: the same."""
    import kserve.protocol.infer_type as real
    from servegraph.compat import kserve_infer as mine

    same(outcome(lambda: f(real)), outcome(lambda: f(mine)), what)


def tensor_state(t):
    return {"data": t.data, "raw": t._raw_data, "parameters": t.parameters, "shape": t.shape, "datatype": t.datatype}


def types():
    arrays = {
        "FP32": np.array([[1.5, 2.0], [3.0, 4.0]], dtype=np.float32),
        "INT64": np.array([1, -2, 3], dtype=np.int64),
        "BOOL": np.array([True, False]),
        "UINT8": np.array([[0, 255]], dtype=np.uint8),
        "FP16": np.array([0.5, 1.5], dtype=np.float16),
        "BYTES": np.array([b"ab", "c\u00e9", b""], dtype=np.object_),
    }
    for datatype, array in arrays.items():
        for cls in ("InferInput", "InferOutput"):
            for binary in (False, True):
                def run(m, cls=cls, datatype=datatype, array=array, binary=binary):
                    t = getattr(m, cls)("t", list(array.shape), datatype)
                    t.set_data_from_numpy(array, binary_data=binary)
                    return tensor_state(t), t.as_numpy()

                both("%s %s binary=%s" % (cls, datatype, binary), run)
        both(
            "as_numpy of JSON data %s" % datatype,
            lambda m, d=datatype, a=array: m.InferInput(
                "t", list(a.shape), d, [x.decode() if isinstance(x, bytes) else x for x in a.reshape(-1).tolist()]
            ).as_numpy(),
        )
    # Wrong datatypes and shapes, in KServe's words.
    both("wrong dtype", lambda m: m.InferInput("t", [2], "FP32").set_data_from_numpy(np.array([1, 2])))
    both("wrong shape", lambda m: m.InferOutput("t", [3], "INT64").set_data_from_numpy(np.array([1, 2])))
    both("not an array", lambda m: m.InferOutput("t", [1], "INT64").set_data_from_numpy([1]))
    both("bad datatype", lambda m: m.InferInput("t", [1], "FP8", [1]).as_numpy())
    both("bad datatype out", lambda m: m.InferOutput("t", [1], "FP8", [1]).as_numpy())
    both("lower-case datatype", lambda m: m.InferInput("t", [1], "fp32", [1]).datatype)
    both(
        "datetimes",
        lambda m: tensor_state(_set(m.InferOutput("t", [1], "BYTES"), np.array([np.datetime64("2026-01-02T03:04:05")]), False)),
    )
    both("bytes tensor", lambda m: m.serialize_byte_tensor(np.array([b"x", "yz"], dtype=np.object_)).item())
    both("bytes tensor back", lambda m: m.deserialize_bytes_tensor(b"\x01\x00\x00\x00x\x02\x00\x00\x00yz"))

    def request(m, binary):
        x = m.InferInput("x", [2], "FP32")
        x.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=binary)
        s = m.InferInput("s", [1], "BYTES", ["hi"])
        r = m.InferRequest(
            "m", [x, s], request_id="r1", parameters={"p": 1},
            request_outputs=[m.RequestedOutput("o", {"binary_data": True})],
        )
        return r

    for binary in (False, True):
        both("InferRequest.to_rest binary=%s" % binary, lambda m, b=binary: request(m, b).to_rest())
        both(
            "InferRequest.from_bytes binary=%s" % binary,
            lambda m, b=binary: _from_bytes_request(m, request(m, b)),
        )
    both("use_binary_outputs", lambda m: m.InferRequest("m", [], parameters={"binary_data_output": True}).use_binary_outputs)
    both("get_input_by_name", lambda m: request(m, False).get_input_by_name("s").data)
    both("request to_dict", lambda m: request(m, False).to_dict())
    both("request eq", lambda m: request(m, False) == request(m, False))

    def response(m, binary, requested=None):
        a = m.InferOutput("a", [2], "INT32")
        a.set_data_from_numpy(np.array([7, 8], dtype=np.int32), binary_data=False)
        b = m.InferOutput("b", [1], "BYTES", ["z"])
        return m.InferResponse(
            "r2", "m", [a, b], model_version="1", parameters={"q": "x"},
            use_binary_outputs=binary, requested_outputs=requested,
        )

    for binary in (False, True):
        both("InferResponse.to_rest binary=%s" % binary, lambda m, b=binary: response(m, b).to_rest())
        both(
            "InferResponse.from_bytes binary=%s" % binary,
            lambda m, b=binary: _from_bytes_response(m, response(m, b)),
        )
    both(
        "InferResponse requested outputs",
        lambda m: response(m, False, [m.RequestedOutput("b", {"binary_data": False})]).to_rest(),
    )
    both(
        "InferResponse unknown requested output",
        lambda m: response(m, False, [m.RequestedOutput("nope")]).to_rest(),
    )
    both(
        "InferResponse.from_rest",
        lambda m: tensor_state(m.InferResponse.from_rest({"model_name": "m", "outputs": [{"name": "o", "shape": [1], "datatype": "FP64", "data": [2.5]}]}).outputs[0]),
    )
    both("response eq", lambda m: response(m, False) == response(m, False))
    both("response missing data", lambda m: m.InferResponse("i", "m", [m.InferOutput("o", [1], "FP32")]).to_rest())


def _set(t, array, binary):
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def _from_bytes_request(m, request):
    body, json_length = request.to_rest()
    if json_length is None:
        import json

        body = json.dumps(body).encode()
        json_length = len(body)
    r = m.InferRequest.from_bytes(body, json_length, "m")
    return r.id, r.parameters, [tensor_state(i) for i in r.inputs], [(o.name, o.parameters) for o in r.request_outputs]


def _from_bytes_response(m, response):
    body, json_length = response.to_rest()
    if json_length is None:
        import json

        body = json.dumps(body).encode()
        json_length = len(body)
    r = m.InferResponse.from_bytes(body, json_length)
    return r.id, r.model_name, r.parameters, [tensor_state(o) for o in r.outputs]


def helpers():
    import importlib

    real_utils = importlib.import_module("kserve.utils.utils")
    real_types = importlib.import_module("kserve.protocol.infer_type")
    from servegraph.compat import kserve as mine_utils
    from servegraph.compat import kserve_infer as mine_types

    def with_both(what, f):
        same(outcome(lambda: f(real_utils, real_types)), outcome(lambda: f(mine_utils, mine_types)), what)

    bodies = [
        {"instances": [[1, 2], [3, 4]]},
        {"inputs": [[1.5]], "instances": [[9]]},
        {"instances": ["a", "b"]},
        {"instances": []},
    ]
    for body in bodies:
        with_both("get_predict_input %s" % body, lambda u, t, b=body: u.get_predict_input(b))
        with_both(
            "get_predict_response %s" % body,
            lambda u, t, b=body: u.get_predict_response(b, np.asarray(u.get_predict_input(b)), "m"),
        )
    with_both("get_predict_response list", lambda u, t: u.get_predict_response({"instances": [1]}, [1, 2], "m"))
    with_both(
        "get_predict_input dict rows",
        lambda u, t: u.get_predict_input({"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}).to_dict(),
    )

    def request(t, datatype, data, shape, parameters=None):
        return t.InferRequest("m", [t.InferInput("x", shape, datatype, data)], request_id="r", parameters=parameters)

    requests = [
        ("FP32", [1.0, 2.0, 3.0, 4.0], [2, 2], None),
        ("BYTES", ["a", "b"], [2], None),
        ("INT64", [1, 2], [2], {"binary_data_output": True}),
        ("INT64", [1, 2], [2], {"content_type": "pd"}),
    ]
    for datatype, data, shape, parameters in requests:
        what = "%s %s" % (datatype, parameters)
        with_both(
            "get_predict_input " + what,
            lambda u, t, a=(datatype, data, shape, parameters): _plain(u.get_predict_input(request(t, *a))),
        )
        with_both(
            "get_predict_response " + what,
            lambda u, t, a=(datatype, data, shape, parameters): u.get_predict_response(
                request(t, *a), u.get_predict_input(request(t, *a)), "m"
            ).to_rest(),
        )
    with_both(
        "get_predict_response of a DataFrame",
        lambda u, t: u.get_predict_response(request(t, "INT64", [1, 2], [2], {"content_type": "pd"}), u.get_predict_input(request(t, "INT64", [1, 2], [2], {"content_type": "pd"})), "m").to_rest(),
    )
    with_both("get_predict_response bad payload", lambda u, t: u.get_predict_response(3, [1], "m"))
    for value in ("yes", "OFF", "1", "maybe"):
        with_both("strtobool %s" % value, lambda u, t, v=value: u.strtobool(v))
    with_both("is_v1", lambda u, t: (u.is_v1("v1"), u.is_v1("V2"), u.is_v2("v2")))
    assert len(mine_utils.generate_uuid()) == 36
    real_codec = importlib.import_module("kserve.utils.numpy_codec")

    for dtype in (np.float32, np.int8, np.uint64, bool, np.object_, np.dtype("U3"), np.dtype("S2"), np.complex64):
        same(real_codec.from_np_dtype(np.dtype(dtype)), mine_types.from_np_dtype(np.dtype(dtype)), str(dtype))
    for name in ("FP32", "BYTES", "BOOL", "FP8"):
        same(real_codec.to_np_dtype(name), mine_types.to_np_dtype(name), name)


def _plain(value):
    """A DataFrame as a dict (compared by value)."""
    return value.to_dict() if hasattr(value, "to_dict") and not isinstance(value, np.ndarray) else value


def errors():
    import kserve.errors as real
    from servegraph.compat import kserve_errors as mine

    cases = [
        ("InferenceError", ("it failed",), {}),
        ("InferenceError", ("it failed",), {"status": "UNAVAILABLE"}),
        ("InvalidInput", ("bad",), {}),
        ("ModelNotFound", ("m",), {}),
        ("ModelNotReady", ("m",), {}),
        ("ModelNotReady", ("m", "warming"), {}),
        ("ModelMissingError", ("/mnt/models",), {}),
        ("UnsupportedProtocol", ("v9",), {}),
        ("ServerNotReady", (), {}),
        ("ServerNotLive", ("down",), {}),
        ("WorkersShouldBeLessThanMaxWorkersError", (4,), {}),
    ]
    for name, args, kwargs in cases:
        a, b = getattr(real, name)(*args, **kwargs), getattr(mine, name)(*args, **kwargs)
        same(str(a), str(b), name)
        same([c.__name__ for c in type(a).__mro__], [c.__name__ for c in type(b).__mro__], name + " bases")
    from servegraph._api_kserve import status_of

    for name, status in (("InvalidInput", 400), ("ModelNotFound", 404), ("ModelNotReady", 503), ("InferenceError", 500)):
        for module in (real, mine):
            args = ("m",)
            assert status_of(getattr(module, name)(*args)) == status, (module, name)
    assert status_of(NotImplementedError("x")) == 501
    assert status_of(ValueError("x")) == 500


def parser():
    import kserve.model_server as real
    from servegraph.compat import kserve as mine

    a, _ = real.parser.parse_known_args([])
    b, _ = mine.parser.parse_known_args([])
    same(vars(a), vars(b), "defaults")
    line = ["--model_name", "m", "--http_port", "9", "--enable_grpc", "false", "--event-loop", "asyncio", "--extra", "x"]
    a, rest_a = real.parser.parse_known_args(line)
    b, rest_b = mine.parser.parse_known_args(line)
    same((vars(a), rest_a), (vars(b), rest_b), "a command line")
    import argparse

    for module in (real, mine):
        p = argparse.ArgumentParser(parents=[module.parser])
        p.add_argument("--model_dir", required=True)
        assert p.parse_args(["--model_dir", "/m"]).model_dir == "/m"


def storage():
    from servegraph.compat.kserve import Storage

    with tempfile.TemporaryDirectory() as d:
        folder = os.path.join(d, "model")
        os.mkdir(folder)
        for name in ("model.pkl", "README.md"):
            open(os.path.join(folder, name), "w").close()
        assert Storage.download(folder) == folder
        assert Storage.download("file://" + folder) == folder
        out = os.path.join(d, "out")
        assert Storage.download(folder, out) == out
        assert sorted(os.listdir(out)) == ["README.md", "model.pkl"], os.listdir(out)
        assert os.path.realpath(os.path.join(out, "model.pkl")) == os.path.join(folder, "model.pkl")
        out2 = os.path.join(d, "out2")
        Storage.download(folder, out2, allow_patterns=["*.pkl"])
        assert os.listdir(out2) == ["model.pkl"], os.listdir(out2)
        for uri, words in (
            (os.path.join(d, "nope"), "Local path %s does not exist." % os.path.join(d, "nope")),
            ("s3://bucket/model", "servegraph fetches remote `model_uri`s itself"),
            ("gs://bucket/model", "give 'gs://bucket/model' as the step's `model_uri`"),
        ):
            got = outcome(lambda u=uri: Storage.download(u))
            assert got[0] == "raised" and words in got[2], (uri, got)


def model():
    """A subclass of the stand-in's Model and of KServe's, side by side: the same lifecycle,
    the same `__call__` (its hooks in KServe's order), the same base behaviours."""
    import kserve
    from servegraph.compat import kserve as mine

    def subclass(base):
        class M(base):
            def __init__(self, name):
                super().__init__(name)
                self.calls = []

            async def preprocess(self, payload, headers=None):
                self.calls.append("pre")
                return {"instances": [v * 2 for v in payload["instances"]]}

            def predict(self, payload, headers=None):
                self.calls.append("predict")
                return {"predictions": payload["instances"], "h": headers}

            def postprocess(self, result, headers=None, response_headers=None):
                self.calls.append("post")
                result["post"] = True
                return result

        return M

    for base in (kserve.Model, mine.Model):
        m = subclass(base)("m")
        assert (m.name, m.ready, m.engine) == ("m", False, False)
        assert m.load() is True and m.ready is True
        assert m.predictor_config is None
        got = asyncio.run(m({"instances": [1, 2]}, headers={"a": "b"}))
        assert got == ({"predictions": [2, 4], "h": {"a": "b"}, "post": True}, {}), (base, got)
        assert m.calls == ["pre", "predict", "post"], m.calls
        assert asyncio.run(m.healthy()) is True
        m.stop()
        assert m.ready is False
        assert m.get_input_types() == [] and m.get_output_types() == []

    def base_outcomes(base):
        m = base("m")
        return (
            outcome(lambda: asyncio.run(m.predict({"instances": [1]}))),
            outcome(lambda: asyncio.run(m.explain({"instances": [1]}))),
            outcome(lambda: asyncio.run(m.preprocess({"x": 1}))),
            outcome(lambda: asyncio.run(m.postprocess({"y": 2}))),
            outcome(lambda: m.validate({"instances": "not a list"})),
            m.required_response_headers,
            base("n", return_response_headers=True).required_response_headers,
        )

    same(base_outcomes(kserve.Model), base_outcomes(mine.Model), "the base class")
    same(mine.InferenceVerb.EXPLAIN.value, kserve.model.InferenceVerb.EXPLAIN.value, "verbs")
    same(
        [(p.name, p.value) for p in mine.PredictorProtocol],
        [(p.name, p.value) for p in kserve.model.PredictorProtocol],
        "protocols",
    )


CASES = {
    "types": types,
    "helpers": helpers,
    "errors": errors,
    "parser": parser,
    "storage": storage,
    "model": model,
}

if __name__ == "__main__":
    case, python_dir = sys.argv[1:3]
    sys.path.insert(0, python_dir)
    CASES[case]()
    print("ok %s" % case)
