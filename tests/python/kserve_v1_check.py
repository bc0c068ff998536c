"""KServe's v1 protocol driven by the `kserve` SDK's own `InferenceRESTClient`
(`RESTConfig(protocol="v1")`): readiness, `:predict` and `:explain` on an ONNX model.

Usage: kserve_v1_check.py CASE HOST:PORT models/iris_expected.json

Prints `ok CASE` and exits 0, or fails with an assertion naming what was wrong.
"""
import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, RESTConfig


def client(case, url, expected):
    rows = expected["rows"]

    async def run():
        rest = InferenceRESTClient(RESTConfig(protocol="v1"))
        base = f"http://{url}"
        try:
            assert await rest.is_model_ready(base, "iris-lr") is True
            try:
                await rest.is_model_ready(base, "nope")
                raise AssertionError("an unknown model was ready")
            except httpx.HTTPStatusError as e:
                assert e.response.status_code == 404, e.response.status_code
                assert e.response.json()["error"].startswith(
                    "Model with name nope does not exist."), e.response.text
            res = await rest.infer(base, {"instances": rows}, model_name="iris-lr")
            preds = res["predictions"]
            assert [p["label"] for p in preds] == expected["iris-lr"]["label"], preds
            assert np.allclose([p["probabilities"] for p in preds],
                               expected["iris-lr"]["probabilities"], atol=1e-4)
            explained = await rest.explain(base, "iris-lr", {"instances": rows[:1]})
            assert np.array(explained["explanations"]).shape == (1, 4), explained
        finally:
            await rest.close()

    asyncio.run(run())


if __name__ == "__main__":
    case, url, expected_path = sys.argv[1:4]
    with open(expected_path) as f:
        expected = json.load(f)
    {"client": client}[case](case, url, expected)
    print(f"ok {case}")
