"""The single-image endpoint: a Ray Serve application over the same predictor core as batch scoring.

    upload.py     pure checks of an uploaded body (size, type, format, dimensions, channels) -> 4xx with a clear message
    classifier.py the request-independent core: decode, batched prediction, counterfactual explanation, JSON responses
    app.py        FastAPI ingress + the Serve deployment (``@serve.batch``), ``build_app`` for ``serve run``/``serve deploy``

    meddiff serve --checkpoint runs/demo-pneumonia --port 8000
    curl -F file=@xray.png -F id=pneumoniamnist_balanced/test/00000 http://127.0.0.1:8000/predict
"""
