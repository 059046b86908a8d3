"""The explain job on the tiny real checkpoint: index + PNGs + gallery, resume, settings guard, Ray Data actors."""

import os

import pandas as pd
import pytest
from PIL import Image

from meddiff.config import ExplainConfig, RayConfig
from meddiff.errors import ResultsError
from meddiff.explain.job import explain_results
from meddiff.results import explain_schema as X
from meddiff.results.explanations import read_index

CFG = ExplainConfig(t_start=0.5, steps=3, guidance=2.0, select="extremes:2", batch_size=2, shard_size=2, num_threads=2)


def test_explain_in_process_writes_index_pngs_and_gallery(tiny_checkpoint, tiny_results, tmp_path):
    out = tmp_path / "explain"
    run = explain_results(tiny_checkpoint, tiny_results, out, CFG)
    assert run["images"] == 4 and run["explained"] == 4 and run["errors"] == 0
    index = read_index(out)
    assert len(index) == 4 * 2 and (index[X.STATUS] == "ok").all()
    assert index.groupby(X.IMAGE_ID)[X.CLASS].apply(sorted).map(list).tolist() == [[0, 1]] * 4
    assert (index.groupby(X.IMAGE_ID)[X.FACTUAL].sum() == 1).all()  # exactly one factual per labelled image
    assert set(index[X.REASON]) == {"certain", "uncertain"}
    assert (index[X.T_START] == 0.5).all() and (index[X.STEPS] == 3).all() and (index[X.GUIDANCE] == 2.0).all()
    assert (index[X.DIFF_MODE] == "signed").all() and (index[X.RECON_ERROR] > 0).all()
    for col in (X.INPUT_PNG, X.RECON_PNG, X.DIFF_PNG):
        for rel in index[col]:
            with Image.open(out / rel) as im:
                assert im.size[0] >= 128
    with Image.open(out / index[X.DIFF_PNG].iloc[0]) as im:
        assert im.mode == "RGB"  # a colormap, not gray
    assert [p.rsplit("/", 1)[-1] for p in run["gallery"]] == ["gallery-01.png"]

    # a re-run skips every finished shard; with a shard deleted it redoes only that one
    again = explain_results(tiny_checkpoint, tiny_results, out, CFG)
    assert again["explained"] == 0 and again["skipped"] == 4
    shards = sorted((out / "index").glob("shard-*.parquet"))
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    third = explain_results(tiny_checkpoint, tiny_results, out, CFG)
    assert third["explained"] == 2 and shards[0].stat().st_mtime_ns == kept
    pd.testing.assert_frame_equal(read_index(out).drop(columns=[X.CODE_VERSION]), index.drop(columns=[X.CODE_VERSION]))

    with pytest.raises(ResultsError, match="new folder"):
        explain_results(tiny_checkpoint, tiny_results, out, ExplainConfig(**{**CFG.__dict__, "guidance": 5.0}))

    # the command line: two chosen ids, two steps, without guidance
    from meddiff.cli import main

    ids = index[X.IMAGE_ID].unique()[:2]
    assert main(["explain", "--checkpoint", str(tiny_checkpoint), "--results", str(tiny_results), "--out",
                 str(tmp_path / "cli"), "--select", "ids:" + ",".join(ids), "--steps", "2", "--guidance", "0"]) == 0
    cli = read_index(tmp_path / "cli")
    assert cli[X.IMAGE_ID].unique().tolist() == list(ids) and (cli[X.REASON] == "id").all()
    assert (cli[X.GUIDANCE] == 0).all() and (cli[X.STEPS] == 2).all()


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray cluster (the tests/ray/conftest.py pattern)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_explain_on_ray_actors_matches_in_process(ray_local, tiny_checkpoint, tiny_results, tmp_path):
    # two actors of half a CPU each (whole CPUs beside Ray Data's own tasks can deadlock on two cores)
    on_ray = explain_results(tiny_checkpoint, tiny_results, tmp_path / "ray", CFG,
                             ray_cfg=RayConfig(actors=2, cpus_per_actor=0.5, threads_per_actor=1))
    local = explain_results(tiny_checkpoint, tiny_results, tmp_path / "local", CFG)
    assert on_ray["explained"] == local["explained"] == 4
    key = [X.IMAGE_ID, X.CLASS]
    a = read_index(tmp_path / "local").sort_values(key).reset_index(drop=True)
    b = read_index(tmp_path / "ray").sort_values(key).reset_index(drop=True)
    assert b[X.IMAGE_ID].tolist() == a[X.IMAGE_ID].tolist() and len(b) == 8
    assert b[X.RECON_PNG].tolist() == a[X.RECON_PNG].tolist()
    assert b[X.RECON_ERROR].tolist() == pytest.approx(a[X.RECON_ERROR].tolist(), rel=1e-4)  # same seed, same image
