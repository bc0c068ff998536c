"""KServe model classes in the exact shapes of KServe's own (python/custom_model/model.py,
python/sklearnserver, the DummyModel of python/kserve/test/test_server.py, the docs' custom
models), with NumPy standing in for torch and scikit-learn where the stand-in's interpreter
has neither. Each runs unchanged under real `kserve` (the test venv) and under servegraph's
stand-in (the Seldon venv, which has no `kserve`).
"""

import asyncio
import base64
import datetime
import os
import pathlib
import time
from typing import Dict, Union

import numpy as np

from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelMissingError,
    ModelNotFound,
    ModelNotReady,
)
from kserve.logging import logger
from kserve.utils.utils import generate_uuid, get_predict_input, get_predict_response
from kserve_storage import Storage

# The "network" TopK runs: 4 features in, 5 scores out.
WEIGHTS = np.arange(20, dtype=np.float32).reshape(4, 5) / 10


class TopK(Model):
    """The shape of KServe's custom_model (AlexNetModel): v1 instances with `data` (already
    preprocessed) or an `image` as base64, v2 FP32 or BYTES (base64 over REST); predict
    answers an InferResponse, or `{"predictions"}` when preprocess saw a v1 request."""

    def __init__(self, name: str):
        super().__init__(name, return_response_headers=True)
        self.model = None
        self.ready = False
        self.load()

    def load(self):
        self.model = WEIGHTS
        # The ready flag is used by model ready endpoint for readiness probes,
        # set to True when model is loaded successfully without exceptions.
        self.ready = True

    def preprocess(
        self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None
    ) -> np.ndarray:
        raw = None
        if isinstance(payload, Dict) and "instances" in payload:
            headers["request-type"] = "v1"
            if "data" in payload["instances"][0]:
                return np.asarray(payload["instances"][0]["data"], dtype=np.float32)[None, :]
            elif "image" in payload["instances"][0]:
                raw = base64.b64decode(payload["instances"][0]["image"]["b64"])
        elif isinstance(payload, InferRequest):
            infer_input = payload.inputs[0]
            if infer_input.datatype == "BYTES":
                if payload.from_grpc:
                    raw = infer_input.data[0]
                else:
                    raw = base64.b64decode(infer_input.data[0])
            elif infer_input.datatype == "FP32":
                return infer_input.as_numpy()
        else:
            raise InvalidInput("invalid payload")
        return np.frombuffer(raw, dtype=np.uint8).astype(np.float32)[None, :4]

    def predict(
        self,
        input_tensor: np.ndarray,
        headers: Dict[str, str] = None,
        response_headers: Dict[str, str] = None,
    ) -> Union[Dict, InferResponse]:
        start = time.time()
        output = input_tensor @ self.model
        values = -np.sort(-output, axis=1)[:, :3]
        result = values.flatten().tolist()
        infer_output = InferOutput(
            name="output-0", shape=list(values.shape), datatype="FP32", data=result
        )
        infer_response = InferResponse(
            model_name=self.name, infer_outputs=[infer_output], response_id=generate_uuid()
        )
        end = time.time()
        if response_headers is not None:
            response_headers.update({"prediction-time-latency": f"{round((end - start) * 1000, 9)}"})
        if "request-type" in headers and headers["request-type"] == "v1":
            return {"predictions": result}
        else:
            return infer_response


