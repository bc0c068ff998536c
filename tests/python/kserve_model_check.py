"""KServe model classes (tests/python/kserve/models.py) served by servegraph, driven with the
`kserve` SDK's own `InferenceRESTClient`, v1 (`/v1/models/m:predict`, `:explain`) and v2
(`/v2/models/m/infer`, JSON and binary), as a KServe user's client code calls KServe.

Usage: kserve_model_check.py CASE HOST:PORT

Prints `ok CASE` and exits 0, or fails with an assertion naming what was wrong.
"""
import asyncio
import base64
import sys

import numpy as np
from kserve import InferInput, InferRequest, InferenceRESTClient, RESTConfig

WEIGHTS = np.arange(20, dtype=np.float32).reshape(4, 5) / 10


def top3(x):
    out = np.asarray(x, dtype=np.float32).reshape(1, -1) @ WEIGHTS
    return (-np.sort(-out, axis=1)[:, :3]).reshape(-1)


def clients():
    return (
        InferenceRESTClient(RESTConfig(protocol="v1")),
        InferenceRESTClient(RESTConfig(protocol="v2")),
    )


async def topk(base):
    """KServe's custom model shape: v1 data and base64 images, v2 FP32 and BYTES."""
    v1, v2 = clients()
    try:
        x = [1.0, 2.0, 3.0, 4.0]
        res = await v1.infer(base, {"instances": [{"data": x}]}, model_name="topk")
        assert np.allclose(res["predictions"], top3(x)), res
        image = bytes([5, 6, 7, 8, 9])
        b64 = base64.b64encode(image).decode()
        res = await v1.infer(base, {"instances": [{"image": {"b64": b64}}]}, model_name="topk")
        assert np.allclose(res["predictions"], top3(list(image[:4]))), res
        request = InferRequest(
            model_name="topk",
            infer_inputs=[InferInput(name="input-0", shape=[1, 4], datatype="FP32", data=x)],
        )
        res = await v2.infer(base, request, model_name="topk")
        assert res.outputs[0].name == "output-0", res
        assert np.allclose(res.outputs[0].as_numpy(), top3(x).reshape(1, 3)), res
        request = InferRequest(
            model_name="topk",
            infer_inputs=[InferInput(name="input-0", shape=[1], datatype="BYTES", data=[b64])],
        )
        res = await v2.infer(base, request, model_name="topk")
        assert np.allclose(res.outputs[0].as_numpy(), top3(list(image[:4])).reshape(1, 3)), res
    finally:
        await v1.close()
        await v2.close()


async def dummy(base):
    """KServe's own DummyModel: async predict and explain; v2 parameters echoed."""
    v1, v2 = clients()
    try:
        res = await v1.infer(base, {"instances": [[1, 2]]}, model_name="dummy")
        assert res == {"predictions": [[1, 2]]}, res
        res = await v1.infer(base, {"inputs": [[3, 4]]}, model_name="dummy")
        assert res == {"predictions": [[3, 4]]}, res
        res = await v1.explain(base, "dummy", {"instances": [[5, 6]]})
        assert res == {"predictions": [[5, 6]]}, res
        parameters = {"test-str": "dummy", "test-bool": True, "test-int": 100, "test-float": 1.3}
        own = {"unit": "cm"}
        request = InferRequest(
            model_name="dummy",
            request_id="123",
            infer_inputs=[
                InferInput(
                    name="input-0", shape=[2, 2], datatype="INT32", data=[1, 2, 3, 4],
                    parameters=dict(own),
                )
            ],
            parameters=dict(parameters),
        )
        res = await v2.infer(base, request, model_name="dummy")
        assert res.id == "123", res
        assert res.outputs[0].name == "output-0", res
        assert res.outputs[0].datatype == "INT32", res
        assert res.outputs[0].as_numpy().tolist() == [[1, 2], [3, 4]], res
        # The request's parameters echoed, the response's and the output's (servegraph adds
        # the route a router took).
        assert {k: v for k, v in res.parameters.items() if k != "route"} == parameters, res.parameters
        assert res.outputs[0].parameters == own, res.outputs[0].parameters
        # Binary data both ways (the SDK's `set_data_from_numpy`, binary_data_output).
        infer_input = InferInput(name="input-0", shape=[3], datatype="FP32")
        infer_input.set_data_from_numpy(np.array([1.5, 2.5, 3.5], dtype=np.float32), binary_data=True)
        request = InferRequest(
            model_name="dummy", infer_inputs=[infer_input], parameters={"binary_data_output": True}
        )
        res = await v2.infer(base, request, model_name="dummy")
        assert res.outputs[0].as_numpy().tolist() == [1.5, 2.5, 3.5], res
    finally:
        await v1.close()
        await v2.close()


