#!/usr/bin/env python3
"""Checks `servegraph schema` with a standard JSON Schema validator.

Usage: schema_check.py SCHEMA.json GRAPH.yaml...

Every graph given must validate; a set of typical mistakes must not. Prints one line per
check; exits non-zero on the first failure.
"""
import json
import sys

import jsonschema
import yaml


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sys.argv[2:]:
        with open(path) as f:
            doc = yaml.safe_load(f)
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, f"{path}: {errors[0].message}"
        print(f"ok {path} validates")

    flow = lambda steps: {"name": "g", "graph": {"kind": "flow", "steps": steps}}
    bad = {
        "unknown top-level field": {"name": "g", "graph": {"kind": "flow", "steps": {}}, "grpah": 1},
        "unknown kind": flow({"a": {"kind": "modle"}}),
        "unknown op": flow({"a": {"kind": "transform", "op": "standardise"}}),
        "op args missing": flow({"a": {"kind": "transform", "op": "label_map"}}),
        "unknown router field": {"name": "g", "graph": {"kind": "router", "polcy": {}, "routes": {}}},
        "after inside routes": {"name": "g", "graph": {"kind": "router", "routes": {
            "a": {"kind": "transform", "op": "noop", "after": "b"}}}},
        "bad datatype": flow({"a": {"kind": "transform", "op": "cast", "args": {"to": "FP33"}}}),
        "bad combine": flow({"e": {"kind": "ensemble", "combine": "avg", "routes": {}}}),
    }
    for what, doc in bad.items():
        assert not validator.is_valid(doc), f"{what}: accepted"
        print(f"ok refused: {what}")
    print("all schema checks passed")


if __name__ == "__main__":
    main()
