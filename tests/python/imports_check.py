#!/usr/bin/env python3
"""Unit checks of the worker's stand-ins for `mlrun` and `seldon_core`
(`servegraph._imports`, `servegraph.compat`), run in a fresh interpreter per case (the test
venv, which has neither package).

Usage: imports_check.py CASE PYTHON_DIR

PYTHON_DIR is the repository's `python/` folder. Each case prints `ok CASE` and exits 0, or
fails with an assertion naming what was wrong.
"""
import importlib
import importlib.util
import io
import logging
import os
import sys
import tempfile


def refused(statement, exc_type, *words, scope=None):
    """Runs `statement`, which must raise `exc_type` with each of `words` in its message."""
    try:
        exec(statement, dict(scope or {}))
    except exc_type as exc:
        for w in words:
            assert w in str(exc), "%s: %r lacks %r" % (statement, str(exc), w)
        return exc
    raise AssertionError("%s raised nothing" % statement)


def cheap():
    """Installing the hook imports no stand-in, and importing what is missing still fails
    as before."""
    from servegraph import _imports

    _imports.install()
    _imports.install()
    assert sys.meta_path.count(_imports._ALIASES) == 1, sys.meta_path
    assert sys.meta_path[0] is _imports._ALIASES, "first: it asks the others itself"
    assert "servegraph.compat.mlrun" not in sys.modules
    assert "servegraph.compat.seldon" not in sys.modules
    try:
        import no_such_module_anywhere  # noqa: F401
    except ModuleNotFoundError as exc:
        assert exc.name == "no_such_module_anywhere", exc
    else:
        raise AssertionError("a missing module imported")


def mlrun_names():
    from servegraph import _imports

    _imports.install()
    import mlrun
    import mlrun.serving.v2_serving
    from mlrun.serving import V2ModelServer
    from servegraph.compat import mlrun as compat

    assert V2ModelServer is compat.V2ModelServer
    assert mlrun.serving.V2ModelServer is compat.V2ModelServer
    assert mlrun.serving.v2_serving.V2ModelServer is compat.V2ModelServer
    assert "stand-in" in repr(mlrun), repr(mlrun)
    assert mlrun.serving.__all__ == ["V2ModelServer", "GraphContext"]
    from mlrun.serving import GraphContext

    assert GraphContext is compat.GraphContext


def mlrun_refusals():
    from servegraph import _imports

    _imports.install()
    words = ("servegraph provides `mlrun.serving` (V2ModelServer, GraphContext)", "Install mlrun")
    exc = refused("import mlrun.frameworks.sklearn", ModuleNotFoundError, "`mlrun.frameworks`", *words)
    assert exc.name == "mlrun", exc.name
    refused("from mlrun import get_dataitem", ImportError, "`mlrun.get_dataitem`", *words)
    refused("import mlrun; mlrun.get_or_create_ctx", AttributeError, "`mlrun.get_or_create_ctx`", *words)
    refused("from mlrun.serving import GraphServer", ImportError, "`mlrun.serving.GraphServer`", *words)
    refused("import mlrun.serving; mlrun.serving.states", AttributeError, "`mlrun.serving.states`", *words)
    # Still refused the second time (nothing half-made was left in sys.modules).
    refused("import mlrun.frameworks", ModuleNotFoundError, "`mlrun.frameworks`")
    assert "mlrun.frameworks" not in sys.modules


