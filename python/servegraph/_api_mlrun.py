"""MLRun's `V2ModelServer` API (`api: mlrun`): MLRun's own base class when `mlrun` is installed
in the model's interpreter, else `servegraph.compat.mlrun`'s."""

import numpy as np

from servegraph import ModelError
from servegraph._adapter import operation, utc_now_iso
from servegraph._api_task import extract, update


class MLRun:
    """MLRun's `V2ModelServer` API: constructed with `context`, `name`, `model_path` and the
    class args, `load()`ed, then per request `preprocess(body, op)` → `validate(body, op)` →
    `predict(body)` (or `explain(body)`) → `postprocess(response)`, as MLRun's `do_event` does.

    MLRun's bodies (`POST /v2/models/m/infer {"inputs": [...]}`, `POST /`) reach the class as
    they came (`predict_body`: `inputs` the JSON's list, dicts of features as they are) and its
    response is answered as it is: `{"id", "model_name", "outputs", "timestamp"}` with
    `outputs` whatever `predict` returned. An OIP request's one input tensor is handed over as
    MLRun's rows (`inputs` a list), and what `predict` returns becomes the output tensors."""

    name = "mlrun"
    # The protocol whose bodies it takes as they came (`predict_body`).
    bodies = "mlrun"
    # MLRun answers a step's exception with 400 (its GraphServer.run).
    error_status = 400

    @staticmethod
    def detects(target, spec):
        """A `V2ModelServer` subclass (MLRun's own or `servegraph.compat.mlrun`'s)."""
        return isinstance(target, type) and any(c.__name__ == "V2ModelServer" for c in target.__mro__)

    def __init__(self, target, spec):
        from servegraph.compat.mlrun import context_for

        kwargs = dict(spec.get("class_args") or {})
        # A task step's `class_args.model_path` was resolved as the model's `model_uri` (an
        # empty one stays as MLRun hands it).
        given = kwargs.pop("model_path", None)
        self.name = spec.get("step")
        task = spec.get("task") or {}
        for key in ("input_path", "result_path"):
            if task.get(key):
                kwargs[key] = task[key]
        self.input_path, self.result_path = task.get("input_path"), task.get("result_path")
        self.obj = target(
            context=context_for(self.name, kwargs),
            name=self.name,
            model_path=spec.get("model_uri") if spec.get("model_uri") is not None else given,
            **kwargs
        )
        # MLRun's `post_init`: load unless a `model=` object made it ready.
        if not getattr(self.obj, "ready", False):
            self.obj.load()
        self.obj.ready = True
        self.batchable = bool(getattr(self.obj, "batchable", False))
        self.metadata = None

    def operation(self, op, body):
        from servegraph.compat.mlrun import Event

        if not op.isidentifier() or not callable(getattr(self.obj, "op_" + op, None)):
            # MLRun's own answer to an operation its class does not have.
            raise ModelError("illegal model operation %s, method=POST" % op, status=400)
        path = "/v2/models/%s/%s" % (self.name, op)
        return operation(self.obj, op, body, lambda b: Event(b, path=path))

    def health_check(self):
        return None

    def _run(self, request, op, event_id):
        """MLRun's `do_event` for predict and explain: the hooks in its order, and its
        response."""
        start = utc_now_iso()
        self.obj.metrics = {}
        request = self.obj.preprocess(request, op)
        request = self.obj.validate(request, op)
        if op == "explain":
            outputs = self.obj.explain(request)
            response = {"id": event_id, "model_name": self.obj.name or self.name, "outputs": outputs}
        else:
            outputs = self.obj.predict(request)
            response = {
                "id": event_id,
                "model_name": self.obj.name or self.name,
                "outputs": outputs,
                "timestamp": start,
            }
        if getattr(self.obj, "version", None):
            response["model_version"] = self.obj.version
        response = self.obj.postprocess(response)
        # `set_metric` values reach /metrics as gauges.
        metrics = self.obj.metrics
        self.metrics_out = (
            [{"key": k, "type": "GAUGE", "value": v} for k, v in metrics.items()] if metrics else None
        )
        return response

    @staticmethod
    def _op(body, parameters, explain):
        if explain or parameters.get("operation") == "explain":
            return "explain"
        op = body.get("operation") if isinstance(body, dict) else None
        return op or "infer"

    def predict_body(self, body, parameters, explain, event_id):
        """An MLRun body, answered with the class's response as it is."""
        whole = body
        if self.input_path:
            body = extract(self.input_path, whole)
        if not isinstance(body, dict):
            raise ModelError("MLRun's body is a JSON object with `inputs`", status=400)
        op = self._op(body, parameters, explain)
        if op not in ("infer", "predict", "explain"):
            raise ModelError(
                "operation `%s` is not served in a body (MLRun's infer, predict and explain are); "
                "call `/v2/models/%s/%s` for the class's `op_%s`" % (op, self.name, op, op),
                status=400,
            )
        response = self._run(dict(body), op, body.get("id", event_id))
        return update(self.result_path, whole, response) if self.result_path else response

    def predict(self, inputs, parameters):
        """An OIP request: its one input tensor as MLRun's rows."""
        op = self._op({}, parameters, False)
        return self._tensors(self._run(self._request(inputs, parameters), op, parameters.get("id")))

    def explain(self, inputs, parameters):
        return self._tensors(self._run(self._request(inputs, parameters), "explain", None))

    @staticmethod
    def _request(inputs, parameters):
        if len(inputs) != 1:
            raise ModelError(
                "an MLRun model takes one input tensor (its rows are `inputs`); got %d: %s"
                % (len(inputs), ", ".join(inputs)),
                status=400,
            )
        x = next(iter(inputs.values()))
        rows = x.tolist() if x.dtype != object else [v.decode() if isinstance(v, bytes) else v for v in x.tolist()]
        return {"inputs": rows}

    @staticmethod
    def _tensors(response):
        outputs = response["outputs"] if isinstance(response, dict) and "outputs" in response else response
        if isinstance(outputs, dict):
            return outputs
        if isinstance(outputs, str):
            return np.array([outputs.encode()], dtype=object)
        return np.asarray(outputs)
