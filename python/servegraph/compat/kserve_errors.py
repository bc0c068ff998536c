"""KServe's exceptions (`kserve.errors`), for classes written for `kserve` when the model's
interpreter does not have it. Raised from a hook, each answers with the status KServe's
server gives it (`servegraph._api_kserve.STATUS`): `InvalidInput` 400, `ModelNotFound` 404,
`ModelNotReady` 503, `InferenceError` 500, `NotImplementedError` 501, anything else 500.
"""


class ModelMissingError(Exception):
    """No model file where the class looked (its `path`)."""

    def __init__(self, path):
        self.path = path

    def __str__(self):
        return self.path


class InferenceError(RuntimeError):
    """The inference failed (500); `status`, when given, prefixes the message."""

    def __init__(self, reason, status=None, debug_details=None):
        self.reason = reason
        self.status = status
        self.debug_details = debug_details

    def __str__(self):
        message = super().__str__() if self.reason is None else self.reason
        if self.status is not None:
            message = "[" + self.status + "] " + message
        return message


class InvalidInput(ValueError):
    """The request is wrong (400)."""

    def __init__(self, reason):
        self.reason = reason

    def __str__(self):
        return self.reason


class ModelNotFound(Exception):
    """No model of that name (404)."""

    def __init__(self, model_name=None):
        self.reason = "Model with name %s does not exist." % model_name

    def __str__(self):
        return self.reason


class WorkersShouldBeLessThanMaxWorkersError(Exception):
    def __init__(self, max_workers=None):
        self.reason = "Workers cannot be greater than %s" % max_workers

    def __str__(self):
        return self.reason


class ModelNotReady(RuntimeError):
    """The model cannot serve yet (503)."""

    def __init__(self, model_name, detail=None):
        self.model_name = model_name
        self.error_msg = "Model with name %s is not ready." % model_name
        if detail:
            self.error_msg = self.error_msg + " " + detail

    def __str__(self):
        return self.error_msg


class UnsupportedProtocol(Exception):
    """A protocol KServe does not serve (501)."""

    def __init__(self, protocol_version=None):
        self.reason = "Unsupported protocol %s." % protocol_version

    def __str__(self):
        return self.reason


class ServerNotReady(RuntimeError):
    """503."""

    def __init__(self, detail=None):
        self.error_msg = "Server is not ready."
        if detail:
            self.error_msg = self.error_msg + " " + detail

    def __str__(self):
        return self.error_msg


class ServerNotLive(RuntimeError):
    """503."""

    def __init__(self, detail=None):
        self.error_msg = "Server is not live."
        if detail:
            self.error_msg = self.error_msg + " " + detail

    def __str__(self):
        return self.error_msg


class NoModelReady(RuntimeError):
    """None of the models given to `ModelServer.start` is ready."""

    def __init__(self, models, detail=None):
        self.models = models
        self.detail = detail

    def __str__(self):
        names = [model.name for model in self.models]
        if len(names) == 1:
            message = "Model with name %s is not ready." % names[0]
        else:
            message = "Models with names %s are not ready." % ",".join(names)
        if self.detail:
            message = message + " " + self.detail
        return message
