import pytest

from meddiff.results import schema as S
from meddiff.results.store import read_results


def _row(i, status="ok"):
    row = {S.IMAGE_ID: f"img{i}", S.LABEL: i % 2, S.STATUS: status}
    if status == "ok":
        row.update({S.PRED: 1, S.VOTES: [3, 4], S.PROB: [3 / 7, 4 / 7], S.UNCERTAINTY: 0.98, S.N_DRAWS: 7, S.NFE: 14,
                    S.DRAW_ERRORS: [[0.1] * 7, [0.2] * 7], S.DRAW_T: [0.5] * 7, S.MODEL_ID: "m", S.SEED: 0})
    else:
        row[S.ERROR] = "x.png: cannot identify image file"
    return row


def test_rows_to_table_follow_the_schema():
    table = S.to_table([_row(0), _row(1, "error")])
    assert table.schema == S.SCHEMA
    S.check_table(table)
    assert table.column(S.VOTES).to_pylist() == [[3, 4], None]


def test_unknown_column_is_an_error():
    with pytest.raises(KeyError, match="not in the schema"):
        S.to_table([{S.IMAGE_ID: "a", S.STATUS: "ok", "vots": [1]}])


def test_missing_column_detected():
    with pytest.raises(ValueError, match="column 'uncertainty' is missing"):
        S.check_table(S.to_table([_row(0)]).drop_columns([S.UNCERTAINTY]))


def test_shards_write_once_and_read_back(tmp_path):
    import pandas as pd

    from meddiff.scoring.shards import plan_shards, write_shard

    frame = pd.DataFrame({"id": [f"img{i}" for i in range(8)], "label": [i % 2 for i in range(8)]})
    plan = plan_shards(frame, tmp_path, shard_size=3)
    assert plan.num_shards == 3 and plan.pending() == [0, 1, 2]
    for k in plan.pending():
        write_shard(plan, k, [_row(i) for i in range(3 * k, min(3 * k + 3, 8))])
    write_shard(plan, 1, [_row(i) for i in range(3, 6)])  # a retried shard overwrites, never duplicates
    df = read_results(tmp_path)
    assert len(df) == 8 and df[S.IMAGE_ID].is_unique and plan.pending() == [] and plan.done_rows() == 8
    assert not list(tmp_path.glob(".*tmp*"))
    # the folder is tied to its plan
    import pytest as _pytest

    with _pytest.raises(Exception, match="planned for 8 other rows"):
        plan_shards(frame.iloc[:5], tmp_path, shard_size=3)


def test_scored_rows_record_the_preprocessing(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from meddiff.data import ImageDecoder
    from meddiff.methods.predictor import predict_manifest_rows

    path = tmp_path / "wide.png"
    Image.new("L", (30, 12), 90).save(path)
    predictor = SimpleNamespace(
        decoder=ImageDecoder(8, 1, aspect="pad"), class_names=("a", "b"), method="toy", model_id="m",
        cfg=SimpleNamespace(seed=0), _code_version="v",
        predict_pixels=lambda pixels, ids: [{S.PRED: 0, S.STATUS: S.STATUS_OK} for _ in ids])
    rows = [{"id": "ok", "label": 0, "path": str(path), "array_key": "", "array_index": -1},
            {"id": "gone", "label": 1, "path": str(tmp_path / "gone.png"), "array_key": "", "array_index": -1}]
    out = predict_manifest_rows(predictor, rows)
    table = S.to_table(out)
    assert table.column(S.PREPROCESS).to_pylist() == ["PNG 30x12; pad 30x12 -> 8", None]
    assert table.column(S.STATUS).to_pylist() == ["ok", "error"]
    old = table.drop_columns([S.PREPROCESS])  # a part written before the column existed reads with it null
    assert S.with_added_columns(old).column(S.PREPROCESS).null_count == 2
