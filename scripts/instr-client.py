#!/usr/bin/env python3
"""A fixed number of requests for the instruction-count benchmark (scripts/bench-instructions.sh).

    scripts/instr-client.py HOST:PORT PATH REQUESTS CONNECTIONS
    scripts/instr-client.py --grpc HOST:PORT MODEL REQUESTS CONNECTIONS

POSTs the single-row iris OIP body REQUESTS times over CONNECTIONS keep-alive connections
(each sending its share one after another), and exits non-zero if any answer is not 200.
With --grpc, the same request as a ModelInfer call (FP32 raw contents, as Triton's clients
send it) over CONNECTIONS HTTP/2 connections, one call in flight on each; every answer must
have status OK and outputs. It needs grpcio and tritonclient's generated messages (the
test virtualenv). Under callgrind the server is ~50x slower than this client, so the client
never limits it.
"""

import http.client
import sys
import threading

BODY = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'


def grpc_main(argv):
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2

    target, model, requests, connections = argv[0], argv[1], int(argv[2]), int(argv[3])
    req = service_pb2.ModelInferRequest(model_name=model)
    t = req.inputs.add()
    t.name, t.datatype = "input", "FP32"
    t.shape.extend([1, 4])
    req.raw_input_contents.append(np.array([5.1, 3.5, 1.4, 0.2], dtype="<f4").tobytes())
    payload = req.SerializeToString()
    failures = []

    def send(count):
        # A channel of its own: its own connection (no subchannel shared between channels).
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            for _ in range(count):
                try:
                    answer = service_pb2.ModelInferResponse.FromString(call(payload, timeout=120))
                    if not answer.outputs:
                        failures.append("no outputs")
                except grpc.RpcError as e:
                    failures.append(f"{e.code()} {e.details()}")

    run(send, requests, connections)
    if failures:
        sys.exit(f"instr-client: {len(failures)} of {requests} calls failed, first: {failures[0]}")


def run(send, requests, connections):
    shares = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=send, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    if sys.argv[1] == "--grpc":
        return grpc_main(sys.argv[2:])
    host, port = sys.argv[1].rsplit(":", 1)
    path, requests, connections = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    failures = []

    def send(count):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        for _ in range(count):
            conn.request("POST", path, BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                failures.append(f"{response.status} {body[:200]!r}")
        conn.close()

    run(send, requests, connections)
    if failures:
        sys.exit(f"instr-client: {len(failures)} of {requests} answers were not 200, first: {failures[0]}")


if __name__ == "__main__":
    main()
