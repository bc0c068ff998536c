"""MLRun's `V2ModelServer` API (`api: mlrun`; the base class of `servegraph.compat.mlrun`)."""

import numpy as np

from servegraph import ModelError
from servegraph._adapter import operation


class MLRun:
    """MLRun's `V2ModelServer` API (`servegraph.compat.mlrun`): constructed with `context`,
    `name`, `model_path` and the class args, `load()`ed, then per request preprocess →
    validate → predict → postprocess on MLRun's body `{"id", "inputs"}`."""

    name = "mlrun"

    @staticmethod
    def detects(target, spec):
        """A `V2ModelServer` subclass (MLRun's own or `servegraph.compat.mlrun`'s)."""
        return isinstance(target, type) and any(c.__name__ == "V2ModelServer" for c in target.__mro__)

    def __init__(self, target, spec):
        kwargs = dict(spec.get("class_args") or {})
        self.name = spec.get("step")
        self.obj = target(name=self.name, model_path=spec.get("model_uri"), **kwargs)
        self.obj.load()
        self.obj.ready = True
        self.batchable = bool(getattr(self.obj, "batchable", False))
        self.metadata = None

    def operation(self, op, body):
        from servegraph.compat.mlrun import Event

        path = "/v2/models/%s/%s" % (self.name, op)
        return operation(self.obj, op, body, lambda b: Event(b, path=path))

    def health_check(self):
        return None

    def predict(self, inputs, parameters):
        if len(inputs) != 1:
            raise ModelError(
                "an MLRun model takes one input tensor (its rows are `inputs`); got %d: %s"
                % (len(inputs), ", ".join(inputs)),
                status=400,
            )
        body = {"id": parameters.get("id"), "inputs": next(iter(inputs.values()))}
        op = parameters.get("operation") or "infer"
        self.obj.metrics = {}
        request = self.obj.preprocess(body, op)
        request = self.obj.validate(request, op) or request
        outputs = self.obj.explain(request) if op == "explain" else self.obj.predict(request)
        # `set_metric` values reach /metrics as gauges.
        self.metrics_out = [
            {"key": k, "type": "GAUGE", "value": v} for k, v in (self.obj.metrics or {}).items()
        ]
        response = {"id": body["id"], "model_name": self.name, "outputs": outputs}
        response = self.obj.postprocess(response)
        outputs = response["outputs"] if isinstance(response, dict) else response
        return outputs if isinstance(outputs, dict) else np.asarray(outputs)
