"""The toy method's predictor: the shared softmax rows over its network."""

from meddiff.methods.predictor import NetworkPredictor
from meddiff_toy.train import KIND, load_toy


class ToyPredictor(NetworkPredictor):
    method = KIND
    _load = staticmethod(load_toy)
