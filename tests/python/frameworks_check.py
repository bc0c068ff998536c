"""Clipper's framework deployers (issue 29), from a real Python session with the framework
installed (its own virtualenv, `scripts/setup.sh --test`): a small model trained here, deployed
live through the HTTP API with the model running in this same interpreter on the server
(`python=sys.executable`), and its answers compared with `func(model, inputs)` called here.

    frameworks_check.py CASE HOST:PORT TOKEN ROOT

Prints `ok CASE` when every assertion held.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np

CASE, ADDR, TOKEN, ROOT = sys.argv[1:5]
sys.path.insert(0, os.path.join(ROOT, "python"))
import servegraph  # noqa: E402

URL = "http://" + ADDR
PY = sys.executable
RNG = np.random.default_rng(29)
# A few hundred rows, two classes, four features.
X = RNG.normal(size=(300, 4)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(np.int64)
QUERY = X[:7]


def infer(name, rows, datatype="FP32"):
    """The OIP answer of `name` for `rows` (status, output as an array or the error text)."""
    rows = np.asarray(rows)
    body = {"inputs": [{"name": "input", "datatype": datatype, "shape": list(rows.shape), "data": rows.reshape(-1).tolist()}]}
    req = urllib.request.Request(
        URL + "/v2/models/%s/infer" % name, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out = json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    (o,) = out["outputs"]
    return 200, np.asarray(o["data"], dtype=np.float64).reshape(o["shape"])


def expect_same(name, rows, expected, datatype="FP32"):
    status, got = infer(name, rows, datatype)
    assert status == 200, (name, status, got)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    assert np.allclose(got, expected, atol=1e-5), (name, got, expected)


def expect_failure(name, func_error):
    status, text = infer(name, QUERY)
    assert status == 500, (name, status, text)
    assert name in text and func_error in text, (name, text)
    return text


def names():
    return {m["name"] for m in servegraph.list_models(URL)}


# --- PyTorch ---------------------------------------------------------------------------------


def torch_model(scriptable=True, labelled=False):
    import torch

    torch.manual_seed(29)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(4, 16)
            self.out = torch.nn.Linear(16, 2)

        def forward(self, x):
            return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=1)

    class LabelledNet(Net):
        # A method besides forward, as users' classes have: TorchScript would drop it.
        def label_of(self, row):
            with torch.no_grad():
                return int(self(torch.from_numpy(np.asarray(row, dtype=np.float32)[None])).argmax())

    class NumpyNet(Net):
        # NumPy inside forward: TorchScript cannot compile it, Clipper's state_dict way can.
        def forward(self, x):
            scale = float(np.sqrt(1.0))
            return super().forward(x * scale)

    model = LabelledNet() if labelled else Net() if scriptable else NumpyNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), y)
        loss.backward()
        opt.step()
    return model.eval()


def torch_func(model, inputs):
    import torch

    with torch.no_grad():
        probs = model(torch.from_numpy(np.stack(inputs).astype(np.float32)))
    return [row.numpy() for row in probs]


def torch_expected(model, rows):
    return np.stack(torch_func(model, list(rows)))


def torch_live():
    import torch

    model = torch_model()
    servegraph.deploy_pytorch_model(URL, "torch-mlp", 1, "floats", torch_func, model, token=TOKEN, python=PY, threads=1, example=QUERY[:2].tolist(), save_format="torchscript")
    expect_same("torch-mlp", QUERY, torch_expected(model, QUERY))
    # By default (Clipper's way) `func` gets the user's own class: its other methods too.
    def classify(model, inputs):
        return [np.array([model.label_of(row)], dtype=np.float32) for row in np.stack(inputs)]

    labelled = torch_model(labelled=True)
    servegraph.deploy_pytorch_model(URL, "torch-methods", 1, "floats", classify, labelled, token=TOKEN, python=PY)
    expect_same("torch-methods", QUERY, np.stack(classify(labelled, list(QUERY))))
    # batch: requests joined into calls of up to 8 inputs answer the same.
    servegraph.deploy_pytorch_model(URL, "torch-batched", 1, "floats", torch_func, model, token=TOKEN, python=PY, batch_size=8)
    expect_same("torch-batched", QUERY[:1], torch_expected(model, QUERY[:1]))
    # Not scriptable: Clipper's way (the module by value + its state_dict).
    odd = torch_model(scriptable=False)
    try:
        torch.jit.script(odd)
    except Exception:
        pass
    else:
        raise AssertionError("NumpyNet was meant not to compile with TorchScript")
    servegraph.deploy_pytorch_model(URL, "torch-state-dict", 1, "floats", torch_func, odd, token=TOKEN, python=PY)
    expect_same("torch-state-dict", QUERY, torch_expected(odd, QUERY))
    # ONNX (Clipper's sixth deployer): served by ONNX Runtime, the module's own answers.
    # No Python runs there: a `func` (or a worker's settings) would not be used, and is refused.
    for extra in [dict(func=torch_func), dict(func=None, threads=2), dict(func=None, save_format="torchscript")]:
        before = names()
        func = extra.pop("func")
        try:
            servegraph.deploy_pytorch_model(URL, "torch-onnx", 1, "floats", func, model, token=TOKEN, onnx=True, example=QUERY[:2].tolist(), **extra)
        except ValueError as e:
            unused = "func" if func is not None else next(iter(extra))
            assert "`%s`" % unused in str(e) and "onnx=True" in str(e), e
        else:
            raise AssertionError("onnx=True took an argument it does not use: %s" % (extra or "func"))
        assert names() == before
    servegraph.deploy_pytorch_model(URL, "torch-onnx", 1, "floats", None, model, token=TOKEN, onnx=True, example=QUERY[:2].tolist(), batch_size=8)
    with torch.no_grad():
        expected = model(torch.from_numpy(QUERY)).numpy()
    expect_same("torch-onnx", QUERY, expected)


def torch_errors():
    import threading

    import torch

    model = torch_model()

    def boom(model, inputs):
        raise RuntimeError("torch says no")

    servegraph.deploy_pytorch_model(URL, "torch-broken", 1, "floats", boom, model, token=TOKEN, python=PY)
    text = expect_failure("torch-broken", "RuntimeError: torch says no")
    # With an example, the deploy itself is refused with the function's traceback.
    try:
        servegraph.deploy_pytorch_model(URL, "torch-refused", 1, "floats", boom, model, token=TOKEN, python=PY, example=QUERY[:1].tolist())
    except servegraph.DeployError as e:
        assert e.status == 400 and "torch says no" in e.message and "torch-refused" in e.message, e
    else:
        raise AssertionError("a failing example was deployed")

    # A module that neither TorchScript nor pickle can save: refused before anything is sent.
    class Locked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            self.lock = threading.Lock()

        def forward(self, x):
            with self.lock:
                return self.lin(x)

    before = names()
    try:
        servegraph.deploy_pytorch_model(URL, "torch-unsaveable", 1, "floats", torch_func, Locked(), token=TOKEN, python=PY, save_format="auto")
    except ValueError as e:
        msg = str(e)
        assert "torch-unsaveable" in msg and "cannot be saved" in msg and "TorchScript" in msg and "lock" in msg, msg
    else:
        raise AssertionError("an unsaveable module was deployed")
    try:
        servegraph.deploy_pytorch_model(URL, "torch-not-a-module", 1, "floats", torch_func, object(), token=TOKEN, python=PY)
    except TypeError as e:
        assert "torch.nn.Module" in str(e), e
    else:
        raise AssertionError("a non-module was deployed")
    assert names() == before, (before, names())
    print(text, file=sys.stderr)


# --- TensorFlow / Keras ----------------------------------------------------------------------


def keras_model():
    import keras
    import tensorflow as tf

    tf.random.set_seed(29)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, Y, epochs=5, batch_size=32, verbose=0)
    return model


def keras_func(model, inputs):
    return list(model.predict_on_batch(np.stack(inputs).astype(np.float32)))


def tf_module():
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(RNG.normal(size=(4, 3)).astype(np.float32))
            self.b = tf.Variable(np.arange(3, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return tf.matmul(x, self.w) + self.b

    return Affine()


def module_func(model, inputs):
    return list(model(np.stack(inputs).astype(np.float32)).numpy())


def tf_live():
    import tempfile

    import tensorflow as tf

    model = keras_model()
    servegraph.deploy_tensorflow_model(URL, "keras-mlp", 1, "floats", keras_func, model, token=TOKEN, python=PY, threads=1, example=QUERY[:2].tolist())
    expect_same("keras-mlp", QUERY, np.stack(keras_func(model, list(QUERY))))
    servegraph.deploy_tensorflow_model(URL, "keras-batched", 1, "floats", keras_func, model, token=TOKEN, python=PY, batch_size=8)
    expect_same("keras-batched", QUERY[:1], np.stack(keras_func(model, list(QUERY[:1]))))
    # A tf.Module (SavedModel), and a SavedModel directory by path.
    module = tf_module()
    servegraph.deploy_tensorflow_model(URL, "tf-module", 1, "floats", module_func, module, token=TOKEN, python=PY)
    expect_same("tf-module", QUERY, np.stack(module_func(module, list(QUERY))))
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp)
        servegraph.deploy_tensorflow_model(URL, "tf-saved-model", 1, "floats", module_func, tmp, token=TOKEN, python=PY)
    expect_same("tf-saved-model", QUERY, np.stack(module_func(module, list(QUERY))))


def tf_errors():
    import tensorflow as tf

    model = keras_model()

    def boom(model, inputs):
        raise KeyError("keras says no")

    servegraph.deploy_tensorflow_model(URL, "keras-broken", 1, "floats", boom, model, token=TOKEN, python=PY)
    expect_failure("keras-broken", "KeyError: 'keras says no'")
    before = names()
    # TF1 sessions are gone from TensorFlow 2: refused, by name.
    sess = tf.compat.v1.Session()
    try:
        servegraph.deploy_tensorflow_model(URL, "tf1-session", 1, "floats", boom, sess, token=TOKEN, python=PY)
    except TypeError as e:
        assert "TF1 session" in str(e) and "tf1-session" in str(e), e
    else:
        raise AssertionError("a TF1 session was deployed")
    finally:
        sess.close()
    # Not a model TensorFlow can save.
    try:
        servegraph.deploy_tensorflow_model(URL, "tf-unsaveable", 1, "floats", boom, {"not": "a model"}, token=TOKEN, python=PY)
    except ValueError as e:
        assert "tf-unsaveable" in str(e) and "cannot be saved" in str(e) and "dict" in str(e), e
    else:
        raise AssertionError("a dict was deployed as a TensorFlow model")
    assert names() == before, (before, names())


def torch_side():
    model = torch_model()
    servegraph.deploy_pytorch_model(URL, "side-torch", 1, "floats", torch_func, model, token=TOKEN, python=PY)
    expect_same("side-torch", QUERY, torch_expected(model, QUERY))


def tf_side():
    model = keras_model()
    servegraph.deploy_tensorflow_model(URL, "side-keras", 1, "floats", keras_func, model, token=TOKEN, python=PY)
    expect_same("side-keras", QUERY, np.stack(keras_func(model, list(QUERY))))


def torch_side_again():
    """After the Keras model joined the server (another interpreter), the torch model still
    answers: each row's probabilities, summing to 1."""
    status, got = infer("side-torch", QUERY)
    assert status == 200 and got.shape == (len(QUERY), 2), (status, got)
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5), got


