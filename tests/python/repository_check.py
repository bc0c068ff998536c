"""The live model repository (issue 13), driven by the unchanged `tritonclient.http` and by
servegraph's own deployers (`python/servegraph/deploy.py`) from a real Python session.

    repository_check.py CASE HOST:PORT TOKEN ROOT

Prints `ok CASE` when every assertion held.
"""

import json
import os
import pickle
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

CASE, ADDR, TOKEN, ROOT = sys.argv[1:5]
sys.path.insert(0, os.path.join(ROOT, "python"))
import servegraph  # noqa: E402

URL = "http://" + ADDR
AUTH = {"Authorization": "Bearer " + TOKEN}
with open(os.path.join(ROOT, "models/iris_expected.json")) as f:
    EXPECTED = json.load(f)
ROWS = np.array(EXPECTED["rows"], dtype=np.float32)


def model(name):
    with open(os.path.join(ROOT, "models", name), "rb") as f:
        return f.read()


def rows_input(dtype=np.float32):
    x = httpclient.InferInput("input", list(ROWS.shape), "FP32" if dtype == np.float32 else "FP64")
    x.set_data_from_numpy(ROWS.astype(dtype))
    return x


def labels(client, name, version=""):
    return client.infer(name, [rows_input()], model_version=version).as_numpy("label").tolist()


def refused(call, status, text):
    try:
        call()
    except (InferenceServerException, servegraph.DeployError) as e:
        got = str(e.status() if isinstance(e, InferenceServerException) else e.status)
        assert got == str(status), (got, status, str(e))
        assert text in str(e), (text, str(e))
        return str(e)
    raise AssertionError("not refused: expected %s %r" % (status, text))


def triton_load(client):
    """tritonclient's load_model with a config and files deploys an ONNX model unchanged;
    new versions, the default version, rollback and unload."""
    config = {
        "name": "flower",
        "backend": "onnxruntime",
        "max_batch_size": 16,
        "dynamic_batching": {},
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "label", "data_type": "TYPE_INT64", "dims": [1]}],
    }
    client.load_model("flower", headers=AUTH, config=json.dumps(config), files={"file:1/model.onnx": model("iris_lr.onnx")})
    assert client.is_model_ready("flower", "1")
    assert labels(client, "flower") == EXPECTED["iris-lr"]["label"]
    assert client.get_model_config("flower")["max_batch_size"] == 16
    # Version 2 (another model) becomes the default; version 1 still answers by number.
    client.load_model("flower", headers=AUTH, files={"file:2/model.onnx": model("iris_rf.onnx")})
    assert client.get_model_metadata("flower")["versions"] == ["1", "2"]
    assert labels(client, "flower") == EXPECTED["iris-rf"]["label"]
    assert labels(client, "flower", "1") == EXPECTED["iris-lr"]["label"]
    # Rollback: version 1 is the default again.
    servegraph.set_model_version(URL, "flower", "1", token=TOKEN)
    assert labels(client, "flower") == EXPECTED["iris-lr"]["label"]
    refused(lambda: servegraph.set_model_version(URL, "flower", "9", token=TOKEN), 404, "no version `9`")
    # Unload one version (servegraph's `version` parameter), then all.
    servegraph.unload_model(URL, "flower", version="2", token=TOKEN)
    refused(lambda: labels(client, "flower", "2"), 404, "no version `2`")
    assert labels(client, "flower") == EXPECTED["iris-lr"]["label"]
    client.unload_model("flower", headers=AUTH)
    index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
    assert index[("flower", "1")]["state"] == "UNAVAILABLE", index
    refused(lambda: labels(client, "flower"), 404, "unknown model `flower`")
    # A load without files brings the unloaded versions back (Triton's repository reload).
    client.load_model("flower", headers=AUTH)
    assert labels(client, "flower", "1") == EXPECTED["iris-lr"]["label"]
    # The graph file's own models are untouched.
    assert labels(client, "iris-lr") == EXPECTED["iris-lr"]["label"]


def bad_models(client):
    """A bad model is a 400 with the diagnostics a graph step gets; the server keeps serving."""
    e = refused(
        lambda: client.load_model("junk", headers=AUTH, files={"file:1/model.onnx": b"not onnx"}),
        400,
        "ONNX Runtime cannot load",
    )
    assert "junk:1" in e, e
    config = {"input": [{"name": "pixels", "data_type": "TYPE_FP32", "dims": [4]}]}
    refused(
        lambda: client.load_model("cfg", headers=AUTH, config=json.dumps(config), files={"file:1/model.onnx": model("iris_lr.onnx")}),
        400,
        "declares input `pixels`, which the model does not have",
    )
    refused(
        lambda: client.load_model("trt", headers=AUTH, config=json.dumps({"backend": "tensorrt"}), files={"file:1/model.plan": b"x"}),
        400,
        "backend `tensorrt` is not served",
    )
    refused(lambda: client.load_model("x", headers=AUTH, files={"file:model.onnx": b"x"}), 400, "version's folder")
    refused(lambda: client.load_model("x", headers=AUTH, files={"file:1/../../evil.onnx": b"x"}), 400, "not a plain relative path")
    refused(lambda: client.load_model("iris-lr", headers=AUTH, files={}), 404, "holds no model `iris-lr`")
    names = {m["name"] for m in client.get_model_repository_index()}
    assert not names & {"junk", "cfg", "trt", "x"}, names
    assert labels(client, "iris-lr") == EXPECTED["iris-lr"]["label"]


def no_token(client):
    """Without `--admin-token` the repository's actions are off (404); the index still answers."""
    refused(lambda: client.load_model("m", files={"file:1/model.onnx": model("iris_lr.onnx")}), 404, "")
    refused(lambda: client.unload_model("iris-lr"), 404, "")
    assert client.get_model_repository_index()


