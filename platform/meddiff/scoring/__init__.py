"""Scoring: shards a manifest exactly once and writes results sets (``meddiff.results`` holds their schema and store)."""
