"""Drives a servegraph server as a Seldon component microservice, with Seldon Core's own
client (`SeldonClient.microservice` and `microservice_feedback`, which post the message as a
form's `json` field to `/predict`, `/send-feedback`, `/route` ...), and prints what it got back
as JSON, for tests/seldon.rs. Usage: seldon_microservice_check.py ADDR."""

import json
import sys

import numpy as np
from google.protobuf import json_format
from seldon_core.seldon_client import SeldonClient

sc = SeldonClient(microservice_endpoint=sys.argv[1], transport="rest")


def message(m):
    return json_format.MessageToDict(m) if m is not None else None


out = {}
r = sc.microservice(method="predict", data=np.array([[1.5]]), payload_type="ndarray")
out["predict"] = {"success": r.success, "msg": r.msg, "response": message(r.response)}
f = sc.microservice_feedback(
    prediction_request=r.request, prediction_response=r.response, reward=3.0, method="send-feedback"
)
out["feedback"] = {"success": f.success, "msg": f.msg}
r = sc.microservice(method="predict", data=np.array([[1.5]]), payload_type="ndarray")
out["after_feedback"] = {"success": r.success, "response": message(r.response)}
r = sc.microservice(method="route", data=np.array([[1.5]]), payload_type="ndarray")
out["route"] = {"success": r.success, "msg": r.msg}
print(json.dumps(out))
