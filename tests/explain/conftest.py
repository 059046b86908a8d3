"""A scored results folder of the session's tiny checkpoint (8 test images, 3 draws) for the explain tests."""

import pytest


@pytest.fixture(scope="session")
def tiny_results(tiny_checkpoint, tmp_path_factory):
    from meddiff.config import ScoreConfig, config_from_json
    from meddiff.scoring.local import score_checkpoint
    from meddiff.bundle import read_bundle

    out = tmp_path_factory.mktemp("tiny-results") / "res"
    data = config_from_json(read_bundle(tiny_checkpoint).metadata["config"]).data
    score_checkpoint(tiny_checkpoint, data, ScoreConfig(n_draws=3, limit=8, shard_size=8, batch_size=8), out)
    return out
