"""A method is one package and its registration: the toy method in ``tests/methods/plugins/meddiff_toy`` (kept outside
the library, loaded through ``MEDDIFF_METHODS``) trains on real PneumoniaMNIST with ``meddiff train``, scores with
``meddiff score``, appears in ``meddiff report`` and in the dashboard, and ``meddiff explain`` refuses it with its
reason, without any other module knowing about it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from meddiff.cli import main
from meddiff.method_registry import METHODS, PLUGINS_ENV, discover
from meddiff.results import schema as S
from meddiff.results.root import ROOT_ENV
from meddiff.results.runs import open_results
from meddiff.results.store import read_meta, read_results

PLUGINS = Path(__file__).parent / "plugins"
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv(PLUGINS_ENV, "meddiff_toy")
    discover()
    yield METHODS["toy"]
    METHODS.pop("toy", None)


def _set(overrides):
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_a_toy_method_trains_scores_reports_and_shows_in_the_dashboard(toy, tmp_path, pneumonia_npz, monkeypatch,
                                                                      capsys):
    assert toy.votes is False and toy.counterfactual is None
    runs = tmp_path / "runs"
    sets = {"method": "toy", "name": "toy", "output_dir": str(runs), "data.params.path": str(pneumonia_npz),
            "train.steps": 60, "train.batch_size": 64, "train.lr": 0.01, "train.warmup_steps": 0,
            "train.checkpoint_every": 60, "train.log_every": 20, "train.num_threads": 1, "ray.num_workers": 0}
    assert main(["train", "--config", "baseline-resnet18-pneumonia", *_set(sets)]) == 0
    out = capsys.readouterr().out
    assert "[train] step 60/60 (100%) | loss" in out and "checkpoint:" in out
    bundle_meta = json.loads((runs / "toy" / "checkpoints" / "step_0000060" / "metadata.json").read_text())
    assert bundle_meta["kind"] == "toy" and bundle_meta["config"]["method"] == "toy"

    results = runs / "toy" / "results" / "test"
    assert main(["score", "--checkpoint", str(runs / "toy"), "--out", str(results)]) == 0
    df = read_results(results)
    meta = read_meta(results)
    assert len(df) == 468 and (df[S.STATUS] == S.STATUS_OK).all() and set(df[S.METHOD]) == {"toy"}
    assert meta["method"] == "toy" and meta["method_capabilities"] == {"votes": False, "counterfactuals": False}
    assert df[S.PRED_VOTE].isna().all() and (df[S.NFE] == 1).all()
    accuracy = float((df[S.PRED] == df[S.LABEL]).mean())
    # logistic regression on 8 x 8 pooled chest X-rays: 86.1 % on this machine (seeded), above the diffusion demo
    assert accuracy > 0.8, accuracy
    run = open_results(results)
    assert run.method == "toy" and not run.votes

    report = tmp_path / "report"
    assert main(["report", f"Toy={results}", "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "Toy" in text and f"{accuracy * 100:.1f}" in text

    monkeypatch.setenv(ROOT_ENV, str(runs))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "run" in d.value.columns).set_index("run")
    assert table.loc["toy/results/test", "method"] == "toy"
    assert table.loc["toy/results/test", "accuracy"] == pytest.approx(accuracy)
    assert np.isnan(table.loc["toy/results/test", "acc. average rule"])

    assert main(["explain", "--checkpoint", str(runs / "toy"), "--results", str(results),
                 "--out", str(tmp_path / "explain")]) == 2
    err = capsys.readouterr().err
    assert "'toy' checkpoint and toy has no counterfactuals: a linear classifier cannot re-generate an image" in err


def test_an_unknown_plugin_module_is_a_clear_error(monkeypatch):
    from meddiff.errors import ConfigError

    monkeypatch.setenv(PLUGINS_ENV, "no_such_meddiff_plugin")
    with pytest.raises(ConfigError, match="MEDDIFF_METHODS: cannot import method module 'no_such_meddiff_plugin'"):
        discover()
