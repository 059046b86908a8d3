"""Hostile results folders and checkpoint bundles: every kind of damage a crash, a copy or a user can leave is found,
named in one clear message, and either repaired (a broken shard is re-scored to exactly the rows of a clean run) or
refused (a folder of other settings, a plan results depend on, a bundle whose files changed)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meddiff import bundle as B
from meddiff.cli import main
from meddiff.errors import CheckpointError, ResultsError
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results
from meddiff.scoring.shards import FINGERPRINT_KEY, PLAN_FILE

ARGS = ["--n-draws", "3", "--limit", "8", "--set", "score.shard_size=4"]
COMPARED = [S.IMAGE_ID, S.STATUS, S.PRED, S.UNCERTAINTY]


def score(checkpoint, npz, out, *extra) -> int:
    return main(["score", "--checkpoint", str(checkpoint), "--data", str(npz), "--out", str(out), *ARGS, *extra])


@pytest.fixture(scope="module")
def clean(tiny_checkpoint, tmp_path_factory) -> Path:
    """A results folder of 8 rows in 2 shards, scored once and copied by every test that damages it."""
    from tests.conftest import require_data

    npz = require_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz")
    out = tmp_path_factory.mktemp("clean") / "res"
    assert score(tiny_checkpoint, npz, out) == 0
    return out


@pytest.fixture
def damaged(clean, tmp_path) -> Path:
    out = tmp_path / "res"
    shutil.copytree(clean, out)
    return out


def _rows(path: Path) -> pa.Table:
    return pq.read_table(path)


def _empty(shard: Path, other: Path) -> None:
    shard.write_bytes(b"")


def _truncated(shard: Path, other: Path) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])


def _not_parquet(shard: Path, other: Path) -> None:
    shard.write_bytes(b"this is not a parquet file\n" * 40)


def _wrong_ids(shard: Path, other: Path) -> None:
    shutil.copyfile(other, shard)  # another shard's rows (same count, same fingerprint) under this shard's name


def _extra_rows(shard: Path, other: Path) -> None:
    table = pa.concat_tables([_rows(shard), _rows(other)])
    pq.write_table(table, shard)


def _foreign_fingerprint(shard: Path, other: Path) -> None:
    table = _rows(shard)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, FINGERPRINT_KEY: b"0" * 64}), shard)


def _no_fingerprint(shard: Path, other: Path) -> None:
    table = _rows(shard)
    meta = {k: v for k, v in table.schema.metadata.items() if k != FINGERPRINT_KEY}
    pq.write_table(table.replace_schema_metadata(meta), shard)


@pytest.mark.parametrize("damage, message", [
    pytest.param(_empty, "shard 1: empty file", id="empty-shard"),
    pytest.param(_truncated, "shard 1: truncated or unreadable parquet", id="truncated-shard"),
    pytest.param(_not_parquet, "shard 1: truncated or unreadable parquet", id="garbage-bytes-shard"),
    pytest.param(_wrong_ids, "shard 1: other ids than the plan's slice", id="shard-with-wrong-ids"),
    pytest.param(_extra_rows, "shard 1: 8 rows where the plan has 4", id="shard-with-extra-rows"),
    pytest.param(_foreign_fingerprint, "shard 1: scored with other settings (fingerprint 000000000000",
                 id="foreign-fingerprint-shard"),
    pytest.param(_no_fingerprint, "shard 1: scored with other settings (fingerprint none", id="untagged-shard"),
])
def test_broken_shard_is_rescored_to_the_clean_rows(damage, message, clean, damaged, tiny_checkpoint, pneumonia_npz,
                                                    capsys):
    damage(damaged / "shard-000001.parquet", damaged / "shard-000000.parquet")
    capsys.readouterr()
    assert score(tiny_checkpoint, pneumonia_npz, damaged) == 0
    err = capsys.readouterr().err
    assert message in err and "re-scoring its 4 rows" in err
    assert "shard 0:" not in err  # the whole shard is kept
    a = read_results(clean).sort_values(S.IMAGE_ID).reset_index(drop=True)
    b = read_results(damaged).sort_values(S.IMAGE_ID).reset_index(drop=True)
    assert len(b) == 8 and b[S.IMAGE_ID].is_unique
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED])


@pytest.mark.parametrize("flags, difference", [
    pytest.param(["--n-draws", "5"], "score.n_draws: 3 -> 5", id="other-n-draws"),
    pytest.param(["--seed", "7"], "score.seed: 0 -> 7", id="other-seed"),
    pytest.param(["--rule", "average"], 'score.rule: vote -> average', id="other-rule"),
    pytest.param(["--stopping", "exact"], "score.stopping: none -> exact", id="other-stopping"),
])
def test_rescoring_with_other_settings_is_refused(flags, difference, damaged, tiny_checkpoint, pneumonia_npz, capsys):
    before = {p.name: p.read_bytes() for p in damaged.glob("*.parquet")}
    meta_before = (damaged / "meta.json").read_text()
    capsys.readouterr()
    assert score(tiny_checkpoint, pneumonia_npz, damaged, *flags) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(damaged) in err and difference in err and "--out" in err and "--force-new" in err
    assert {p.name: p.read_bytes() for p in damaged.glob("*.parquet")} == before
    assert (damaged / "meta.json").read_text() == meta_before  # meta.json still describes the rows it holds


def test_force_new_writes_to_a_fresh_sibling(damaged, tiny_checkpoint, pneumonia_npz, capsys):
    capsys.readouterr()
    assert score(tiny_checkpoint, pneumonia_npz, damaged, "--n-draws", "5", "--force-new") == 0
    out = capsys.readouterr()
    sibling = damaged.with_name("res-2")
    assert f"writing to {sibling}" in out.err and f"results: {sibling}" in out.out
    assert read_meta(sibling)["fingerprint"]["settings"]["score.n_draws"] == 5
    assert read_meta(damaged)["fingerprint"]["settings"]["score.n_draws"] == 3
    assert set(read_results(sibling)[S.N_DRAWS]) == {5}
    # the same settings again resume res-2; the original settings still go to the original folder
    assert score(tiny_checkpoint, pneumonia_npz, damaged, "--n-draws", "5", "--force-new") == 0
    assert not damaged.with_name("res-3").exists()
    assert score(tiny_checkpoint, pneumonia_npz, damaged, "--force-new") == 0
    assert not damaged.with_name("res-3").exists()
    assert score(tiny_checkpoint, pneumonia_npz, damaged, "--seed", "4", "--force-new") == 0
    assert read_meta(damaged.with_name("res-3"))["fingerprint"]["settings"]["score.seed"] == 4


def test_corrupt_plan_with_results_is_refused(damaged, tiny_checkpoint, pneumonia_npz, capsys):
    (damaged / PLAN_FILE).write_text('{"shard_size": 4, "num_ro')
    capsys.readouterr()
    assert score(tiny_checkpoint, pneumonia_npz, damaged) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "_plan.json: unreadable plan" in err and "2 results shard(s) depend on it" in err and "--out" in err


def test_corrupt_plan_without_results_is_rebuilt(clean, damaged, tiny_checkpoint, pneumonia_npz):
    for shard in damaged.glob("shard-*.parquet"):
        shard.unlink()
    (damaged / PLAN_FILE).write_text("[1, 2")
    assert score(tiny_checkpoint, pneumonia_npz, damaged) == 0
    assert json.loads((damaged / PLAN_FILE).read_text())["num_rows"] == 8
    pd.testing.assert_frame_equal(read_results(clean).sort_values(S.IMAGE_ID).reset_index(drop=True)[COMPARED],
                                  read_results(damaged).sort_values(S.IMAGE_ID).reset_index(drop=True)[COMPARED])


def test_corrupt_meta_json_is_named_and_rewritten_by_a_rerun(damaged, tiny_checkpoint, pneumonia_npz):
    (damaged / "meta.json").write_text('{"method": "diff')
    with pytest.raises(ResultsError, match=r"meta\.json: not valid JSON"):
        read_meta(damaged)
    assert score(tiny_checkpoint, pneumonia_npz, damaged) == 0
    assert read_meta(damaged)["fingerprint"]["settings"]["score.n_draws"] == 3


# ---- checkpoint bundles ----------------------------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(tiny_checkpoint, tmp_path) -> Path:
    out = tmp_path / "checkpoints" / B.bundle_name(20)
    shutil.copytree(tiny_checkpoint, out)
    return out


def _flip_weights(bundle: Path) -> str:
    path = bundle / B.MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return "model.safetensors: sha256"


def _drop_weights(bundle: Path) -> str:
    (bundle / B.MODEL_FILE).unlink()
    return "model.safetensors is missing"


def _drop_train_state(bundle: Path) -> str:
    (bundle / B.TRAIN_STATE_DIR / B.OPTIMIZER_FILE).unlink()
    return "train_state/optimizer.safetensors is missing"


def _bad_json(bundle: Path) -> str:
    (bundle / B.METADATA_FILE).write_text('{"kind": "diffusion", ')
    return "metadata.json: not valid JSON"


def _metadata_list(bundle: Path) -> str:
    (bundle / B.METADATA_FILE).write_text("[]")
    return "metadata.json: expected a JSON object, found list"


def _no_metadata(bundle: Path) -> str:
    (bundle / B.METADATA_FILE).unlink()
    return "metadata.json is missing"


BROKEN_BUNDLES = [
    pytest.param(_flip_weights, id="weights-sha-mismatch"),
    pytest.param(_drop_weights, id="missing-weights"),
    pytest.param(_drop_train_state, id="missing-recorded-file"),
    pytest.param(_bad_json, id="bad-metadata-json"),
    pytest.param(_metadata_list, id="metadata-not-an-object"),
]


@pytest.mark.parametrize("damage", BROKEN_BUNDLES)
def test_named_broken_bundle_is_an_error(damage, bundle_copy):
    message = damage(bundle_copy)
    with pytest.raises(CheckpointError) as info:
        B.read_bundle(bundle_copy)
    assert message in str(info.value) and str(bundle_copy) in str(info.value)


def test_sha_mismatch_names_both_hashes(bundle_copy):
    recorded = json.loads((bundle_copy / B.METADATA_FILE).read_text())["files_sha256"][B.MODEL_FILE]
    _flip_weights(bundle_copy)
    with pytest.raises(CheckpointError) as info:
        B.read_bundle(bundle_copy)
    found = B.file_sha256(bundle_copy / B.MODEL_FILE)
    assert recorded in str(info.value) and found in str(info.value) and found != recorded


def test_load_weights_refuses_weights_changed_after_reading(bundle_copy):
    bundle = B.read_bundle(bundle_copy)
    _flip_weights(bundle_copy)
    with pytest.raises(CheckpointError, match="does not match"):
        B.load_weights(bundle, None)  # refused before the architecture is needed


@pytest.mark.parametrize("damage", BROKEN_BUNDLES + [pytest.param(_no_metadata, id="partial-no-metadata")])
def test_broken_newest_bundle_falls_back_to_the_previous_whole_one(damage, bundle_copy, caplog):
    previous = bundle_copy.with_name(B.bundle_name(10))
    shutil.copytree(bundle_copy, previous)
    damage(bundle_copy)
    with caplog.at_level(logging.WARNING, logger="meddiff.bundle"):
        bundle = B.read_bundle(bundle_copy.parent)
        assert B.read_bundle(bundle_copy.parent.parent).path == previous  # a run folder too
    assert bundle.path == previous
    warning = caplog.records[0].getMessage()
    assert str(bundle_copy) in warning and str(previous) in warning and "previous whole bundle" in warning


def test_no_whole_bundle_left_is_the_newest_error(bundle_copy):
    previous = bundle_copy.with_name(B.bundle_name(10))
    shutil.copytree(bundle_copy, previous)
    _drop_weights(previous)
    _flip_weights(bundle_copy)
    with pytest.raises(CheckpointError, match="sha256") as info:
        B.read_bundle(bundle_copy.parent)
    assert str(bundle_copy) in str(info.value)


def test_hashes_are_cached_until_the_file_changes(bundle_copy, monkeypatch):
    calls = []
    real = B.file_sha256
    monkeypatch.setattr(B, "file_sha256", lambda p: calls.append(Path(p).name) or real(p))
    B._HASH_CACHE.clear()
    B.read_bundle(bundle_copy)
    first = len(calls)
    B.read_bundle(bundle_copy)
    assert first > 0 and len(calls) == first
    _flip_weights(bundle_copy)
    with pytest.raises(CheckpointError):
        B.read_bundle(bundle_copy)
    assert calls[first:] == [B.MODEL_FILE]


def test_unknown_model_kind_is_one_line(bundle_copy, pneumonia_npz, tmp_path, capsys):
    meta = json.loads((bundle_copy / B.METADATA_FILE).read_text())
    meta["kind"] = "no-such-method"
    (bundle_copy / B.METADATA_FILE).write_text(json.dumps(meta))
    capsys.readouterr()
    assert score(bundle_copy, pneumonia_npz, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "no-such-method" in err


def test_broken_bundle_via_cli_is_one_line(bundle_copy, pneumonia_npz, tmp_path, capsys):
    _flip_weights(bundle_copy)
    capsys.readouterr()
    assert score(bundle_copy, pneumonia_npz, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "model.safetensors: sha256" in err and "does not match" in err


def test_rescoring_with_another_checkpoint_is_refused(damaged, tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    other = tmp_path / "other" / B.bundle_name(20)
    shutil.copytree(tiny_checkpoint, other)
    meta = json.loads((other / B.METADATA_FILE).read_text())
    old_id, meta["model_id"] = meta["model_id"], "unet-retrained0000"
    (other / B.METADATA_FILE).write_text(json.dumps(meta))
    capsys.readouterr()
    assert score(other, pneumonia_npz, damaged) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"checkpoint.model_id: {old_id} -> unet-retrained0000" in line


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: p.unlink(), id="deleted-slice"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:40]), id="truncated-slice"),
])
def test_broken_plan_slice_is_rewritten_from_the_data(damage, clean, damaged, tiny_checkpoint, pneumonia_npz, capsys):
    (damaged / "shard-000001.parquet").unlink()
    damage(damaged / "_shards" / "shard-000001.parquet")
    capsys.readouterr()
    assert score(tiny_checkpoint, pneumonia_npz, damaged) == 0
    assert "shard 1: its planned slice shard-000001.parquet is missing or unreadable" in capsys.readouterr().err
    pd.testing.assert_frame_equal(read_results(clean).sort_values(S.IMAGE_ID).reset_index(drop=True)[COMPARED],
                                  read_results(damaged).sort_values(S.IMAGE_ID).reset_index(drop=True)[COMPARED])
