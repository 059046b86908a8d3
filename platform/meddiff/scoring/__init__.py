"""Scoring: the predictor core shared by batch scoring and serving, the results schema, and parquet results sets."""