class DummyModel(Model):
    """KServe's own test model (test_server.py): async predict and explain, echoing a v1
    body's instances, and a v2 request's first input through get_predict_input /
    get_predict_response with its parameters."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name
        self.ready = False

    def load(self):
        self.ready = True

    async def predict(self, request, headers=None):
        if isinstance(request, InferRequest):
            inputs = get_predict_input(request)
            infer_response = get_predict_response(request, inputs, self.name)
            if request.parameters:
                infer_response.parameters = request.parameters
            if request.inputs[0].parameters:
                infer_response.outputs[0].parameters = request.inputs[0].parameters
            return infer_response
        else:
            if "inputs" in request:
                return {"predictions": request["inputs"]}
            else:
                return {"predictions": request["instances"]}

    async def explain(self, request, headers=None):
        if "inputs" in request:
            return {"predictions": request["inputs"]}
        else:
            return {"predictions": request["instances"]}


class PrePost(Model):
    """A transformer's hooks in one model: an async preprocess, a sync predict, an async
    postprocess."""

    def __init__(self, name: str, offset: float = 0.0):
        super().__init__(name)
        self.offset = offset
        self.load()

    async def preprocess(self, payload: Dict, headers: Dict[str, str] = None) -> np.ndarray:
        return np.asarray(payload["instances"], dtype=np.float64) + self.offset

    def predict(self, payload: np.ndarray, headers: Dict[str, str] = None) -> np.ndarray:
        return payload.sum(axis=1)

    async def postprocess(self, result: np.ndarray, headers: Dict[str, str] = None) -> Dict:
        return {"predictions": result.tolist(), "postprocessed": True}


MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle", ".npy")


class FileModel(Model):
    """KServe's SKLearnModel shape: constructed with `model_dir`, which `load` downloads with
    Storage and searches for the one model file (a scikit-learn pickle, or a `.npy` of linear
    weights where scikit-learn is not installed)."""

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.name = name
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        model_path = pathlib.Path(Storage.download(self.model_dir))
        model_files = []
        for file in os.listdir(model_path):
            file_path = os.path.join(model_path, file)
            if os.path.isfile(file_path) and file.endswith(MODEL_EXTENSIONS):
                model_files.append(model_path / file)
        if len(model_files) == 0:
            raise ModelMissingError(model_path)
        elif len(model_files) > 1:
            raise RuntimeError(
                "More than one model file is detected, "
                f"Only one is allowed within model_dir: {model_files}"
            )
        if model_files[0].suffix == ".npy":
            weights = np.load(model_files[0])
            self._model = type("Linear", (), {"predict": staticmethod(lambda x: np.asarray(x) @ weights)})
        else:
            import joblib

            self._model = joblib.load(model_files[0])
        self.ready = True
        return self.ready

    def predict(
        self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None
    ) -> Union[Dict, InferResponse]:
        try:
            instances = get_predict_input(payload)
            result = self._model.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as e:
            raise InferenceError(str(e))


class Explainer(Model):
    """A model and its explainer: `predict` answers the weighted sums, `explain` each
    feature's share of them (as an alibi explainer's answer, a dict)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.weights = np.array([1.0, 2.0, 3.0])
        self.ready = True

    def predict(self, payload: Dict, headers: Dict[str, str] = None) -> Dict:
        x = np.asarray(get_predict_input(payload), dtype=np.float64)
        return {"predictions": (x @ self.weights).tolist()}

    def explain(self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None) -> Dict:
        x = np.asarray(get_predict_input(payload), dtype=np.float64)
        return {
            "meta": {"name": "Shares"},
            "data": {"contributions": (x * self.weights).tolist()},
        }


class HTTPException(Exception):
    """An exception with its own status, as FastAPI's `HTTPException` (which the stand-in's
    interpreter does not have)."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class Raises(Model):
    """Raises what the first instance names, as KServe models do."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        what = payload["instances"][0] if isinstance(payload, dict) else payload.inputs[0].data[0]
        if what == "invalid":
            raise InvalidInput("the instance is not an image")
        if what == "not-found":
            raise ModelNotFound("elsewhere")
        if what == "not-ready":
            raise ModelNotReady(self.name, "warming up")
        if what == "inference":
            raise InferenceError("the model diverged")
        if what == "not-implemented":
            raise NotImplementedError("no such verb")
        if what == "http":
            raise HTTPException(status_code=404, detail="Intentional 404 code")
        if what == "value":
            raise ValueError("a plain failure")
        return {"predictions": [what]}


class NotLoaded(Model):
    """A model whose load leaves `ready` False (its file is missing, say)."""

    def __init__(self, name: str):
        super().__init__(name)

    def load(self):
        logger.info("nothing to load for %s", self.name)

    def predict(self, payload, headers=None):
        return {"predictions": [1]}


