#!/usr/bin/env python3
"""Generate the small ONNX models servegraph's tests and examples use.

Run through `scripts/gen-models.sh`, which creates the pinned virtualenv. The output is
deterministic (fixed seeds) and committed, so nothing is generated at test time.

Writes into this folder:
  iris_lr.onnx, iris_rf.onnx            StandardScaler + estimator; raw iris features in.
  iris_lr_core.onnx, iris_rf_core.onnx  the same fitted estimators without the scaler; they
                                        expect standardized features (graphs/iris-ensemble.yaml
                                        standardizes in a `transform` step instead).
  cnn.onnx                              a small CNN with random weights (seeded): input `input`
                                        FP32 [N, 3, 64, 64] → `logits` FP32 [N, 5]; three
                                        stride-2 3×3 convolutions (8, 16, 32 channels) with
                                        ReLU, global average pooling and a dense layer. For the
                                        image pipeline and the batching benchmark.
  fixed_batch.onnx                      Identity on `x` FP32 [1, 4]: a model whose batch
                                        dimension is fixed, for the tests that must refuse
                                        to batch it.
  iris_lr.pkl, iris_rf.pkl              the StandardScaler + estimator pipelines, pickled (for
                                        graphs/python-mlrun.yaml's MLRun classes).
  iris_seldon/model.pkl                 the random-forest pipeline, pickled, in a folder (for
                                        graphs/python-seldon.yaml's PrimeHub Model class).
  iris_kserve_lr/model.pkl              the logistic-regression pipeline (iris_lr.pkl), alone
                                        in a folder (for graphs/python-mixed.yaml's KServe
                                        class, which loads its folder's one model file).
  iris_expected.json                    known rows with scikit-learn's own predictions, the
                                        scaler's mean/std, and the ensemble's expected vote.
All models: input `input` FP32 [-1, 4]; outputs `label` INT64 [-1] and `probabilities`
FP32 [-1, 3] (skl2onnx with zipmap off).
"""
import json
import os
import pickle

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = {"": 17, "ai.onnx.ml": 3}
ROWS = [0, 10, 25, 50, 60, 75, 100, 110, 125, 149]


def export(model, path):
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(model.steps[-1][1] if isinstance(model, Pipeline) else model): {"zipmap": False}},
        target_opset=OPSET,
    )
    # Deterministic bytes: skl2onnx names graphs with a random UUID.
    onx.graph.name = os.path.splitext(os.path.basename(path))[0]
    onx.producer_version = ""
    onx.doc_string = ""
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())


def fixed_batch(path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fixed_batch", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="servegraph")
    model.ir_version = 8
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def cnn(path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    nodes, inits = [], []
    prev, channels = "input", 3
    for i, out in enumerate([8, 16, 32]):
        w = (rng.randn(out, channels, 3, 3) * np.sqrt(2.0 / (channels * 9))).astype(np.float32)
        b = (rng.randn(out) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.w"), numpy_helper.from_array(b, f"conv{i}.b")]
        nodes.append(helper.make_node("Conv", [prev, f"conv{i}.w", f"conv{i}.b"], [f"c{i}"],
                                      kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, channels = f"r{i}", out
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    w = (rng.randn(channels, 5) * 0.5).astype(np.float32)
    b = (rng.randn(5) * 0.1).astype(np.float32)
    inits += [numpy_helper.from_array(w, "dense.w"), numpy_helper.from_array(b, "dense.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "dense.w", "dense.b"], ["logits"]))
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])
    graph = helper.make_graph(nodes, "cnn", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="servegraph")
    model.ir_version = 8
    onnx.checker.check_model(model)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"input": rng.randn(2, 3, 64, 64).astype(np.float32)})[0]
    assert out.shape == (2, 5), out.shape


def main():
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x).astype(np.float32)
    lr = LogisticRegression(max_iter=1000, random_state=0).fit(xs, y)
    rf = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(xs, y)

    export(Pipeline([("scale", scaler), ("lr", lr)]), os.path.join(HERE, "iris_lr.onnx"))
    export(Pipeline([("scale", scaler), ("rf", rf)]), os.path.join(HERE, "iris_rf.onnx"))
    export(lr, os.path.join(HERE, "iris_lr_core.onnx"))
    export(rf, os.path.join(HERE, "iris_rf_core.onnx"))
    fixed_batch(os.path.join(HERE, "fixed_batch.onnx"))
    os.makedirs(os.path.join(HERE, "iris_seldon"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "iris_kserve_lr"), exist_ok=True)
    pickled = [("iris_lr.pkl", lr), ("iris_rf.pkl", rf), ("iris_seldon/model.pkl", rf)]
    for name, est in pickled + [("iris_kserve_lr/model.pkl", lr)]:
        with open(os.path.join(HERE, name), "wb") as f:
            pickle.dump(Pipeline([("scale", scaler), ("model", est)]), f, protocol=4)
    cnn(os.path.join(HERE, "cnn.onnx"))

    rows = x[ROWS]
    rows_s = scaler.transform(rows).astype(np.float32)
    expected = {
        "rows": rows.tolist(),
        "mean": scaler.mean_.tolist(),
        "std": scaler.scale_.tolist(),
        "classes": ["setosa", "versicolor", "virginica"],
        "iris-lr": {"label": lr.predict(rows_s).tolist(), "probabilities": lr.predict_proba(rows_s).tolist()},
        "iris-rf": {"label": rf.predict(rows_s).tolist(), "probabilities": rf.predict_proba(rows_s).tolist()},
    }
    # Vote of two: a tie goes to the first route (iris-lr) — servegraph's documented rule.
    expected["iris-ensemble"] = {"label": expected["iris-lr"]["label"]}

    # Check ONNX Runtime agrees with scikit-learn on every row before anyone relies on it.
    for name, path, feed in [
        ("iris-lr", "iris_lr.onnx", rows),
        ("iris-rf", "iris_rf.onnx", rows),
        ("iris-lr", "iris_lr_core.onnx", rows_s),
        ("iris-rf", "iris_rf_core.onnx", rows_s),
    ]:
        sess = ort.InferenceSession(os.path.join(HERE, path), providers=["CPUExecutionProvider"])
        label, proba = sess.run(["label", "probabilities"], {"input": feed})
        assert label.tolist() == expected[name]["label"], (path, label, expected[name]["label"])
        assert np.allclose(proba, expected[name]["probabilities"], atol=1e-4), path

    with open(os.path.join(HERE, "iris_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print("wrote models to", HERE)


if __name__ == "__main__":
    main()