TORCH_FUNCS = """
import numpy as np
import torch


def predict(model, inputs):
    with torch.no_grad():
        return [float(p[1]) for p in model(torch.from_numpy(np.stack(inputs)))]
"""


def torch_yaml_files():
    """For a graph YAML (`class: python`, `servegraph.frameworks.TorchModel`): a TorchScript
    model and a func module in ADDR (here a folder), and the answers they give in-process."""
    import torch

    folder = ADDR
    model = torch_model()
    torch.jit.save(torch.jit.script(model), os.path.join(folder, "model.pt"))
    with open(os.path.join(folder, "funcs.py"), "w") as f:
        f.write(TORCH_FUNCS)
    sys.path.insert(0, folder)
    import funcs

    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump({"input": QUERY.tolist(), "output": funcs.predict(model, list(QUERY))}, f)


def keras_yaml_files():
    """A Keras model file in ADDR served with no func (the model's `predict_on_batch`), and
    its answers in-process."""
    folder = ADDR
    model = keras_model()
    model.save(os.path.join(folder, "model.keras"))
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump({"input": QUERY.tolist(), "output": np.asarray(model.predict_on_batch(QUERY)).tolist()}, f)


# --- PySpark -----------------------------------------------------------------------------------


def spark_func(spark, model, inputs):
    """Clipper's PySpark contract: a SparkSession, the model, a list of inputs. Fails on a
    first feature over 1e6 (the failing-function case, without a second JVM)."""
    from pyspark.ml.linalg import Vectors

    if any(float(x[0]) > 1e6 for x in inputs):
        raise ZeroDivisionError("spark says no")

    df = spark.createDataFrame([(i, Vectors.dense([float(v) for v in x])) for i, x in enumerate(inputs)], ["i", "features"])
    rows = model.transform(df).orderBy("i").select("probability").collect()
    return [float(r.probability[1]) for r in rows]


