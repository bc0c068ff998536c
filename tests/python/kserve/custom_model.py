"""A custom model file in the shape of KServe's docs (custom-predictor, python/custom_model):
the class, KServe's argument parser extended, and the `__main__` block that starts KServe's
server. Served unchanged by servegraph: the file is imported, so the block never runs."""

import argparse
from typing import Dict, Union

import numpy as np

from kserve import (
    InferOutput,
    InferRequest,
    InferResponse,
    Model,
    ModelServer,
    logging,
    model_server,
)
from kserve.model_server import app
from kserve.utils.utils import generate_uuid


class AlexNetModel(Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name
        self.load()

    def load(self):
        self.model = np.linspace(0.1, 1.0, 10, dtype=np.float32)
        self.ready = True

    def predict(
        self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None
    ) -> Union[Dict, InferResponse]:
        if isinstance(payload, InferRequest):
            values = payload.inputs[0].as_numpy() * self.model[: payload.inputs[0].shape[-1]]
            output = InferOutput(name="output-0", shape=list(values.shape), datatype="FP32")
            output.set_data_from_numpy(values, binary_data=False)
            return InferResponse(
                model_name=self.name, infer_outputs=[output], response_id=generate_uuid()
            )
        values = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": (values * self.model[: values.shape[-1]]).tolist()}


parser = argparse.ArgumentParser(parents=[model_server.parser])
parser.add_argument("--model_dir", default="/mnt/models", help="A local path to the model binary")
args, _ = parser.parse_known_args()

if __name__ == "__main__":
    if args.configure_logging:
        logging.configure_logging(args.log_config_file)
    model = AlexNetModel(args.model_name)
    model.load()
    app.title = "custom"
    ModelServer().start([model])
