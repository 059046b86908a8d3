"""The results fingerprint counts every setting not explicitly excluded (so a field added later counts), ignores speed
and placement settings, and names each difference with both values; durable writes leave the old file or the new."""

from __future__ import annotations

import dataclasses
import json

import pytest

from meddiff.config import DataConfig, ScoreConfig
from meddiff.durable import atomic_write, atomic_write_json, atomic_write_parquet
from meddiff.scoring import fingerprint as F

META = {"model_id": "unet-abc", "weights_sha256": "ab" * 32, "kind": "diffusion"}


def _settings(**score):
    return F.result_settings(META, ScoreConfig(**score), DataConfig(image_size=28), "data-fp")


@pytest.mark.parametrize("change", [{"n_draws": 7}, {"seed": 3}, {"rule": "average"}, {"stopping": "exact"},
                                    {"t_max": 0.5}, {"error_target": "x"}, {"chunk_draws": 4}])
def test_settings_that_change_numbers_change_the_digest(change):
    assert F.digest(_settings(**change)) != F.digest(_settings())


@pytest.mark.parametrize("change", [{"batch_size": 4}, {"num_threads": 2}, {"device": "cpu"}, {"shard_size": 8},
                                    {"max_batch": 64}, {"limit": 5}])
def test_speed_and_placement_settings_do_not(change):
    assert F.digest(_settings(**change)) == F.digest(_settings())


def test_checkpoint_and_data_count():
    base = _settings()
    other_model = F.result_settings({**META, "model_id": "unet-def"}, ScoreConfig(), DataConfig(image_size=28), "data-fp")
    other_pixels = F.result_settings(META, ScoreConfig(), DataConfig(image_size=32), "data-fp")
    other_data = F.result_settings(META, ScoreConfig(), DataConfig(image_size=28), "other-fp")
    assert len({F.digest(s) for s in (base, other_model, other_pixels, other_data)}) == 4


def test_a_field_added_later_counts_by_default():
    @dataclasses.dataclass(frozen=True)
    class NewScore(ScoreConfig):
        temperature: float = 1.0

    a = F.result_settings(META, NewScore(), None)
    b = F.result_settings(META, NewScore(temperature=0.5), None)
    assert F.digest(a) != F.digest(b)
    assert F.differences(a, b) == ["score.temperature: 1.0 -> 0.5"]


def test_differences_name_both_values():
    diffs = F.differences(_settings(), _settings(n_draws=9, rule="average"))
    assert diffs == ["score.n_draws: 51 -> 9", "score.rule: vote -> average"]
    assert F.differences({"a": 1}, {}) == ["a: 1 -> <unset>"]
    assert F.digest({"a": 1, "b": 2}) == F.digest({"b": 2, "a": 1})


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "meta.json"
    atomic_write_json(path, {"v": 1})

    def fail(tmp):
        tmp.write_text('{"v": 2, "cut')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]  # no temporary file left behind


def test_atomic_parquet_accepts_frames_and_tables(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"id": ["a", "b"], "x": [1, 2]}, index=[5, 6])
    atomic_write_parquet(tmp_path / "f.parquet", frame)
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.column_names == ["id", "x"] and table.num_rows == 2
