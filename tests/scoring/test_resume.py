"""Resume after damage: a results shard cut short by a crash is found on re-run, re-scored, and the folder ends with
exactly the rows of an uninterrupted run (no id lost, none duplicated, the same predictions)."""

from __future__ import annotations

import pandas as pd

from meddiff.cli import main
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results

ARGS = ["--n-draws", "3", "--limit", "12", "--set", "score.shard_size=4"]


def _score(checkpoint, npz, out, *extra) -> int:
    return main(["score", "--checkpoint", str(checkpoint), "--data", str(npz), "--out", str(out), *ARGS, *extra])


def test_truncated_shard_is_rescored_to_the_rows_of_a_clean_run(tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    assert _score(tiny_checkpoint, pneumonia_npz, clean) == 0
    assert _score(tiny_checkpoint, pneumonia_npz, damaged) == 0
    shard = damaged / "shard-000001.parquet"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a crash in the middle of a copy or of a non-durable write
    capsys.readouterr()

    assert _score(tiny_checkpoint, pneumonia_npz, damaged) == 0
    err = capsys.readouterr().err
    assert "shard 1: truncated or unreadable parquet" in err and "re-scoring its 4 rows" in err

    a = read_results(clean).sort_values(S.IMAGE_ID).reset_index(drop=True)
    b = read_results(damaged).sort_values(S.IMAGE_ID).reset_index(drop=True)
    assert len(b) == 12 and b[S.IMAGE_ID].is_unique
    assert list(a[S.IMAGE_ID]) == list(b[S.IMAGE_ID])
    cols = [S.IMAGE_ID, S.STATUS, "pred", S.UNCERTAINTY]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    fp = read_meta(damaged)["fingerprint"]
    assert fp["settings"]["score.n_draws"] == 3 and fp["digest"] == read_meta(clean)["fingerprint"]["digest"]


def test_a_complete_folder_is_left_alone(tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    out = tmp_path / "res"
    assert _score(tiny_checkpoint, pneumonia_npz, out) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    capsys.readouterr()
    assert _score(tiny_checkpoint, pneumonia_npz, out) == 0
    assert "re-scoring" not in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")} == before