def get(path):
    try:
        with urllib.request.urlopen(URL + path, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def spark_live():
    import time

    from pyspark.ml import Pipeline, Transformer
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]").appName("frameworks-check")
        .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    train = spark.createDataFrame([(Vectors.dense(x.tolist()), float(y)) for x, y in zip(X, Y)], ["features", "label"])
    model = Pipeline(stages=[LogisticRegression(maxIter=20)]).fit(train)
    expected = spark_func(spark, model, list(QUERY))

    # An unsaveable model (a Python stage Spark cannot write): refused before anything is sent.
    class Doubler(Transformer):
        def _transform(self, df):
            return df

    before = names()
    try:
        servegraph.deploy_pyspark_model(URL, "spark-unsaveable", 1, "floats", spark_func, Pipeline(stages=[Doubler()]).fit(train), spark.sparkContext, token=TOKEN, python=PY)
    except ValueError as e:
        assert "spark-unsaveable" in str(e) and "cannot be saved" in str(e), e
    else:
        raise AssertionError("an unsaveable Spark model was deployed")
    try:
        servegraph.deploy_pyspark_model(URL, "spark-not-a-model", 1, "floats", spark_func, {"a": 1}, spark.sparkContext, token=TOKEN, python=PY)
    except TypeError as e:
        assert "Spark ML or MLlib model" in str(e), e
    else:
        raise AssertionError("a dict was deployed as a Spark model")
    assert names() == before, (before, names())

    # load_mode async (the default): the deploy returns while the worker's JVM starts, and
    # readiness names the model as loading until it has.
    servegraph.deploy_pyspark_model(URL, "spark-lr", 1, "floats", spark_func, model, spark.sparkContext, token=TOKEN, python=PY, threads=1)
    seen_loading = False
    for _ in range(600):
        status, text = get("/v2/health/ready")
        if status == 200:
            break
        assert "spark-lr" in text and "loading" in text, text
        seen_loading = True
        time.sleep(0.25)
    else:
        raise AssertionError("spark-lr did not load: " + text)
    assert seen_loading, "readiness never said spark-lr was loading"
    expect_same("spark-lr", QUERY, expected)

    status, text = infer("spark-lr", np.full((2, 4), 1e7, dtype=np.float32))
    assert status == 500 and "spark-lr" in text and "ZeroDivisionError: spark says no" in text, (status, text)
    spark.stop()