def seldon_names():
    from servegraph import _imports

    _imports.install()
    import seldon_core
    import seldon_core.storage
    from seldon_core.flask_utils import SeldonMicroserviceException
    from seldon_core.metrics import COUNTER, GAUGE, TIMER, create_counter, create_gauge, create_timer, validate_metrics
    from seldon_core.user_model import SeldonComponent, SeldonNotImplementedError, SeldonResponse
    from servegraph.compat import seldon as compat

    assert SeldonComponent is compat.SeldonComponent and SeldonResponse is compat.SeldonResponse
    assert seldon_core.Storage is compat.Storage is seldon_core.storage.Storage
    assert (COUNTER, GAUGE, TIMER) == ("COUNTER", "GAUGE", "TIMER")
    assert create_counter("a", 1) == {"key": "a", "type": "COUNTER", "value": 1}
    assert create_gauge("b", 2.5) == {"key": "b", "type": "GAUGE", "value": 2.5}
    assert create_timer("c", 3) == {"key": "c", "type": "TIMER", "value": 3}
    try:
        create_counter("a", "one")
    except TypeError:
        pass
    else:
        raise AssertionError("a counter of a string")
    assert validate_metrics([create_counter("a", 1), create_timer("t", 2.0)])
    assert not validate_metrics(create_counter("a", 1)), "not a list"
    assert not validate_metrics([{"key": "a", "type": "HISTOGRAM", "value": 1}])
    assert not validate_metrics([{"key": "a", "type": "GAUGE"}])
    assert not validate_metrics([{"key": "a", "type": "GAUGE", "value": "x"}])
    # Raised from predict, the answer's status is the exception's.
    exc = SeldonMicroserviceException("bad rows", status_code=422)
    assert (exc.status, str(exc), exc.to_dict()["status"]["info"]) == (422, "bad rows", "bad rows")
    assert SeldonMicroserviceException("bad").status == 400
    assert SeldonNotImplementedError("nope").status == 400
    # `import seldon_core` reaches the submodules as attributes, as Seldon's does.
    assert seldon_core.user_model.SeldonComponent is SeldonComponent


def seldon_refusals():
    from servegraph import _imports

    _imports.install()
    words = ("`seldon_core.user_model` (SeldonComponent, SeldonResponse", "Install seldon-core")
    refused("import seldon_core.seldon_client", ModuleNotFoundError, "`seldon_core.seldon_client`", *words)
    refused("from seldon_core.seldon_client import SeldonClient", ImportError, "`seldon_core.seldon_client`")
    refused("from seldon_core.metrics import SeldonMetrics", ImportError, "`seldon_core.metrics.SeldonMetrics`")
    refused("import seldon_core; seldon_core.microservice", AttributeError, "`seldon_core.microservice`", *words)
    refused("import seldon_core; seldon_core.__version__", AttributeError, "`seldon_core.__version__`", *words)


def storage():
    from servegraph import _imports

    _imports.install()
    import seldon_core

    with tempfile.TemporaryDirectory() as d:
        folder = os.path.join(d, "model")
        os.mkdir(folder)
        with open(os.path.join(folder, "weights.bin"), "w") as f:
            f.write("w")
        # A local path (what servegraph hands the class as `model_uri`) is returned as is.
        assert seldon_core.Storage.download(folder) == folder
        assert seldon_core.Storage.download("file://" + folder) == folder
        # With out_dir, Seldon links the contents into it.
        out = os.path.join(d, "out")
        assert seldon_core.Storage.download(folder, out_dir=out) == out
        assert os.path.islink(os.path.join(out, "weights.bin"))
        with open(os.path.join(out, "weights.bin")) as f:
            assert f.read() == "w"
        refused(
            "import seldon_core; seldon_core.Storage.download(%r)" % os.path.join(d, "missing"),
            FileNotFoundError,
            "no such file or folder",
        )
    for uri in ("s3://bucket/model", "gs://bucket/model", "https://example.com/model.pkl"):
        refused(
            "import seldon_core; seldon_core.Storage.download(%r)" % uri,
            ValueError,
            uri,
            "servegraph fetches remote `model_uri`s itself",
            "the class receives the local path",
        )


