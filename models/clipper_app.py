"""A Clipper application's model, written to Clipper's closure contract: a function of the list
of inputs (one per query) that returns one string per input. graphs/clipper-app.yaml serves
it; Clipper's clients query it with `POST /clipper-app/predict` and `{"input": [...]}`."""


def feature_sum(inputs):
    """Clipper's getting-started closure: the sum of each input's features, as a string."""
    return [str(sum(x)) for x in inputs]