async def outputs(base):
    """An InferResponse of two outputs (FP32 and BYTES), JSON and binary, with parameters."""
    v1, v2 = clients()
    try:
        for binary in (False, True):
            request = InferRequest(
                model_name="outputs",
                infer_inputs=[InferInput(name="x", shape=[1, 3], datatype="FP32", data=[1.0, 2.5, 3.0])],
                parameters={"binary_data_output": True} if binary else None,
            )
            res = await v2.infer(base, request, model_name="outputs")
            by_name = {o.name: o for o in res.outputs}
            assert sorted(by_name) == ["labels", "scores"], res
            assert by_name["scores"].as_numpy().tolist() == [[2.0, 5.0, 6.0]], res
            labels = [v.decode() if isinstance(v, bytes) else v for v in by_name["labels"].as_numpy().tolist()]
            assert labels == ["small", "big", "big"], res
            assert res.parameters["answered_by"] == "outputs", res.parameters
        # On v1, an InferResponse is answered as its REST dict (KServe's dataplane).
        res = await v1.infer(base, {"instances": [[1.0, 3.0]]}, model_name="outputs")
        assert res["model_name"] == "outputs" and res["id"] == "v1", res
        assert [o["name"] for o in res["outputs"]] == ["scores", "labels"], res
        assert res["outputs"][0]["data"] == [2.0, 6.0], res
        assert res["outputs"][1]["data"] == ["small", "big"], res
        assert res["parameters"] == {"answered_by": "outputs"}, res
    finally:
        await v1.close()
        await v2.close()


async def sklearn(base):
    """KServe's SKLearnModel shape on a scikit-learn pickle (or NumPy weights): v1 and v2."""
    v1, v2 = clients()
    try:
        rows = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
        res = await v1.infer(base, {"instances": rows}, model_name="file")
        preds = res["predictions"]
        assert len(preds) == 2, res
        request = InferRequest(
            model_name="file",
            infer_inputs=[InferInput(name="input-0", shape=[2, 4], datatype="FP64", data=sum(rows, []))],
        )
        res2 = await v2.infer(base, request, model_name="file")
        assert res2.outputs[0].name == "output-0", res2
        assert np.allclose(res2.outputs[0].as_numpy(), np.asarray(preds)), (res2, preds)
        print("predictions", preds)
    finally:
        await v1.close()
        await v2.close()


async def topk_grpc(base):
    """The custom model over gRPC, with KServe's InferenceGRPCClient: the class is handed
    `from_grpc` and the image's raw bytes, as KServe's gRPC server hands them."""
    from kserve import InferenceGRPCClient

    client = InferenceGRPCClient(base.removeprefix("http://"))
    try:
        x = [1.0, 2.0, 3.0, 4.0]
        request = InferRequest(
            model_name="topk",
            infer_inputs=[InferInput(name="input-0", shape=[1, 4], datatype="FP32", data=x)],
        )
        res = await client.infer(request)
        assert np.allclose(res.outputs[0].as_numpy(), top3(x).reshape(1, 3)), res
        image = bytes([5, 6, 7, 8, 255])
        request = InferRequest(
            model_name="topk",
            infer_inputs=[InferInput(name="input-0", shape=[1], datatype="BYTES", data=[image])],
        )
        res = await client.infer(request)
        assert np.allclose(res.outputs[0].as_numpy(), top3(list(image[:4])).reshape(1, 3)), res
    finally:
        await client.close()


CASES = {"topk-grpc": topk_grpc, "topk": topk, "dummy": dummy, "outputs": outputs, "sklearn": sklearn}

if __name__ == "__main__":
    case, url = sys.argv[1:3]
    asyncio.run(CASES[case](f"http://{url}"))
    print(f"ok {case}")
