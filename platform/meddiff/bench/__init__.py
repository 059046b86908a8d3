"""Benchmarks: the paper's reference loop against meddiff's engine, early exit, Ray scoring and scale (``meddiff bench``)."""
