"""MLServer models written as MLServer's repository writes them, for tests/mlserver.rs: its test
fixtures (`tests/fixtures.py`: SumModel, TextModel, TextStreamModel, ErrorModel, SimpleModel,
EchoModel), its docs' custom runtimes (`docs/examples/custom/models.py`'s shape, with NumPy in
place of numpyro; `docs/examples/custom-json/jsonmodels.py`), its scikit-learn runtime
(`runtimes/sklearn/mlserver_sklearn/sklearn.py`) and a pandas model. The same file runs under
MLServer's own package (the bench venv) and under servegraph's stand-in (the test venv, which
has no `mlserver`)."""

import asyncio
import json
from typing import AsyncIterator, List, Optional

import joblib
import numpy as np
from fastapi import Body

from mlserver import MLModel
from mlserver.codecs import (
    DecodedParameterName,
    InputCodec,
    NumpyCodec,
    NumpyRequestCodec,
    PandasCodec,
    StringCodec,
    decode_args,
    register_input_codec,
)
from mlserver.errors import InferenceError, MLServerError
from mlserver.handlers.custom import custom_handler
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestOutput,
    ResponseOutput,
)
from mlserver.utils import get_model_uri


class SumModel(MLModel):
    @custom_handler(rest_path="/my-custom-endpoint")
    async def my_payload(self, payload: list = Body(...)) -> int:
        return sum(payload)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        decoded = self.decode(payload.inputs[0])
        total = decoded.sum(axis=1, keepdims=True)

        output = NumpyCodec.encode_output(name="total", payload=total)
        response = InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[output],
        )

        if payload.parameters and payload.parameters.headers:
            # "Echo" headers back prefixed by `x-`
            request_headers = payload.parameters.headers
            response_headers = {}
            for header_name, header_value in request_headers.items():
                if header_name.startswith("x-"):
                    response_headers[header_name] = header_value

            response.parameters = Parameters(headers=response_headers)

        return response


class TextModel(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        text = StringCodec.decode_input(payload.inputs[0])[0]
        return InferenceResponse(
            model_name=self._settings.name,
            outputs=[
                StringCodec.encode_output(
                    name="output",
                    payload=[text],
                    use_bytes=True,
                ),
            ],
        )


class TextStreamModel(MLModel):
    async def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        payload = [_ async for _ in payloads][0]
        text = StringCodec.decode_input(payload.inputs[0])[0]
        words = text.split(" ")

        split_text = []
        for i, word in enumerate(words):
            split_text.append(word if i == 0 else " " + word)

        for word in split_text:
            await asyncio.sleep(0.01)
            yield InferenceResponse(
                model_name=self._settings.name,
                outputs=[
                    StringCodec.encode_output(
                        name="output",
                        payload=[word],
                        use_bytes=True,
                    ),
                ],
            )


class ErrorModel(MLModel):
    error_message = "something really bad happened"

    async def load(self) -> bool:
        if self._settings.parameters:
            load_error = getattr(self._settings.parameters, "load_error", False)
            if load_error:
                raise MLServerError(self.error_message)

        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise MLServerError(self.error_message)


class InvalidInputModel(MLModel):
    """An MLServerError subclass with a status of its own (InferenceError: 400)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise InferenceError(f"input '{payload.inputs[0].name}' is not one this model reads")


class TeapotModel(MLModel):
    """An MLServerError with a status of the class's choosing."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise MLServerError("no coffee here", status_code=422)


class SimpleModel(MLModel):
    @decode_args
    async def predict(self, foo: np.ndarray, bar: List[str]) -> np.ndarray:
        return foo.sum(axis=1, keepdims=True)


class EchoModel(MLModel):
    async def load(self) -> bool:
        print("Echo Model Initialized")
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                ResponseOutput(
                    name=input.name,
                    shape=input.shape,
                    datatype=input.datatype,
                    data=input.data,
                    parameters=input.parameters,
                )
                for input in payload.inputs
            ],
        )


