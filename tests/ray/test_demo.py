"""``meddiff demo`` end to end on a real local Ray cluster (tiny settings): Ray Train, Ray Data scoring, the printed
summary, and its MLflow runs read back through MLflow's client: one demo run with the training run (logged once, by
rank 0 of two Ray Train workers) and the scoring run nested under it."""

import json

import pytest
from mlflow.tracking import MlflowClient

from meddiff.demo import run_demo
from tests.conftest import TINY_MODEL

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_demo_runs_on_ray_and_logs_nested_mlflow_runs(ray_local, pneumonia_npz, tmp_path, capsys):
    summary = run_demo("pneumonia", output_dir=str(tmp_path), overrides={
        "data.leakage_check": "groups", "train.steps": 4, "train.log_every": 2, "train.checkpoint_every": 4, "model.params": TINY_MODEL,
        "score.n_draws": 3, "score.limit": 16, "score.shard_size": 8,
        "ray.num_workers": 2, "ray.cpus_per_worker": 1, "ray.actors": 2, "ray.cpus_per_actor": 0.5})
    out = capsys.readouterr().out
    assert summary["ok"] == 16 and "vote: accuracy" in out
    assert json.loads((tmp_path / "demo-pneumonia" / "summary.json").read_text())["ok"] == 16
    uri = f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in out.splitlines()[-1]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("demo-pneumonia")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs[summary["mlflow_run_id"]]
    assert parent.info.run_name == "demo demo-pneumonia" and parent.info.status == "FINISHED"
    assert parent.data.metrics["accuracy_vote"] == pytest.approx(summary["accuracy_vote"])
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["meddiff.job"] for r in children) == ["score", "train"]  # one training run: rank 0's
    assert len(runs) == 3
    train = next(r for r in children if r.data.tags["meddiff.job"] == "train")
    score = next(r for r in children if r.data.tags["meddiff.job"] == "score")
    assert train.data.params["ray.num_workers"] == "2" and train.data.params["world_size"] == "2"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [2, 4]
    bundle = {a.path for a in client.list_artifacts(train.info.run_id, "bundle")}
    assert {"bundle/metadata.json", "bundle/model.safetensors"} <= bundle  # the whole bundle by default
    assert "loss.png" in {a.path for a in client.list_artifacts(train.info.run_id)}
    assert score.data.tags["meddiff.train_run"] == train.info.run_id and score.data.params["ray.actors"] == "2"
    assert score.data.metrics["ok"] == 16 and score.data.metrics["throughput_images_per_s"] > 0
