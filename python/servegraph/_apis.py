"""The worker's side of user code: importing it, choosing the API it is written for, and
turning what it returns into tensors.

A new API is one module (`_api_<name>.py`, a class as `_adapter` describes) and its line in
`APIS`.
"""

import os
import sys

import numpy as np

from servegraph._api_kserve import KServe
from servegraph._api_mlrun import MLRun
from servegraph._api_mlserver import MLServer
from servegraph._api_seldon import Seldon
from servegraph._api_servegraph import Native
from servegraph._api_task import Task
from servegraph._frames import encode_tensor

# The APIs, in the order `api: auto` tries them: the first whose `detects` says yes serves the
# target. servegraph's own takes anything, so it stays last.
APIS = (MLRun, KServe, MLServer, Seldon, Task, Native)


def import_target(spec):
    import importlib
    import importlib.util

    for d in reversed(spec.get("python_path") or []):
        sys.path.insert(0, d)
    if not spec.get("path") and not spec.get("module"):
        return function_named(spec.get("function") or "")
    if spec.get("path"):
        path = spec["path"]
        sys.path.insert(0, os.path.dirname(path))
        name = "servegraph_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(spec["module"])
    attr = spec.get("class_name") or spec.get("function")
    if not hasattr(module, attr):
        import difflib

        what = "class" if spec.get("class_name") else "function"
        names = [n for n in dir(module) if not n.startswith("_")]
        near = difflib.get_close_matches(attr, names, n=1)
        hint = " (did you mean `%s`?)" % near[0] if near else ""
        raise AttributeError("module `%s` has no %s `%s`%s" % (module.__name__, what, attr, hint))
    return getattr(module, attr)


def function_named(handler):
    """An MLRun flow step's handler given without a file, as MLRun's `get_function` reads it:
    an expression of `event` in parentheses (`(event + 1)`), or `module.function`."""
    handler = handler.strip()
    if handler.startswith("("):
        if not handler.endswith(")"):
            raise ValueError('function expression must start with "(" and end with ")"')
        return eval("lambda event: " + handler[1:-1], {}, {})
    module, _, name = handler.rpartition(".")
    if not module:
        raise ValueError(
            "handler `%s` needs the step's `path` (or `module`): only `module.function` and "
            "`(expression)` handlers stand alone" % handler
        )
    import importlib

    return getattr(importlib.import_module(module), name)


def api_of(target, spec):
    """The adapter of the calling convention: the one `api:` names when given, else the first
    of `APIS` that detects it (MLRun's for a `V2ModelServer` subclass, KServe's for a
    `kserve.Model` subclass, MLServer's for an `MLModel` subclass, Seldon's when `predict`
    takes `X` or `feature_names`, else
    servegraph's)."""
    api = spec.get("api") or "auto"
    if spec.get("task"):
        # An MLRun flow step: a model server is a model, anything else a task.
        return MLRun if MLRun.detects(target, spec) else Task
    if api == "auto" and spec.get("role"):
        api = "seldon"  # a Seldon component type
    if api != "auto":
        return next((a for a in APIS if a.name == api), Native)
    return next(a for a in APIS if a.detects(target, spec))


def is_stream(result):
    """Whether `predict` answered with pieces to come (a generator, or any iterator that is
    not an array or a dict)."""
    return hasattr(result, "__next__") and not isinstance(result, (dict, np.ndarray, str, bytes))


def named(piece, declared):
    """A yielded piece as outputs by name: a dict, or the one declared output's value (or
    `output`'s)."""
    if isinstance(piece, dict):
        return piece
    return {declared[0] if declared else "output": piece}


def join_chunks(pieces):
    """A streamed answer's pieces as one answer, output by output in the order they first
    came: text (one string or bytes element a piece) joined into one element, anything else
    concatenated along the first axis."""
    names = []
    for piece in pieces:
        names.extend(n for n in piece if n not in names)
    joined = {}
    for name in names:
        parts = [piece[name] for piece in pieces if name in piece]
        arrays = [np.asarray(p) for p in parts]
        if all(a.dtype.kind in "OSU" and a.size == 1 for a in arrays):
            items = [a.reshape(-1)[0] for a in arrays]
            if all(isinstance(i, str) for i in items):
                text = "".join(items)
            else:
                text = b"".join(i.encode("utf-8") if isinstance(i, str) else bytes(i) for i in items)
            joined[name] = np.array([text], dtype=object).reshape(arrays[0].shape)
        else:
            joined[name] = np.concatenate([a.reshape(1) if a.ndim == 0 else a for a in arrays])
    return joined


def outputs_of(result, declared):
    """The result of `predict` as named tensors: a dict by name, or one array for the one
    declared output (or `output` when none is declared)."""
    if isinstance(result, dict):
        items = list(result.items())
    else:
        if len(declared) > 1:
            raise TypeError(
                "predict returned one array, but %d outputs are declared (%s): return a dict"
                % (len(declared), ", ".join(declared))
            )
        items = [(declared[0] if declared else "output", result)]
    return [(str(name), encode_tensor(str(name), value)) for name, value in items]


# The types `jsonable` hands back as they are (exactly these: subclasses take the long way).
_PLAIN = frozenset((str, int, float, bool, type(None)))


def jsonable(value):
    """What a class answered with, as JSON can carry it: NumPy arrays as lists, NumPy scalars
    as numbers, bytes as text (UTF-8), tuples and sets as lists; anything else JSON cannot
    carry is a TypeError naming it."""
    # Plain dicts, lists and scalars first, without a call per scalar: a body's answer is
    # mostly these (the same result as the general case below, sooner).
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {
            k if type(k) is str else str(k): v if type(v) in _PLAIN else jsonable(v)
            for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("the answer holds bytes that are not UTF-8, which JSON cannot carry")
    raise TypeError("the answer holds a %s, which JSON cannot carry" % type(value).__name__)