class RequestEcho(MLModel):
    """Answers with what it was handed, as JSON: the request (`model_dump()`), its settings'
    name, version, uri and extra, and what `decode` makes of each input."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        decoded = {}
        for request_input in payload.inputs:
            value = self.decode(request_input)
            if isinstance(value, np.ndarray):
                value = {"array": value.tolist(), "dtype": str(value.dtype), "writeable": bool(value.flags.writeable)}
            elif not isinstance(value, (list, str, int, float)):
                value = type(value).__name__
            decoded[request_input.name] = value
        params = self.settings.parameters
        seen = {
            "base": MLModel.__module__,
            "request": payload.model_dump(exclude={"inputs": {"__all__": {"parameters": {"_decoded_payload"}}}}),
            "id": payload.id,
            "name": self.name,
            "version": self.version,
            "uri": params.uri if params else None,
            "extra": params.extra if params else None,
            "decoded": decoded,
            "outputs": [o.name for o in payload.outputs] if payload.outputs else None,
        }
        text = json.dumps(seen, default=str)
        return InferenceResponse(
            model_name=self.name,
            outputs=[StringCodec.encode_output("seen", [text])],
        )


class BatchProbe(MLModel):
    """Each row answered with the rows of the request it came in (`rows`), whether that
    request had an id (`with_id`), and itself (`x`); slow, so that requests queue up."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = self.decode(payload.inputs[0], default_codec=NumpyCodec)
        n = x.shape[0]
        await asyncio.sleep(0.05)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("rows", np.full((n, 1), n, dtype=np.int64)),
                NumpyCodec.encode_output("with_id", np.full((n, 1), payload.id is not None)),
                NumpyCodec.encode_output("x", x),
            ],
        )


class OneRowModel(MLModel):
    """One row whatever it is sent: it cannot be batched."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        await asyncio.sleep(0.05)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("one", np.zeros((1, 1)))],
        )


class NotReadyModel(MLModel):
    async def load(self) -> bool:
        return False

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise AssertionError("never called: the model is not ready")


class LinearModel(MLModel):
    """The shape of MLServer's docs' custom runtime (`NumpyroModel`): `load()` reads its
    samples from `get_model_uri`, `predict` decodes its arguments by type hint."""

    async def load(self) -> bool:
        model_uri = await get_model_uri(self._settings)
        with open(model_uri) as model_file:
            raw_samples = json.load(model_file)

        self._samples = {}
        for k, v in raw_samples.items():
            self._samples[k] = np.array(v)

        return True

    @decode_args
    async def predict(
        self,
        marriage: Optional[np.ndarray] = None,
        age: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        mu = self._samples["a"].mean()
        if marriage is not None:
            mu = mu + self._samples["bM"].mean() * marriage
        if age is not None:
            mu = mu + self._samples["bA"].mean() * age
        return np.asarray(mu)


class JsonHelloWorldModel(MLModel):
    async def load(self) -> bool:
        # Perform additional custom initialization here.
        print("Initialize model")

        # Set readiness flag for model
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request = self._extract_json(payload)
        response = {
            "request": request,
            "server_response": "Got your request. Hello from the server.",
        }
        response_bytes = json.dumps(response).encode("UTF-8")

        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                ResponseOutput(
                    name="echo_response",
                    shape=[len(response_bytes)],
                    datatype="BYTES",
                    data=[response_bytes],
                    parameters=Parameters(content_type="str"),
                )
            ],
        )

    def _extract_json(self, payload: InferenceRequest):
        inputs = {}
        for inp in payload.inputs:
            inputs[inp.name] = json.loads(
                "".join(self.decode(inp, default_codec=StringCodec))
            )

        return inputs


class ColumnsModel(MLModel):
    """A pandas model: the request as a DataFrame (its content type `pd`), a column added,
    the frame answered (`encode_response`: PandasCodec). Numbers only: MLServer 1.7.1's
    PandasCodec cannot encode pandas 3's string columns (`KeyError: 'O'`)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        frame = self.decode_request(payload, default_codec=PandasCodec)
        frame["total"] = frame.sum(axis=1)
        return self.encode_response(frame)


_to_exclude = {
    "parameters": {DecodedParameterName},
    "inputs": {"__all__": {"parameters": {DecodedParameterName}}},
}


