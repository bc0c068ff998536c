"""Clipper's query API (issue 23): apps deployed from a real Python session with
servegraph's Clipper-style deployers (`create_endpoint`, `deploy_python_closure`), and a query
sent as Clipper's README sends it (`requests.post(..., headers=..., data=json.dumps(...))`).
`tests/clipper.rs` sends the rest of the queries as raw HTTP.

    clipper_check.py CASE HOST:PORT TOKEN ROOT

Prints `ok CASE` when every assertion held.
"""

import json
import os
import sys
import time

import numpy as np
import requests

CASE, ADDR, TOKEN, ROOT = sys.argv[1:5]
sys.path.insert(0, os.path.join(ROOT, "python"))
import servegraph  # noqa: E402

URL = "http://" + ADDR
HEADERS = {"Content-type": "application/json"}


def feature_sum(xs):
    # Clipper's README model: a string per input.
    return [str(sum(x)) for x in xs]


def closures():
    """A strings closure without an app of its own (deploy_python_closure), Clipper's
    README app (create_endpoint), and a bytes app."""
    suffix = "!"
    servegraph.deploy_python_closure(URL, "shout", 1, "strings", lambda xs: [s.upper() + suffix for s in xs], token=TOKEN)
    servegraph.create_endpoint(URL, "hello-world", "doubles", feature_sum, default_output="-1.0", slo_micros=10000000, token=TOKEN)
    servegraph.create_endpoint(URL, "byte-len", "bytes", lambda xs: [len(x) for x in xs], token=TOKEN)
    # Clipper's README query, as its users send it.
    x = list(np.random.random(10))
    r = requests.post(URL + "/hello-world/predict", headers=HEADERS, data=json.dumps({"input": x})).json()
    assert set(r) == {"query_id", "output", "default"}, r
    assert r["default"] is False and isinstance(r["query_id"], int), r
    assert abs(r["output"] - sum(x)) < 1e-9, (r, sum(x))


def boom(xs):
    raise ValueError("no prediction today")


def slow(xs):
    time.sleep(2)
    return [0.0 for _ in xs]


def failing():
    """Failing models: with no app settings (an error), with a default output, and two
    slower than their SLO, with Clipper's default output ("None") and with none."""
    servegraph.deploy_python_closure(URL, "broken", 1, "doubles", boom, token=TOKEN)
    servegraph.create_endpoint(URL, "broken-default", "doubles", boom, default_output="-1.0", token=TOKEN)
    servegraph.create_endpoint(URL, "slow", "doubles", slow, slo_micros=300000, token=TOKEN)
    servegraph.deploy_python_closure(URL, "slow-error", 1, "doubles", slow, slo_micros=300000, token=TOKEN)
    # A bad setting is refused by the client before anything is sent.
    try:
        servegraph.create_endpoint(URL, "never", "doubles", slow, slo_micros=0, token=TOKEN)
    except ValueError as e:
        assert "slo_micros" in str(e), e
    else:
        raise AssertionError("slo_micros=0 was not refused")


CASES = {f.__name__: f for f in [closures, failing]}

if __name__ == "__main__":
    CASES[CASE]()
    print("ok " + CASE)
