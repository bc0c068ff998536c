"""Validates rendered Kubernetes manifests without a cluster (run by tests/helm.rs).

    check.py validate --kube 1.30.0 --kube 1.37.0 FILE...   every object of every file
    check.py json FILE                                        the objects as one JSON array

Built-in kinds are checked against Kubernetes' own JSON schemas (kubernetes-validate, the
strict ones: an unknown field is an error) at each --kube version. Kinds from CRDs (KEDA,
prometheus-operator, KServe) are checked with jsonschema against tests/helm/crds/. An object
whose apiVersion/kind has no schema in either place is an error, not a warning. Prints one
line per object and per error; exits 1 when any object fails.
"""

import json
import os
import sys

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def crd_schema(obj):
    group_version = obj.get("apiVersion", "")
    group, _, version = group_version.rpartition("/")
    name = f"{obj.get('kind', '').lower()}-{group}-{version}.json"
    path = os.path.join(HERE, "crds", name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def crd_validator(schema, kube):
    """A validator whose `container-v1.json` reference is Kubernetes' strict Container."""
    folder = f"kubernetes-json-schema/v{kv.major_minor(kube)}.0-local-strict"
    container = kv.schema_contents(f"{folder}/container-v1.json", kube)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", kube)
    # Both carry their $id (https://kubernetes.io/api/...), which their $refs resolve against.
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    registry = referencing.Resource.from_contents(container) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(paths, kubes):
    failed = 0
    for path in paths:
        for obj in load(path):
            if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
                print(f"FAIL {path}: a document that is not a Kubernetes object: {str(obj)[:80]}")
                failed += 1
                continue
            what = f"{path}: {obj['apiVersion']} {obj['kind']} {obj.get('metadata', {}).get('name')}"
            for kube in kubes:
                schema = crd_schema(obj)
                try:
                    if schema is not None:
                        errors = sorted(
                            crd_validator(schema, kube).iter_errors(obj), key=lambda e: list(e.path)
                        )
                        if errors:
                            for e in errors:
                                at = "/".join(str(p) for p in e.absolute_path)
                                print(f"FAIL {what} (CRD schema): at /{at}: {e.message}")
                            failed += 1
                            continue
                        print(f"ok   {what} (CRD schema, containers at {kv.major_minor(kube)})")
                    else:
                        kubernetes_validate.validate(obj, kube, strict=True)
                        print(f"ok   {what} (Kubernetes {kv.major_minor(kube)}, strict)")
                except kv.SchemaNotFoundError as e:
                    print(f"FAIL {what}: no schema for it (Kubernetes {kube} or tests/helm/crds): {e}")
                    failed += 1
                except kv.ValidationError as e:
                    at = "/".join(str(p) for p in e.absolute_path)
                    print(f"FAIL {what} (Kubernetes {kv.major_minor(kube)}, strict): at /{at}: {e.message}")
                    failed += 1
    return failed


def main(argv):
    if len(argv) >= 2 and argv[0] == "json":
        json.dump(load(argv[1]), sys.stdout)
        return 0
    if not argv or argv[0] != "validate":
        print(__doc__, file=sys.stderr)
        return 2
    kubes, paths, args = [], [], argv[1:]
    while args:
        a = args.pop(0)
        if a == "--kube":
            kubes.append(args.pop(0))
        else:
            paths.append(a)
    if not kubes or not paths:
        print("validate needs --kube VERSION and at least one FILE", file=sys.stderr)
        return 2
    failed = validate(paths, kubes)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
