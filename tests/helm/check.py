"""Validates rendered Kubernetes manifests without a cluster (run by tests/helm.rs).

    check.py validate --kube 1.30.0 --kube 1.37.0 FILE...   every object of every file
    check.py json FILE                                        the objects as one JSON array
    check.py sources [KUBE]                                   which package checks which CRD kind

Built-in kinds are checked against Kubernetes' own JSON schemas (kubernetes-validate, the
strict ones: an unknown field is an error) at each --kube version. Kinds from CRDs are checked
with jsonschema against the schemas that registry packages generated from the upstream
definitions (PUBLISHED below: cloudcoil's models of KEDA's and prometheus-operator's release
CRDs, KServe's own SDK models); Kubernetes types inside them (a Container, a Probe) are
Kubernetes' strict schemas at that --kube version. An object schema that lists properties is
closed (an unknown field is an error, as `kubectl apply`'s strict field validation makes it).
An object whose apiVersion/kind has no schema in either place is an error, not a warning.
Prints one line per object and per error; exits 1 when any object fails.
"""

import ast
import functools
import importlib
import importlib.metadata
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv


# (apiVersion, kind) -> (how, distribution, module or None, class, upstream it was generated from)
PUBLISHED = {
    ("keda.sh/v1alpha1", "ScaledObject"): (
        "pydantic",
        "cloudcoil-models-keda",
        "cloudcoil.models.keda.v1alpha1",
        "ScaledObject",
        "KEDA v2.16.1 release CRDs (keda-2.16.1-crds.yaml)",
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "pydantic",
        "cloudcoil-models-prometheus-operator",
        "cloudcoil.models.prometheus_operator.v1",
        "ServiceMonitor",
        "prometheus-operator v0.80.1 release CRDs (bundle.yaml)",
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "pydantic",
        "cloudcoil-models-prometheus-operator",
        "cloudcoil.models.prometheus_operator.v1",
        "PrometheusRule",
        "prometheus-operator v0.80.1 release CRDs (bundle.yaml)",
    ),
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): (
        "openapi",
        "kserve",
        None,
        "V1alpha1ClusterServingRuntime",
        "KServe v0.21.0 OpenAPI models (the SDK's kserve/models)",
    ),
    ("serving.kserve.io/v1beta1", "InferenceService"): (
        "openapi",
        "kserve",
        None,
        "V1beta1InferenceService",
        "KServe v0.21.0 OpenAPI models (the SDK's kserve/models)",
    ),
}

K8S_DEFS = "https://kubernetes.io/api/_definitions.json"


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def close_objects(node):
    """Every object schema that lists properties refuses others (it had no additionalProperties);
    pydantic's `Optional` (anyOf [X, null]) becomes X: an optional field is left out, never null
    in a rendered manifest (and the error then names the field, not the anyOf around it)."""
    if isinstance(node, dict):
        branches = node.get("anyOf")
        if isinstance(branches, list):
            rest = [b for b in branches if b != {"type": "null"}]
            if len(rest) == 1 and len(rest) < len(branches):
                del node["anyOf"]
                node.update(rest[0])
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            close_objects(v)
    elif isinstance(node, list):
        for v in node:
            close_objects(v)
    return node


def pydantic_schema(module, cls):
    model = getattr(importlib.import_module(module), cls)
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return close_objects(schema)


class OpenApiModels:
    """The swagger-generated model classes of an SDK, read from source (never imported: the
    kserve package's __init__ pulls in its whole server)."""

    def __init__(self, dist):
        root = str(importlib.metadata.distribution(dist).locate_file(f"{dist}/models"))
        if not os.path.isdir(root):
            raise RuntimeError(f"{dist}: no models folder at {root}")
        self.models, self.unshipped = {}, set()
        for name in sorted(os.listdir(root)):
            if name.endswith(".py") and name != "__init__.py":
                self._read(os.path.join(root, name))
        if not self.models:
            raise RuntimeError(f"{dist}: no models in {root}")

    def _read(self, path):
        with open(path) as f:
            source = f.read()
        for node in ast.parse(source, path).body:
            if not isinstance(node, ast.ClassDef):
                continue
            fields, names, required = None, None, set()
            for item in node.body:
                if isinstance(item, ast.Assign) and len(item.targets) == 1:
                    target = getattr(item.targets[0], "id", None)
                    if target == "openapi_types":
                        fields = ast.literal_eval(item.value)
                    elif target == "attribute_map":
                        names = ast.literal_eval(item.value)
                elif isinstance(item, ast.FunctionDef) and any(
                    isinstance(d, ast.Attribute) and d.attr == "setter" for d in item.decorator_list
                ):
                    if any(
                        isinstance(c, ast.Constant)
                        and isinstance(c.value, str)
                        and "must not be `None`" in c.value
                        for c in ast.walk(item)
                    ):
                        required.add(item.name)
            if fields is None or names is None:
                continue
            if set(fields) != set(names):
                raise RuntimeError(f"{path}: {node.name}: openapi_types and attribute_map differ")
            self.models[node.name] = (fields, names, required)

    def schema(self, root, k8s_defs, kube):
        """A JSON schema for model `root`: its models under $defs, Kubernetes' types by $ref."""
        defs, todo = {}, [root]
        while todo:
            name = todo.pop()
            if name in defs:
                continue
            fields, names, required = self.models[name]
            defs[name] = {
                "type": "object",
                "properties": {
                    names[f]: self._type(t, (k8s_defs, kube), todo, f"{name}.{f}") for f, t in fields.items()
                },
                "required": sorted(names[f] for f in required),
                "additionalProperties": False,
            }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": f"#/$defs/{root}",
            "$defs": defs,
        }

    PRIMITIVES = {
        "str": {"type": "string"},
        "int": {"type": "integer"},
        "float": {"type": "number"},
        "bool": {"type": "boolean"},
        "datetime": {"type": "string"},
        "date": {"type": "string"},
        "object": {},
    }

    def _type(self, t, k8s, todo, where):
        if t.startswith("list[") and t.endswith("]"):
            return {"type": "array", "items": self._type(t[5:-1], k8s, todo, where)}
        if t.startswith("dict(str, ") and t.endswith(")"):
            return {"type": "object", "additionalProperties": self._type(t[10:-1], k8s, todo, where)}
        if t in self.PRIMITIVES:
            return dict(self.PRIMITIVES[t])
        if t in self.models:
            todo.append(t)
            return {"$ref": f"#/$defs/{t}"}
        k8s_defs, kube = k8s
        k8s = kubernetes_name(t, k8s_defs)
        if k8s is None:
            # A type the SDK names but does not ship (kserve 0.21.0: V1alpha1WorkerSpec), or a
            # Kubernetes type newer than `kube`. With no schema to check it by, a value there is
            # refused, naming why.
            why = f"{t} (at {where}) is neither a model of the SDK nor a Kubernetes {kube} type"
            self.unshipped.add(why)
            return {"not": {}, "description": why}
        return {"$ref": f"{K8S_DEFS}#/$defs/{k8s}"}


