"""meddiff.results.runs: capabilities come from meta.json (not from the columns), folders written before
``method_capabilities`` fall back to the method registry, and reading results imports no torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meddiff.errors import ResultsError
from meddiff.report.table import rule_views
from meddiff.results.overview import overview_row
from meddiff.results.runs import ESTIMATED, load, open_results, registry_capabilities

PLATFORM = Path(__file__).resolve().parents[2] / "platform"


def test_votes_come_from_meta_json_not_from_the_columns(write_results, tmp_path):
    # every row has pred_vote, pred_average and votes filled; only meta.json decides
    quiet = load(write_results(tmp_path / "says-no", {
        "method": "diffusion", "method_capabilities": {"votes": False, "counterfactuals": True}}))
    assert quiet.frame["pred_vote"].notna().all()
    assert not quiet.votes and quiet.capabilities.source == "meta.json" and quiet.capabilities.counterfactuals
    assert quiet.n_draws is None and quiet.rule is None and not quiet.has_draws
    assert [v.rule for v in rule_views(quiet)] == ["softmax"]
    row = overview_row(quiet, quiet.rows)
    assert row["N"] is None and np.isnan(row["acc. average rule"])

    loud = load(write_results(tmp_path / "says-yes", {
        "method": "baseline", "method_capabilities": {"votes": True, "counterfactuals": False}}))
    assert loud.votes and not loud.capabilities.counterfactuals and loud.n_draws == 3 and loud.rule == "vote"
    assert [v.rule for v in rule_views(loud)] == ["vote", "average"]
    row = overview_row(loud, loud.rows)
    assert row["N"] == 3 and not np.isnan(row["acc. average rule"]) and row["method"] == "baseline"


def test_legacy_meta_without_capabilities_falls_back_to_the_registry(write_results, tmp_path):
    for method, votes, counterfactuals in (("diffusion", True, True), ("mediffusion", False, True),
                                           ("baseline", False, False), ("sd", True, True)):
        run = open_results(write_results(tmp_path / method, {"method": method}))
        assert (run.votes, run.capabilities.counterfactuals, run.capabilities.source) == (
            votes, counterfactuals, "method registry"), method
        assert run.capabilities == registry_capabilities(method)
    # no "method": the checkpoint's kind names it
    run = open_results(write_results(tmp_path / "kind", {"checkpoint_metadata": {"kind": "diffusion"}}))
    assert run.method == "diffusion" and run.votes
    unknown = open_results(write_results(tmp_path / "unknown", {"method": "someone-elses"}))
    assert not unknown.votes and not unknown.capabilities.counterfactuals
    assert unknown.capabilities.source == "unknown method"


def test_malformed_capabilities_and_bad_folders_are_refused(write_results, tmp_path):
    bad = write_results(tmp_path / "bad", {"method": "diffusion", "method_capabilities": {"votes": "yes"}})
    with pytest.raises(ResultsError, match=r"meta.json: method_capabilities is .*expected"):
        _ = open_results(bad).votes
    with pytest.raises(ResultsError, match="not a results folder"):
        open_results(tmp_path / "nothing")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "shard-000000.parquet").write_bytes((bad / "shard-000000.parquet").read_bytes())
    (tmp_path / "torn" / "meta.json").write_text("{not json")
    with pytest.raises(ResultsError, match="meta.json: not valid JSON"):
        open_results(tmp_path / "torn")


def test_scored_rows_names_and_estimated_throughput(write_results, tmp_path):
    run = load(f"mine={write_results(tmp_path / 'results', {'method': 'diffusion', 'created': '2026-01-01T00:00:00+0000'})}")
    assert run.name == "mine" and run.total_rows == 13 and len(run.frame) == 12
    assert list(run.frame.index) == list(range(12)) and run.class_names == ("normal", "pneumonia")
    assert load(tmp_path / "results").name == f"{tmp_path.name}/results"
    speed = run.throughput()  # no record: an estimate from file times, labelled as such
    assert speed.source == ESTIMATED and speed.images_per_s > 0 and speed.device is None


def test_reading_results_imports_no_torch(write_results, tmp_path):
    folder = write_results(tmp_path / "r", {"method": "diffusion"})
    code = ("import sys, meddiff.results, meddiff.results.runs as r, meddiff.results.overview as o, "
            "meddiff.results.curves as c, meddiff.results.root as root, meddiff.results.gallery, "
            "meddiff.results.explanations\n"
            f"run = r.load({str(folder)!r})\n"
            "assert run.votes and len(run.frame) == 12 and run.throughput().source is None\n"
            "o.overview_row(run, run.rows); c.coverage_curve(run.rows)\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(('meddiff.models', "
            "'meddiff.diffusion', 'meddiff.explain')))\n"
            "assert not heavy, heavy\n")
    env = {**os.environ, "PYTHONPATH": str(PLATFORM)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_meta_json_capabilities_are_what_the_scorer_writes(tmp_path):
    from meddiff.scoring.local import results_meta

    class Manifest:
        name = "synthetic"

        def fingerprint(self):
            return "f"

        def __len__(self):
            return 0

        def data_checks(self):
            return {"grouping": "none", "metadata_columns": [], "leakage": {"level": "off"}}

    from meddiff.config import ScoreConfig

    meta = results_meta({"kind": "mediffusion", "model_id": "m", "class_names": ["a", "b"]}, Manifest(), ScoreConfig())
    assert meta["method_capabilities"] == {"votes": False, "counterfactuals": True}
    assert meta["data"]["leakage"] == {"level": "off"} and meta["data"]["grouping"] == "none"
    assert json.loads(json.dumps(meta, default=str))["method_capabilities"] == registry_capabilities(
        "mediffusion").as_meta()
