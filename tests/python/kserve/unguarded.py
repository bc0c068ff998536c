"""A model file that starts KServe's server when it is imported (no `__main__` guard), as a
script run with `python model.py` would: under servegraph the call starts nothing and says
so in the log, and the file goes on loading."""

import kserve


class Echo(kserve.Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": payload["instances"]}


model = Echo("echo")
kserve.ModelServer(workers=1).start([model])