def kubernetes_name(t, k8s_defs):
    """The Kubernetes definition an SDK type names: V1Container, ResourceQuantity,
    K8sIoApiAppsV1DeploymentStrategy."""
    candidates = []
    if t == "ResourceQuantity":
        candidates.append("io.k8s.apimachinery.pkg.api.resource.Quantity")
    m = re.fullmatch(r"V1([A-Z]\w*)", t)
    if m:
        candidates += [f"io.k8s.api.core.v1.{m[1]}", f"io.k8s.apimachinery.pkg.apis.meta.v1.{m[1]}"]
    m = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+(?:(?:alpha|beta)\d+)?)([A-Z]\w*)", t)
    if m:
        candidates.append(f"io.k8s.api.{m[1].lower()}.{m[2].lower()}.{m[3]}")
    return next((c for c in candidates if c in k8s_defs), None)


def k8s_folder(kube):
    return f"kubernetes-json-schema/v{kv.major_minor(kube)}.0-local-strict"


@functools.cache
def k8s_registry(kube):
    """Kubernetes' strict definitions at `kube`, which the CRD schemas' $refs resolve against."""
    folder = k8s_folder(kube)
    container = kv.schema_contents(f"{folder}/container-v1.json", kube)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", kube)
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return referencing.Resource.from_contents(container) @ registry, definitions["$defs"]


_CACHE = {}


def published(obj, kube):
    """(validator, source) for a CRD kind that a package ships a schema for, else None."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in PUBLISHED:
        return None
    if (key, kube) not in _CACHE:
        how, dist, module, cls, upstream = PUBLISHED[key]
        registry, k8s_defs = k8s_registry(kube)
        if how == "pydantic":
            schema = pydantic_schema(module, cls)
        else:
            if ("openapi", dist) not in _CACHE:
                _CACHE[("openapi", dist)] = OpenApiModels(dist)
            schema = _CACHE[("openapi", dist)].schema(cls, k8s_defs, kube)
        version = importlib.metadata.version(dist)
        source = f"published schema: {dist} {version}, from {upstream}"
        _CACHE[(key, kube)] = (jsonschema.Draft202012Validator(schema, registry=registry), source)
    return _CACHE[(key, kube)]


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
                try:
                    crd = published(obj, kube)
                    if crd is not None:
                        validator, source = crd
                        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
                        if errors:
                            for e in errors:
                                at = "/".join(str(p) for p in e.absolute_path)
                                print(f"FAIL {what} ({source}): at /{at}: {e.message[:300]}")
                            failed += 1
                            continue
                        print(f"ok   {what} ({source}; Kubernetes types at {kv.major_minor(kube)})")
                    else:
                        kubernetes_validate.validate(obj, kube, strict=True)
                        print(f"ok   {what} (Kubernetes {kv.major_minor(kube)}, strict)")
                except kv.SchemaNotFoundError as e:
                    print(f"FAIL {what}: no schema for it (Kubernetes {kube} or a CRD package): {e}")
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
    if argv[:1] == ["sources"]:
        kube = argv[1] if len(argv) > 1 else "1.37.0"
        for (api, kind), (_, dist, _, cls, upstream) in sorted(PUBLISHED.items()):
            print(f"{api} {kind}: {dist} {importlib.metadata.version(dist)} ({cls}), from {upstream}")
            published({"apiVersion": api, "kind": kind}, kube)
        for models in (v for k, v in _CACHE.items() if k[0] == "openapi"):
            for why in sorted(models.unshipped):
                print(f"  refused, no schema: {why}")
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
