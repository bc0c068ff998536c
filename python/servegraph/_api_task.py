"""MLRun's flow steps (`kind: task`): a `handler` function of the event's body, or a class whose
`handler` method, else `do_event(event)`, else `do(body)`, is called, as MLRun's `TaskStep`
runs them. (A `V2ModelServer` class in a task step is a model: `_api_mlrun`.)"""

import inspect

from servegraph import ModelError
from servegraph._adapter import operation


def get_in(obj, keys, default=None):
    """MLRun's `get_in`: a dotted path into dicts, `default` where it is missing."""
    for key in keys.split(".") if isinstance(keys, str) else keys:
        if not obj or key not in obj:
            return default
        obj = obj[key]
    return obj


def update_in(obj, keys, value):
    """MLRun's `update_in`: sets a dotted path, making the dicts on the way."""
    parts = keys.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def extract(input_path, body):
    """MLRun's `_extract_input_data`."""
    if input_path:
        if not hasattr(body, "__getitem__"):
            raise TypeError("input_path parameter supports only dict-like event bodies")
        return get_in(body, input_path)
    return body


def update(result_path, body, result):
    """MLRun's `_update_result_body`."""
    if result_path and body:
        if not hasattr(body, "__getitem__"):
            raise TypeError("result_path parameter supports only dict-like event bodies")
        update_in(body, result_path, result)
        return body
    return result


class Task:
    """An MLRun flow step: the body in, the next body out."""

    name = "task"
    # The protocol whose bodies it takes as they came (`predict_body`).
    bodies = "mlrun"
    # MLRun answers a step's exception with 400 (its GraphServer.run).
    error_status = 400

    @staticmethod
    def detects(target, spec):
        """A `kind: task` step (its `task` settings) whose class is not a model server."""
        return bool(spec.get("task"))

    def __init__(self, target, spec):
        from servegraph.compat.mlrun import context_for

        task = spec.get("task") or {}
        self.step = spec.get("step")
        self.input_path = task.get("input_path")
        self.result_path = task.get("result_path")
        self.with_event = bool(task.get("full_event"))
        args = dict(spec.get("class_args") or {})
        self.context = context_for(self.step, args)
        self.obj = None
        self.kwargs = {}
        handler = task.get("handler")
        if spec.get("class_name"):
            # MLRun's `get_full_class_args`: the class args, and the common ones the class takes.
            spec_args = inspect.getfullargspec(target)
            common = {
                "name": self.step,
                "context": None if task.get("skip_context") else self.context,
                "input_path": self.input_path,
                "result_path": self.result_path,
                "full_event": task.get("full_event"),
            }
            for key, value in common.items():
                if spec_args.varkw or key in spec_args.args:
                    args[key] = value
            self.obj = target(**args)
            if handler:
                if not hasattr(self.obj, handler):
                    raise AttributeError(
                        "handler (%s) specified but doesnt exist in class %s" % (handler, target.__name__)
                    )
            elif hasattr(self.obj, "do_event"):
                handler, self.with_event = "do_event", True
            elif hasattr(self.obj, "do"):
                handler = "do"
            else:
                raise AttributeError(
                    "class %s has neither `do_event(event)` nor `do(body)`: name its method in "
                    "the step's `handler:`" % target.__name__
                )
            self.fn = getattr(self.obj, handler)
            post_init = getattr(self.obj, "post_init", None)
            if callable(post_init):
                post_init("sync")
        else:
            self.fn = target
            try:
                takes = inspect.signature(target).parameters
            except (TypeError, ValueError):
                takes = {}
            if "context" in takes:
                self.kwargs["context"] = self.context
        self.batchable = False
        self.metadata = None

    def operation(self, op, body):
        return operation(self.obj, op, body)

    def health_check(self):
        return None

    def predict_body(self, body, parameters, explain, event_id):
        from servegraph.compat.mlrun import Event

        if explain:
            raise ModelError("a flow step cannot explain: `/explain` is for models", status=400)
        if self.with_event:
            event = Event(body, path="/", id=event_id)
            failure = getattr(self, "failure", None)
            if failure:
                # An error handler's event: MLRun's `error` ({step: message}) and
                # `origin_state` (the step that failed).
                event.error = {failure.get("step"): failure.get("message")}
                event.origin_state = failure.get("step")
            result = self.fn(event, **self.kwargs)
            return result.body if hasattr(result, "body") else result
        result = self.fn(extract(self.input_path, body), **self.kwargs)
        return update(self.result_path, body, result)

    def predict(self, inputs, parameters):
        raise ModelError("an MLRun flow step works on the request's body", status=500)