# --- MXNet (1.9.1, the last release, on Python 3.11) -------------------------------------------


def mxnet_func(model, inputs):
    import mxnet as mx

    return list(model(mx.nd.array(np.stack(inputs))).softmax().asnumpy())


def mxnet_live():
    import mxnet as mx
    from mxnet import autograd, gluon

    mx.random.seed(29)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(16, activation="relu"), gluon.nn.Dense(2))
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.05})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    x, y = mx.nd.array(X), mx.nd.array(Y)
    for _ in range(30):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(len(X))
    servegraph.deploy_mxnet_model(URL, "mxnet-mlp", 1, "floats", mxnet_func, net, [("data", (1, 4))], token=TOKEN, python=PY, threads=1, example=QUERY[:2].tolist())
    expect_same("mxnet-mlp", QUERY, np.stack(mxnet_func(net, list(QUERY))))

    def boom(model, inputs):
        raise IndexError("mxnet says no")

    servegraph.deploy_mxnet_model(URL, "mxnet-broken", 1, "floats", boom, net, [("data", (1, 4))], token=TOKEN, python=PY, threads=1)
    expect_failure("mxnet-broken", "IndexError: mxnet says no")
    before = names()
    # A plain Block (not hybridizable) cannot be exported; bad data shapes are refused too.
    plain = gluon.nn.Sequential()
    plain.add(gluon.nn.Dense(2))
    plain.initialize()
    # Clipper's own example deploys a symbolic Module: not served, and said so by name.
    data = mx.sym.Variable("data")
    module = mx.mod.Module(mx.sym.FullyConnected(data, num_hidden=2), data_names=["data"], label_names=None)
    for bad, shapes, want in [(plain, [("data", (1, 4))], "HybridBlock"), (net, [("data",)], "mxnet_data_shapes"), (module, [("data", (1, 4))], "mx.mod.Module")]:
        try:
            servegraph.deploy_mxnet_model(URL, "mxnet-refused", 1, "floats", mxnet_func, bad, shapes, token=TOKEN, python=PY)
        except (TypeError, ValueError) as e:
            assert want in str(e), e
        else:
            raise AssertionError("mxnet-refused was deployed")
    assert names() == before, (before, names())


CASES = {f.__name__: f for f in [torch_live, torch_errors, tf_live, tf_errors, torch_side, tf_side, torch_side_again, torch_yaml_files, keras_yaml_files, spark_live, mxnet_live]}

if __name__ == "__main__":
    CASES[CASE]()
    print("ok " + CASE)