class EchoRuntime(MLModel):
    """MLServer's docs' content-type example (`docs/examples/content-type/runtime.py`), as it
    is (its Pillow codec apart: `UpperCodec` below registers a codec of one's own)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        for request_input in payload.inputs:
            decoded_input = self.decode(request_input)
            print(f"------ Encoded Input ({request_input.name}) ------")
            as_dict = request_input.dict(exclude=_to_exclude)  # type: ignore
            print(json.dumps(as_dict, indent=2))
            print(f"------ Decoded input ({request_input.name}) ------")
            print(decoded_input)

            outputs.append(
                ResponseOutput(
                    name=request_input.name,
                    datatype=request_input.datatype,
                    shape=request_input.shape,
                    data=request_input.data,
                )
            )

        return InferenceResponse(model_name=self.name, outputs=outputs)


@register_input_codec
class UpperCodec(InputCodec):
    """A codec of one's own (content type `upper`): text, upper-cased."""

    ContentType = "upper"

    @classmethod
    def can_encode(cls, payload) -> bool:
        return False

    @classmethod
    def decode_input(cls, request_input) -> List[str]:
        return [t.upper() for t in StringCodec.decode_input(request_input)]

    @classmethod
    def encode_output(cls, name, payload, **kwargs) -> ResponseOutput:
        return StringCodec.encode_output(name, payload)


class DecodedEcho(MLModel):
    """What `self.decode` makes of each input (its content type's codec, or the settings'
    metadata's), as text."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        decoded = {}
        for request_input in payload.inputs:
            value = self.decode(request_input)
            decoded[request_input.name] = value.tolist() if isinstance(value, np.ndarray) else value
        return InferenceResponse(
            model_name=self.name,
            outputs=[StringCodec.encode_output("decoded", [json.dumps(decoded, default=str)])],
        )


PREDICT_FN_KEY = "predict_fn"
PREDICT_OUTPUT = "predict"
PREDICT_PROBA_OUTPUT = "predict_proba"
PREDICT_TRANSFORM = "transform"
VALID_OUTPUTS = [PREDICT_OUTPUT, PREDICT_PROBA_OUTPUT, PREDICT_TRANSFORM]

WELLKNOWN_MODEL_FILENAMES = ["model.joblib", "model.pickle", "model.pkl"]


class SKLearnModel(MLModel):
    """MLServer's scikit-learn runtime (`mlserver_sklearn.SKLearnModel`), as it is."""

    async def load(self) -> bool:
        model_uri = await get_model_uri(self._settings, wellknown_filenames=WELLKNOWN_MODEL_FILENAMES)
        self._model = joblib.load(model_uri)

        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        payload = self._check_request(payload)

        outputs = self._get_model_outputs(payload)

        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=outputs,
        )

    def _check_request(self, payload: InferenceRequest) -> InferenceRequest:
        if not payload.outputs:
            found_predict_fn = False
            if self.settings.parameters:
                if self.settings.parameters.extra:
                    if PREDICT_FN_KEY in self.settings.parameters.extra:
                        payload.outputs = [
                            RequestOutput(name=self.settings.parameters.extra[PREDICT_FN_KEY])
                        ]
                        found_predict_fn = True
            # By default, only return the result of `predict()`
            if not found_predict_fn:
                payload.outputs = [RequestOutput(name=PREDICT_OUTPUT)]
        else:
            for request_output in payload.outputs:
                if request_output.name not in VALID_OUTPUTS:
                    raise InferenceError(
                        f"SKLearnModel only supports '{PREDICT_OUTPUT}', "
                        f"'{PREDICT_PROBA_OUTPUT}' and "
                        f"'{PREDICT_TRANSFORM}' as outputs "
                        f"({request_output.name} was received)"
                    )

        return payload

    def _get_model_outputs(self, payload: InferenceRequest) -> List[ResponseOutput]:
        decoded_request = self.decode_request(payload, default_codec=NumpyRequestCodec)

        outputs = []
        for request_output in payload.outputs:  # type: ignore
            predict_fn = getattr(self._model, request_output.name)
            y = predict_fn(decoded_request)

            output = self.encode(y, request_output, default_codec=NumpyCodec)
            outputs.append(output)

        return outputs