def wrong_token(client):
    refused(lambda: client.load_model("m", headers={"Authorization": "Bearer nope"}, files={"file:1/model.onnx": model("iris_lr.onnx")}), 401, "Bearer")
    refused(lambda: servegraph.deploy_onnx_model(URL, "m", "1", model("iris_lr.onnx")), 401, "Bearer")
    refused(lambda: labels(client, "m"), 404, "unknown model `m`")


def add_one(xs):
    return [float(np.sum(x)) + 1.0 for x in xs]


def deployers(client):
    """Clipper's deployers from a Python session: a closure, a scikit-learn model, an ONNX
    file; each answers OIP with `input` and `output`."""
    servegraph.deploy_python_closure(URL, "add-one", "1", "doubles", add_one, token=TOKEN, example=[[1.0, 2.0]])
    x = httpclient.InferInput("input", [2, 3], "FP64")
    x.set_data_from_numpy(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float64))
    assert client.infer("add-one", [x]).as_numpy("output").tolist() == [7.0, 16.0]
    # A closure using a module of the user's own (not on the server): shipped by value.
    import local_helper

    servegraph.deploy_python_closure(URL, "tripled", "1", "doubles", lambda xs: [local_helper.triple(x.sum()) for x in xs], token=TOKEN)
    assert client.infer("tripled", [x]).as_numpy("output").tolist() == [18.0, 45.0]
    # A closure over a local variable and strings in, strings out.
    suffix = "!"
    servegraph.deploy_python_closure(URL, "shout", "1", "strings", lambda xs: [s.upper() + suffix for s in xs], token=TOKEN, batch_size=8)
    s = httpclient.InferInput("input", [2], "BYTES")
    s.set_data_from_numpy(np.array([b"hi", b"yo"], dtype=object))
    assert client.infer("shout", [s]).as_numpy("output").tolist() == [b"HI!", b"YO!"]
    # The function's failure comes back with its traceback; nothing is deployed.
    def broken(xs):
        return [x[10] for x in xs]
    e = refused(lambda: servegraph.deploy_python_closure(URL, "broken", "1", "doubles", broken, token=TOKEN, example=[[1.0]]), 400, "IndexError")
    assert "Traceback" in e and "in broken" in e, e
    # A pickled scikit-learn pipeline.
    with open(os.path.join(ROOT, "models/iris_lr.pkl"), "rb") as f:
        sk = pickle.load(f)
    servegraph.deploy_sklearn_model(URL, "sk-iris", "1", sk, token=TOKEN)
    assert client.get_model_metadata("sk-iris")["inputs"][0]["name"] == "input"
    got = client.infer("sk-iris", [rows_input(np.float64)]).as_numpy("output").tolist()
    assert got == EXPECTED["iris-lr"]["label"], got
    # An ONNX file (what torch.onnx.export writes).
    servegraph.deploy_onnx_model(URL, "onnx-iris", "3", os.path.join(ROOT, "models/iris_rf.onnx"), token=TOKEN)
    assert labels(client, "onnx-iris") == EXPECTED["iris-rf"]["label"]
    listed = {(m["name"], m["version"], m["state"]) for m in servegraph.list_models(URL)}
    assert {("add-one", "1", "READY"), ("sk-iris", "1", "READY"), ("onnx-iris", "3", "READY")} <= listed, listed
    assert not any(n == "broken" for n, _, _ in listed)
    # Packages need --allow-pip; a wrong Python version is refused before anything runs.
    refused(lambda: servegraph.deploy_python_closure(URL, "pkgs", "1", "doubles", add_one, pkgs_to_install=["six"], token=TOKEN), 403, "--allow-pip")


def after_restart(client):
    """What `triton_load` and `deployers` left is served again after a restart."""
    assert labels(client, "flower") == EXPECTED["iris-lr"]["label"]
    x = httpclient.InferInput("input", [1, 2], "FP64")
    x.set_data_from_numpy(np.array([[1, 2]], dtype=np.float64))
    assert client.infer("add-one", [x]).as_numpy("output").tolist() == [4.0]
    got = client.infer("sk-iris", [rows_input(np.float64)]).as_numpy("output").tolist()
    assert got == EXPECTED["iris-lr"]["label"]
    assert labels(client, "onnx-iris") == EXPECTED["iris-rf"]["label"]


def pip(client):
    """`pkgs_to_install` with `--allow-pip`: a virtualenv of the model's own, made by pip,
    with a package the server's Python lacks (a wheel built here, so nothing is downloaded)."""
    import tempfile
    import zipfile

    wheel = os.path.join(tempfile.mkdtemp(), "sgpkg_probe-1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("sgpkg_probe/__init__.py", "ANSWER = 41\n")
        z.writestr("sgpkg_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: sgpkg-probe\nVersion: 1.0\n")
        z.writestr("sgpkg_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("sgpkg_probe-1.0.dist-info/RECORD", "")

    def uses_pkg(xs):
        import sgpkg_probe

        return [float(sgpkg_probe.ANSWER) + float(np.sum(x)) for x in xs]

    servegraph.deploy_python_closure(URL, "with-pkg", "1", "doubles", uses_pkg, pkgs_to_install=[wheel], token=TOKEN, example=[[1.0]])
    x = httpclient.InferInput("input", [1, 1], "FP64")
    x.set_data_from_numpy(np.array([[1.0]]))
    assert client.infer("with-pkg", [x]).as_numpy("output").tolist() == [42.0]


CASES = {f.__name__: f for f in [triton_load, bad_models, no_token, wrong_token, deployers, after_restart, pip]}

if __name__ == "__main__":
    CASES[CASE](httpclient.InferenceServerClient(url=ADDR))
    print("ok " + CASE)
