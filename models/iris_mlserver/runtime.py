"""An MLServer custom runtime as MLServer's docs write one (`MLModel`: `load()` reads the file
its settings name through `get_model_uri`, `predict` decodes the request with NumpyCodec's
rules and answers with it), served from this folder by graphs/python-mlserver.yaml as
`mlserver start` would serve it: model-settings.json names the class and the file."""

import joblib

from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class IrisModel(MLModel):
    async def load(self) -> bool:
        self._model = joblib.load(await get_model_uri(self._settings))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = self.decode_request(payload, default_codec=NumpyRequestCodec)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("probabilities", self._model.predict_proba(x))],
        )