class Flagged(Model):
    """Healthy while a flag file exists (`healthy()` overridden, async as KServe's)."""

    def __init__(self, name: str, flag: str):
        super().__init__(name)
        self.flag = flag
        self.ready = True

    async def healthy(self) -> bool:
        return self.ready and os.path.exists(self.flag)

    def predict(self, payload, headers=None):
        return {"predictions": ["served"]}


class Headers(Model):
    """Answers the request's headers and the body it was handed."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        body = payload if isinstance(payload, dict) else {"v2": payload.inputs[0].name}
        return {"headers": headers, "body": body, "id": getattr(payload, "id", None)}


class Outputs(Model):
    """Answers an InferResponse of two outputs (FP32 scores, BYTES labels), as binary data
    when the request asks, with response parameters."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, dict):
            x = np.asarray(payload["instances"], dtype=np.float32)
            binary, request_id = False, "v1"
        else:
            x = payload.inputs[0].as_numpy()
            binary, request_id = payload.use_binary_outputs, payload.id
        scores = x * 2
        labels = np.array(["big" if v > 2 else "small" for v in x.reshape(-1)], dtype=np.object_)
        out_scores = InferOutput(name="scores", shape=list(scores.shape), datatype="FP32")
        out_scores.set_data_from_numpy(scores, binary_data=binary)
        out_labels = InferOutput(name="labels", shape=list(labels.shape), datatype="BYTES")
        out_labels.set_data_from_numpy(labels, binary_data=binary)
        return InferResponse(
            response_id=request_id,
            model_name=self.name,
            infer_outputs=[out_scores, out_labels],
            parameters={"answered_by": self.name},
            use_binary_outputs=binary,
        )


class Arrays(Model):
    """Answers a NumPy array as it is (KServe sends it as JSON on v1)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        x = get_predict_input(payload)
        return np.asarray(x, dtype=np.float64) * 10


class Texts(Model):
    """Strings in, strings out: a v1 body of any shape (`{"text": ...}`), v2 BYTES."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            words = get_predict_input(payload)
            return get_predict_response(payload, [w.upper() for w in words], self.name)
        return {"predictions": [payload["text"].upper()]}


class Dates(Model):
    """Answers datetimes, as KServe's DateTimeModel: in a v1 body (KServe's server writes
    them in ISO 8601), and in a v2 BYTES output."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        when = datetime.datetime(2026, 12, 7, 12, 30, 15, 250000, tzinfo=datetime.timezone.utc)
        if isinstance(payload, InferRequest):
            infer_output = InferOutput(name="output-0", shape=[1], datatype="BYTES")
            infer_output.set_data_from_numpy(np.array([when], dtype=np.object_), binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[infer_output], response_id=generate_uuid())
        return {"predictions": [when, when.date()]}


class Requests(Model):
    """Builds its own InferRequest, as a transformer does, and reads it back."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        x = np.asarray(payload["instances"], dtype=np.float32)
        request = InferRequest(
            model_name=self.name,
            infer_inputs=[InferInput(name="x", datatype="FP32", shape=list(x.shape), data=x.reshape(-1).tolist())],
        )
        rest, _ = request.to_rest()
        return {"predictions": request.inputs[0].as_numpy().tolist(), "inputs": rest["inputs"]}


class InTask(Model):
    """An async predict that needs to run as a task: `asyncio.timeout` (which refuses to run
    outside one), `asyncio.current_task()`, a real wait on the loop (a sleep) when the request
    asks for one, and a background task started by one call and seen done by the next."""

    def __init__(self, name):
        super().__init__(name)
        self.started = []
        self.ready = True

    async def _background(self):
        self.started.append("done")

    async def predict(self, payload, headers=None):
        async with asyncio.timeout(5):
            if payload.get("sleep"):
                await asyncio.sleep(payload["sleep"])
            in_task = asyncio.current_task() is not None
        seen = list(self.started)
        if payload.get("spawn"):
            asyncio.get_running_loop().create_task(self._background())
        timed_out = False
        if payload.get("time_out"):
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(5)
            except TimeoutError:
                timed_out = True
        return {"predictions": [in_task, seen, timed_out]}
