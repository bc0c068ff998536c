"""A model importing what servegraph's stand-in for MLServer does not provide."""

from mlserver import MLModel
from mlserver.settings import Settings  # the server's settings: not provided


class Uses(MLModel):
    async def predict(self, payload):
        return Settings()
