"""Ray Train on a real local cluster: 2 CPU workers (gloo DDP), checkpoints as bundles, resume, worker failure."""

import json
import os
import signal
import threading
import time

import pytest

from meddiff.config import load_config
from meddiff.diffusion.model import load_diffusion_model
from meddiff.train import ray_trainer
from meddiff.bundle import list_bundles, read_bundle, resumable_bundle

pytestmark = pytest.mark.ray

TINY = {"block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8}


def _cfg(tmp_path, name, steps, every, **extra):
    return load_config("demo-pneumonia", {
        "output_dir": str(tmp_path), "name": name, "train.steps": steps, "train.checkpoint_every": every,
        "train.log_every": every, "train.batch_size": 16, "model.params": TINY, "ray.num_workers": 2,
        "ray.cpus_per_worker": 1.0, "ray.max_failures": 1, **extra,
    })


def test_two_workers_train_and_a_second_fit_continues(ray_local, pneumonia_npz, tmp_path):
    cfg = _cfg(tmp_path, "ddp", steps=4, every=2)
    bundle = ray_trainer.fit(cfg)
    assert bundle.name == "step_0000004" and bundle.parent == tmp_path / "ddp"
    meta = read_bundle(bundle).metadata
    assert meta["kind"] == "diffusion" and meta["step"] == 4
    model = load_diffusion_model(bundle)  # a persisted Ray checkpoint is a normal meddiff bundle
    assert model.class_names == ("normal", "pneumonia")
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]  # rank 0 logs once per step, not once per worker
    # a second fit with the same name continues from step 4
    bundle2 = ray_trainer.fit(_cfg(tmp_path, "ddp", steps=6, every=2))
    assert bundle2.name == "step_0000006"
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]


def test_killed_worker_resumes_from_last_checkpoint(ray_local, pneumonia_npz, tmp_path):
    import psutil  # installed with ray; the state API needs the dashboard, which the test cluster does not run

    cfg = _cfg(tmp_path, "fail", steps=40, every=5)
    result: dict = {}
    started = time.time()
    thread = threading.Thread(target=lambda: result.update(bundle=ray_trainer.fit(cfg)))
    thread.start()
    run = tmp_path / "fail"
    deadline = time.monotonic() + 300
    # act on the first whole checkpoint at once (a fast machine finishes the run soon after); a bundle Ray is still
    # copying is not resumable, and a group killed then rightly starts again from the last whole one
    while time.monotonic() < deadline and not any(resumable_bundle(b) for b in list_bundles(run)):
        time.sleep(0.05)
    whole = [b for b in list_bundles(run) if resumable_bundle(b)]
    assert whole, "no checkpoint was persisted before the deadline"
    first = whole[-1]
    # only this fit's workers: processes of an earlier test's worker group may still be winding down
    workers = [p for p in psutil.process_iter(["pid", "cmdline", "create_time"])
               if "RayTrainWorker" in " ".join(p.info["cmdline"] or []) and p.info["create_time"] >= started - 1]
    assert workers, "no live Ray Train worker to kill"
    os.kill(workers[0].info["pid"], signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert result["bundle"].name == "step_0000040"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines]
    assert steps[-1] == 40 and sorted(set(steps)) == list(range(5, 41, 5))  # no step skipped
    # the first worker group started from 0; the restarted one resumed from a checkpoint (not from scratch)
    starts = [x["resumed_from_step"] for x in lines]
    assert starts[0] == 0 and starts[-1] >= int(first.name.split("_")[1]), (starts, first.name)


def test_two_workers_train_a_baseline(ray_local, pneumonia_npz, tmp_path):
    """The timm baseline loop under the same Ray Train path: DDP over 2 gloo workers, a baseline bundle that scores."""
    from meddiff.methods import load_predictor
    from meddiff.methods.baseline.predictor import BaselinePredictor

    cfg = load_config("baseline-resnet18-pneumonia", {
        "output_dir": str(tmp_path), "name": "bl-ddp", "train.steps": 4, "train.checkpoint_every": 2,
        "train.log_every": 2, "train.batch_size": 16, "train.warmup_steps": 2,
        "model.params.timm_kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
        "ray.num_workers": 2, "ray.cpus_per_worker": 1.0,
    })
    bundle = ray_trainer.fit(cfg)
    assert bundle.name == "step_0000004" and bundle.parent == tmp_path / "bl-ddp"
    meta = read_bundle(bundle).metadata
    assert meta["kind"] == "baseline" and meta["step"] == 4 and meta["model"]["name"] == "resnet18"
    lines = [json.loads(x) for x in (tmp_path / "bl-ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [2, 4]  # rank 0 logs once per step
    predictor = load_predictor(bundle, cfg.score)
    assert isinstance(predictor, BaselinePredictor) and predictor.class_names == ("normal", "pneumonia")
