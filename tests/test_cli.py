"""The command line end to end on real data: train a few steps, score, read the parquet back, resume, bad input."""

import json

import pandas as pd
from PIL import Image

from meddiff.cli import main
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results
from tests.agreement import assert_same_scores

TINY = ["--set", "model.params.block_out_channels=[16, 32]", "--set", "model.params.attention=[false, true]"]


def test_train_score_resume_on_pneumoniamnist(tmp_path, pneumonia_npz, capsys):
    args = ["train", "--config", "demo-pneumonia", "--workers", "0", "--set", f"output_dir={tmp_path}", "--set", "name=cli",
            "--set", "train.steps=6", "--set", "train.checkpoint_every=3", "--set", "train.log_every=2", *TINY]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "checkpoint:" in out.out and "step_0000006" in out.out
    assert "[train] step 6/6 (100%) | loss" in out.out and "ETA" in out.out
    run = tmp_path / "cli"
    assert (run / "loss.png").stat().st_size > 1000
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4, 6]

    # resuming a finished run trains nothing more; a longer run continues from step 6
    assert main(args[:-len(TINY)] + TINY + ["--set", "train.steps=8"]) == 0
    out = capsys.readouterr().out
    assert "resuming cli from step_0000006 (step 6/8)" in out and "step 8/8" in out

    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(run), "--out", str(res), "--n-draws", "3", "--limit", "12",
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "vote: accuracy" in out and "average: accuracy" in out
    df = read_results(res)
    assert len(df) == 12 and (df[S.STATUS] == "ok").all() and df[S.IMAGE_ID].is_unique
    assert df[S.N_DRAWS].eq(3).all() and df[S.NFE].eq(6).all()
    assert df[S.VOTES].map(sum).eq(3).all()
    assert df[S.DRAW_ERRORS].map(len).eq(2).all() and df[S.DRAW_ERRORS].map(lambda e: len(e[0])).eq(3).all()
    assert set(df[S.SPLIT]) == {"test"} and df[S.MODEL_ID].nunique() == 1
    meta = read_meta(res)
    assert meta["class_names"] == ["normal", "pneumonia"] and meta["score_config"]["n_draws"] == 3
    assert json.loads((tmp_path / "s.json").read_text())["ok"] == 12

    # an interrupted job (two shard files missing) is finished by re-running: only those shards are scored again
    res2 = tmp_path / "res2"
    score = ["score", "--checkpoint", str(run), "--n-draws", "3", "--limit", "20", "--set", "score.shard_size=5"]
    assert main(score + ["--out", str(res2)]) == 0
    shards = sorted(res2.glob("shard-*.parquet"))
    assert len(shards) == 4
    kept = {p: p.stat().st_mtime_ns for p in shards[::2]}
    for p in shards[1::2]:
        p.unlink()
    assert main(score + ["--out", str(res2)]) == 0
    assert "[score] images 20/20" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    df2 = read_results(res2)
    assert len(df2) == 20 and df2[S.IMAGE_ID].is_unique
    clean = tmp_path / "clean"
    assert main(score + ["--out", str(clean), "--set", "score.shard_size=7"]) == 0
    # the same draws in other shard (and so batch) shapes: equal up to near-tied draws (tests/agreement.py)
    assert_same_scores(read_results(clean), df2)
    # a folder planned for other rows is refused
    assert main(["score", "--checkpoint", str(run), "--out", str(res2), "--n-draws", "3", "--limit", "7"]) == 2
    assert "planned for 20 other rows" in capsys.readouterr().err


def test_corrupt_image_becomes_an_error_row(tmp_path, pneumonia_npz, capsys):
    # a tiny RGB folder + CSV data set with one truncated and one missing-after-manifest image
    root = tmp_path / "imgs"
    root.mkdir()
    rows = []
    for i in range(6):
        path = root / f"im{i}.png"
        Image.new("RGB", (20, 20), (40 * i, 10, 200 - 30 * i)).save(path)
        rows.append({"path": f"imgs/{path.name}", "y": i % 2})
    (root / "im3.png").write_bytes((root / "im3.png").read_bytes()[:30])  # truncated
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    cfg = tmp_path / "data.yaml"
    cfg.write_text(
        "data:\n  source: image_csv\n  params:\n"
        f"    csv: {tmp_path / 'labels.csv'}\n    label_column: y\n    label_names: {{0: benign, 1: melanoma}}\n"
        "  split_fractions: [0.0, 0.0, 1.0]\n"
    )
    args = ["train", "--config", "demo-isic", "--set", f"output_dir={tmp_path}", "--set", "name=rgb",
            "--set", "train.steps=2", "--set", f"data.params.csv={tmp_path / 'labels.csv'}",
            "--set", "data.params.label_column=y", "--set", "data.params.where={}",
            "--set", "data.params.exclude_labels=[]", "--set", "data.params.dedupe_column=null",
            "--set", "data.balance=false", "--set", "data.split_fractions=[1.0, 0.0, 0.0]",
            "--set", "data.derive={}",  # the preset's archive_batch rule reads ISIC ids; these are not
            "--set", "ray.max_failures=0", *TINY]
    # training (in a Ray Train worker: the preset's ray.num_workers is 1) refuses the corrupt image with a clear
    # message naming the file, unwrapped from Ray's WorkerGroupError
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "im3.png" in err
    # train on a clean copy of the CSV, then score the folder with the corrupt image: it becomes an error row
    pd.DataFrame([r for r in rows if r["path"] != "imgs/im3.png"]).to_csv(tmp_path / "clean.csv", index=False)
    args[args.index(f"data.params.csv={tmp_path / 'labels.csv'}")] = f"data.params.csv={tmp_path / 'clean.csv'}"
    assert main(args) == 0
    capsys.readouterr()
    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(tmp_path / "rgb"), "--data", str(cfg), "--out", str(res),
                 "--n-draws", "2"]) == 0
    df = read_results(res).set_index(S.IMAGE_ID)
    assert len(df) == 6
    bad = df.loc["imgs/im3"]
    assert bad[S.STATUS] == "error" and "im3.png" in bad[S.ERROR]
    assert (df.drop(index="imgs/im3")[S.STATUS] == "ok").all()
    assert "1 failed" in capsys.readouterr().out
