import pyarrow as pa
import pytest

from meddiff.scoring import schema as S
from meddiff.scoring.results import ResultsWriter, read_results, scored_ids


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


def test_writer_parts_and_readback(tmp_path):
    w = ResultsWriter(tmp_path, rows_per_file=3)
    w.add([_row(i) for i in range(7)])
    w.add([_row(7, "error")])
    w.close()
    assert len(list(tmp_path.glob("*.parquet"))) == 2 and w.written == 8
    df = read_results(tmp_path)
    assert len(df) == 8 and set(df[S.STATUS]) == {"ok", "error"}
    assert scored_ids(tmp_path) == {f"img{i}" for i in range(8)}
    assert not list(tmp_path.glob("*.tmp"))
