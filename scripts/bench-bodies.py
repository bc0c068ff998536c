#!/usr/bin/env python3
"""Writes the request bodies scripts/bench-grpc.sh sends, into DIR:

  iris.grpc         ModelInferRequest for the `iris` router, one row [1, 4] FP32, raw
                    contents, as a gRPC frame (1-byte flag, 4-byte big-endian length)
  iris.json         the same request as OIP JSON
  iris.bin          the same with the binary extension (JSON header, then 16 raw bytes),
                    outputs asked binary; its JSON length goes in iris.bin.len
  echo.grpc / echo.json / echo.bin(.len)
                    one FP32 tensor of 262,144 elements (1 MiB) for `echo`
                    (tests/graphs/echo.yaml), answered the same way it is sent

Uses tritonclient's generated protobuf messages (the test virtualenv has them).
Usage: bench-bodies.py DIR
"""
import json
import os
import struct
import sys

import numpy as np
from tritonclient.grpc import service_pb2


def grpc_frame(model, name, array):
    req = service_pb2.ModelInferRequest(model_name=model, id="bench")
    t = req.inputs.add()
    t.name, t.datatype = name, "FP32"
    t.shape.extend(array.shape)
    req.raw_input_contents.append(array.astype("<f4").tobytes())
    payload = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def write(out, stem, model, name, array):
    with open(os.path.join(out, f"{stem}.grpc"), "wb") as f:
        f.write(grpc_frame(model, name, array))
    body = {"inputs": [{"name": name, "shape": list(array.shape), "datatype": "FP32", "data": array.reshape(-1).tolist()}]}
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(body, f, separators=(",", ":"))
    raw = array.astype("<f4").tobytes()
    header = {
        "inputs": [{"name": name, "shape": list(array.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    with open(os.path.join(out, f"{stem}.bin"), "wb") as f:
        f.write(head + raw)
    with open(os.path.join(out, f"{stem}.bin.len"), "w") as f:
        f.write(str(len(head)))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write(out, "iris", "iris", "input", np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    # Values with short exact decimal forms (k/8), as JSON writes them.
    echo = ((np.arange(262144) % 1000) / 8).astype(np.float32).reshape(1, -1)
    write(out, "echo", "echo", "x", echo)


if __name__ == "__main__":
    main()
