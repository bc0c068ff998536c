"""Drives a servegraph server with Seldon Core's own client (`seldon_core.seldon_client.
SeldonClient`, REST through the gateway's path `/seldon/{namespace}/{deployment}/api/v1.0/...`)
and prints what it got back as JSON, for tests/seldon.rs. Usage: seldon_client_check.py ADDR."""

import json
import sys

import numpy as np
from google.protobuf import json_format
from seldon_core.seldon_client import SeldonClient

addr = sys.argv[1]


def client(deployment, **kwargs):
    return SeldonClient(
        gateway="ambassador",
        transport="rest",
        namespace="default",
        deployment_name=deployment,
        gateway_endpoint=addr,
        client_return_type="proto",
        **kwargs
    )


def message(m):
    return json_format.MessageToDict(m) if m is not None else None


out = {}
doubler = client("doubler")
r = doubler.predict(data=np.array([[1.0, 2.0]]), payload_type="ndarray", names=["a", "b"])
out["ndarray"] = {"success": r.success, "msg": r.msg, "response": message(r.response)}
r = doubler.predict(data=np.array([[1.0, 2.0]]), payload_type="tensor")
out["tensor"] = {"success": r.success, "msg": r.msg, "response": message(r.response)}
kinds = client("kinds")
r = kinds.predict(str_data="hello")
out["str"] = {"success": r.success, "msg": r.msg, "response": message(r.response)}
r = kinds.predict(json_data={"b": 1, "a": 2})
out["json"] = {"success": r.success, "msg": r.msg, "response": message(r.response)}
learner = client("learner")
r = learner.predict(data=np.array([[1.5]]), payload_type="ndarray")
f = learner.feedback(prediction_request=r.request, prediction_response=r.response, reward=2.0)
out["feedback"] = {"success": f.success, "msg": f.msg}
r = learner.predict(data=np.array([[1.5]]), payload_type="ndarray")
out["after_feedback"] = {"success": r.success, "response": message(r.response)}
print(json.dumps(out))
