"""MLflow tracking (meddiff.tracking) read back through MLflow's own client: a tiny training and its scoring and
report runs, a resumed run, tracking off writing nothing, and a store that cannot be opened."""

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from meddiff.cli import main
from meddiff.config import TrackingConfig, load_config
from meddiff.errors import TrackingError
from meddiff.tracking import NO_RUN, flatten, open_run, param_key
from tests.conftest import TINY_MODEL


def _tiny(tmp_path, **overrides):
    return load_config("demo-pneumonia", {
        "output_dir": str(tmp_path), "name": "tiny", "train.steps": 4, "train.log_every": 2,
        "train.checkpoint_every": 4, "model.params": TINY_MODEL, "train.num_threads": 2,
        "data.leakage_check": "groups", **overrides})  # (no duplicate hashing: not what these tests are about)


def _runs(client, job):
    experiment = client.get_experiment_by_name("tiny")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`meddiff.job` = '{job}'")


@pytest.mark.slow
def test_training_scoring_and_report_runs_read_back(tmp_path, pneumonia_npz, capsys):
    from meddiff.methods.diffusion.train import train_diffusion

    bundle = train_diffusion(_tiny(tmp_path, **{"tracking.enabled": True, "tracking.log_bundle": False}))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [train] = _runs(client, "train")
    assert train.info.status == "FINISHED" and train.info.run_name == "train tiny"
    assert train.data.params["train.steps"] == "4" and train.data.params["model.name"] == "unet"
    assert train.data.params["data.source"] == "medmnist" and int(train.data.params["parameters"]) > 0
    assert train.data.tags["meddiff.code_version"].startswith("meddiff ")
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert train.data.tags["meddiff.model_id"] == metadata["model_id"]
    logged = [json.loads(line) for line in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(train.info.run_id, "loss")  # the loss curve, step by step
    assert [(m.step, round(m.value, 6)) for m in history] == [(r["step"], round(r["loss"], 6)) for r in logged]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "steps_per_s")] == [2, 4]
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"bundle", "loss.png", "metrics.jsonl"}
    # log_bundle false: the bundle's metadata only, no weights
    assert [a.path for a in client.list_artifacts(train.info.run_id, "bundle")] == ["bundle/metadata.json"]
    local = client.download_artifacts(train.info.run_id, "bundle/metadata.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read())["model_id"] == metadata["model_id"]
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the store, never under the working directory

    # scoring: the checkpoint's tracking settings put the run beside its training run
    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(bundle), "--out", str(res), "--n-draws", "3", "--limit", "8",
                 "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    [score] = _runs(client, "score")
    assert score.info.status == "FINISHED" and score.data.tags["meddiff.train_run"] == train.info.run_id
    assert score.data.params["score.n_draws"] == "3" and score.data.params["score.limit"] == "8"
    assert score.data.metrics["accuracy_vote"] == pytest.approx(summary["accuracy_vote"])
    assert score.data.metrics["ok"] == 8 and score.data.metrics["throughput_images"] == 8
    assert score.data.metrics["throughput_images_per_s"] > 0
    meta = json.loads((res / "meta.json").read_text())
    assert meta["tracking"]["run_id"] == score.info.run_id
    assert [a.path for a in client.list_artifacts(score.info.run_id, "results")] == ["results/meta.json"]

    # the report goes to the scoring run its results folder names
    assert main(["report", str(res), "--out", str(tmp_path / "report"), "--boot", "20", "--repeats", "2"]) == 0
    assert "report/report.md" in {a.path for a in client.list_artifacts(score.info.run_id, "report")}

    # --set tracking.enabled=false on the command line: a second scoring job logs nothing
    assert main(["score", "--checkpoint", str(bundle), "--out", str(tmp_path / "res2"), "--n-draws", "3",
                 "--limit", "4", "--set", "tracking.enabled=false"]) == 0
    assert len(_runs(client, "score")) == 1 and "tracking" not in json.loads((tmp_path / "res2" / "meta.json").read_text())

    # a finished run re-run with the same settings continues its MLflow run; extended to more steps, a new run
    # (params are immutable) names the one it continues
    train_diffusion(_tiny(tmp_path, **{"tracking.enabled": True, "tracking.log_bundle": False}))
    assert len(_runs(client, "train")) == 1
    train_diffusion(_tiny(tmp_path, **{"tracking.enabled": True, "tracking.log_bundle": False, "train.steps": 6}))
    runs = _runs(client, "train")
    assert len(runs) == 2
    newer = next(r for r in runs if r.info.run_id != train.info.run_id)
    assert newer.data.tags["meddiff.continues_run"] == train.info.run_id
    assert [m.step for m in client.get_metric_history(newer.info.run_id, "loss")] == [6]
    assert "MLflow run" in capsys.readouterr().out


def test_tracking_off_writes_nothing_and_imports_no_mlflow(tmp_path, pneumonia_npz):
    from meddiff.methods.diffusion.train import train_diffusion

    cfg = _tiny(tmp_path, **{"train.steps": 2, "train.checkpoint_every": 2})
    assert cfg.tracking == TrackingConfig() and not cfg.tracking.enabled  # off unless a config (or the demo) says so
    train_diffusion(cfg)
    found = sorted(p.name for p in tmp_path.rglob("*") if "mlflow" in p.name or "mlartifacts" in p.name)
    assert found == []
    code = ("import sys; from meddiff.config import TrackingConfig; from meddiff.tracking import open_run, NO_RUN; "
            "assert open_run(TrackingConfig(), '.', 'x', 'r') is NO_RUN; "
            "assert not [m for m in sys.modules if m.startswith('mlflow')]")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_store_that_cannot_be_opened_is_an_error_naming_the_uri(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="tracking.uri .*file/mlflow.db.*tracking.enabled=false"):
        open_run(TrackingConfig(enabled=True, uri=uri), tmp_path, "x", "r")
    assert open_run(TrackingConfig(enabled=False, uri=uri), tmp_path, "x", "r") is NO_RUN


def test_flatten_and_param_names():
    assert flatten({"train": {"lr": 1e-4, "steps": 3}, "data": {"params": {}}, "name": "x"}) == {
        "train.lr": 1e-4, "train.steps": 3, "data.params": {}, "name": "x"}
    # label names and derived columns are config keys too; MLflow refuses names with other characters
    assert param_key("data.params.label_names.Pleural Effusion (L)") == "data.params.label_names.Pleural Effusion _L_"
    assert param_key("data.derive.age/decade-1_x") == "data.derive.age/decade-1_x"