def mlrun_context():
    from servegraph import _imports

    _imports.install()
    from mlrun.serving import V2ModelServer

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    os.environ["MODEL_TOKEN"] = "s3cret"

    class Model(V2ModelServer):
        def load(self):
            self.context.logger.info("loaded", rows=3, path="/m")
            self.context.logger.info_with("ready", scale=self.get_param("scale"))
            self.context.logger.warn("%d rows skipped", 2)
            self.context.logger.debug("not shown", at="debug")

    m = Model(name="m", scale=2)
    m.load()
    lines = stream.getvalue().splitlines()
    assert lines == ['loaded: {"path": "/m", "rows": 3}', 'ready: {"scale": 2}', "2 rows skipped"], lines
    assert m.get_param("scale") == 2 and m.context.get_param("scale") == 2
    assert m.get_param("missing", 7) == 7 and m.context.get_param("missing") is None
    assert m.context.get_secret("MODEL_TOKEN") == "s3cret"
    assert m.context.get_secret("NO_SUCH_SECRET") is None
    assert m.context.verbose is False
    refused(
        "m.context.push_error",
        AttributeError,
        "`push_error`",
        "`logger`, `get_param`, `get_secret`",
        scope={"m": m},
    )
    # A context given by the caller is kept (MLRun's own, in MLRun's tests).
    assert Model(context="theirs", name="m").context == "theirs"


def not_shadowed():
    """An installed package (here a fake one, first on sys.path) is the one imported; the
    stand-in answers only for the package that is missing."""
    from servegraph import _imports

    _imports.install()
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "seldon_core"))
        with open(os.path.join(d, "seldon_core", "__init__.py"), "w") as f:
            f.write("MARKER = 'installed'\n")
        with open(os.path.join(d, "seldon_core", "user_model.py"), "w") as f:
            f.write("class SeldonComponent:\n    pass\n")
        sys.path.insert(0, d)
        import seldon_core
        from seldon_core.user_model import SeldonComponent

        assert seldon_core.MARKER == "installed", seldon_core
        assert SeldonComponent.__module__ == "seldon_core.user_model"
        # The real package's missing modules are the real package's business: plain errors.
        try:
            import seldon_core.metrics  # noqa: F401
        except ModuleNotFoundError as exc:
            assert "stand-in" not in str(exc), exc
        else:
            raise AssertionError("seldon_core.metrics came from somewhere")
        import mlrun.serving

        assert "stand-in" in repr(mlrun), "mlrun is missing, so it is servegraph's"


def namespace_folder():
    """A folder named `mlrun` without `__init__.py` on sys.path (a namespace package, e.g. a
    project's folder beside the model file) is not the package: the stand-in answers."""
    from servegraph import _imports

    _imports.install()
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "mlrun", "configs"))
        sys.path.insert(0, d)
        from mlrun.serving import V2ModelServer
        from servegraph.compat import mlrun as compat

        assert V2ModelServer is compat.V2ModelServer


def other_finder():
    """Another finder (here one added after the hook) that finds the package wins over the
    stand-in."""
    import importlib.abc
    import importlib.machinery
    import types

    from servegraph import _imports

    _imports.install()

    class Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            module.MARKER = "theirs"

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "mlrun":
                return importlib.machinery.ModuleSpec(name, Loader())
            return None

    sys.meta_path.append(Finder())
    import mlrun

    assert getattr(mlrun, "MARKER", None) == "theirs", mlrun
    assert isinstance(mlrun, types.ModuleType)


CASES = {
    f.__name__: f
    for f in (
        cheap,
        namespace_folder,
        mlrun_names,
        mlrun_refusals,
        seldon_names,
        seldon_refusals,
        storage,
        mlrun_context,
        not_shadowed,
        other_finder,
    )
}


def main():
    case, python_dir = sys.argv[1], sys.argv[2]
    # Not this folder (it holds test folders such as `mlrun/`), but the runtime.
    sys.path[0] = python_dir
    for name in ("mlrun", "seldon_core"):
        assert importlib.util.find_spec(name) is None, "%s is installed in the test venv" % name
    CASES[case]()
    print("ok", case)


if __name__ == "__main__":
    main()
