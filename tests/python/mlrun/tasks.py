"""MLRun flow steps in the shapes MLRun's `TaskStep` runs (tests/mlrun.rs)."""


def double(body):
    """A handler of the body."""
    return [x * 2 for x in body["values"]]


def with_context(body, context):
    """A handler MLRun hands its `context` (it asks for it by name): a GraphContext."""
    from mlrun.serving import GraphContext

    assert isinstance(context, GraphContext), "didnt get a valid context"
    return {"param": context.get_param("missing", "default"), "got": body}


class Counter:
    """A class with `do(body)`; MLRun passes `name` and `context` when the class takes them."""

    def __init__(self, name=None, context=None, start=0):
        self.name = name
        self.count = start
        self.has_context = context is not None

    def do(self, body):
        self.count += 1
        return {"step": self.name, "count": self.count, "context": self.has_context, "body": body}


class EventStep:
    """A class with `do_event(event)`: it gets MLRun's event and returns it."""

    def do_event(self, event):
        event.body = {"id": event.id, "body": event.body}
        return event


class Named:
    """A class whose method is named in `handler:`."""

    def shout(self, body):
        return body.upper()


def identity(body):
    """Hands the body on as it came."""
    return body


def fails(body):
    """A step that raises."""
    raise ValueError("no good: %s" % body)


class Catcher:
    """An error handler as MLRun writes one (`full_event`): the failure's message and the step
    that failed are on the event."""

    def do_event(self, event):
        event.body = {"error": event.error, "origin": event.origin_state, "body": event.body}
        return event


def typed(body):
    """What the body is: MLRun keeps text bodies as text."""
    return {"type": type(body).__name__, "body": body}


def uses_graph_context(body):
    from mlrun.serving import GraphContext

    return {"context": type(GraphContext()).__name__}
