"""Deploys the benchmark's framework models and measures them in-process (scripts/bench-frameworks.sh).

    bench_frameworks.py torch|tf HOST:PORT TOKEN ROOT OUT_DIR

Trains the small model of tests/python/frameworks_check.py (4 features, 2 classes), deploys it
with Clipper's deployer three ways (`<fw>`: no batching; `<fw>-batch`: batch_size=32; torch
only: `torch-onnx`, onnx=True with batch_size=32), writes the one-row OIP body to
OUT_DIR/body.json, and prints the in-process figures: `func(model, [row])` p50 and CPU per
call over 2000 calls (the physical limit of the c=1 figure), and rows/s of
`func(model, 32 rows)` (the limit of the batched one).
"""

import json
import os
import sys
import time

import numpy as np

FW, ADDR, TOKEN, ROOT, OUT = sys.argv[1:6]
sys.path.insert(0, os.path.join(ROOT, "python"))
import servegraph  # noqa: E402

URL = "http://" + ADDR
RNG = np.random.default_rng(29)
X = RNG.normal(size=(300, 4)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(np.int64)


def torch_setup():
    import torch

    torch.manual_seed(29)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(model(torch.from_numpy(X)) + 1e-9), torch.from_numpy(Y)).backward()
        opt.step()
    model.eval()

    def func(model, inputs):
        with torch.no_grad():
            return [row.numpy() for row in model(torch.from_numpy(np.stack(inputs)))]

    kw = dict(token=TOKEN, python=sys.executable, threads=1)
    servegraph.deploy_pytorch_model(URL, "torch", 1, "floats", func, model, **kw)
    servegraph.deploy_pytorch_model(URL, "torch-batch", 1, "floats", func, model, batch_size=32, **kw)
    servegraph.deploy_pytorch_model(URL, "torch-onnx", 1, "floats", func, model, token=TOKEN, onnx=True, batch_size=32, example=X[:2].tolist())
    # The in-process reference runs what the worker runs: the TorchScript module.
    return func, torch.jit.script(model)


def tf_setup():
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(29)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, Y, epochs=5, batch_size=32, verbose=0)

    def func(model, inputs):
        return list(model.predict_on_batch(np.stack(inputs)))

    kw = dict(token=TOKEN, python=sys.executable, threads=1)
    servegraph.deploy_tensorflow_model(URL, "tf", 1, "floats", func, model, **kw)
    servegraph.deploy_tensorflow_model(URL, "tf-batch", 1, "floats", func, model, batch_size=32, **kw)
    return func, model


def measure(func, model, rows, calls):
    for _ in range(50):
        func(model, rows)
    lat = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        func(model, rows)
        lat.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return float(np.percentile(lat, 50)) * 1e6, cpu / calls * 1e6, calls * len(rows) / wall


func, model = {"torch": torch_setup, "tf": tf_setup}[FW]()
row = [X[0]]
p50, cpu, _ = measure(func, model, row, 2000)
_, cpu32, rows_s = measure(func, model, list(X[:32]), 300)
with open(os.path.join(OUT, "body.json"), "w") as f:
    json.dump({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": X[0].tolist()}]}, f)
print("in-process %s: func(model, [row]) p50 %.1f us, CPU %.1f us/call; func(model, 32 rows) %.0f rows/s (CPU %.1f us/call)" % (FW, p50, cpu, rows_s, cpu32))
