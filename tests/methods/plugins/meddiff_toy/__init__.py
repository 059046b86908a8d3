"""A toy method kept outside the meddiff package, to prove that a method is one package plus its registration:
logistic regression on 8 x 8 average-pooled pixels, trained with the shared loop (``meddiff.train.loop``) and scored
with the shared softmax rows (``meddiff.methods.predictor.NetworkPredictor``). Loaded through ``MEDDIFF_METHODS``."""

from meddiff.method_registry import Method, register

register(Method("toy", "meddiff_toy.train:train_toy", "meddiff_toy.predictor:ToyPredictor", votes=False,
                description="toy: logistic regression on 8 x 8 pooled pixels (architecture test)",
                counterfactual_note="a linear classifier cannot re-generate an image"))
