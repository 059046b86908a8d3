"""A hospital's DICOM folder end to end through the CLI: real PneumoniaMNIST chest X-rays written as DICOM files the way
scanners store them (12 bits in 16, half MONOCHROME1, some RLE-compressed, some without a file suffix, labels keyed by
SOPInstanceUID, two images per patient), trained on and scored with ``meddiff train`` / ``meddiff score``; no patient
identifier reaches the results; and a DICOM sent to ``/predict`` gets the answer batch scoring gave it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from meddiff.cli import main
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results
from tests.agreement import assert_same_image
from tests.dicom_files import write_dicom
from tests.servers import free_port, running_server

N_IMAGES, N_DRAWS, SEED = 48, 3, 5
SECRET_NAME, SECRET_BIRTH, SECRET_ACCESSION = "Zyxwert^Quonia", "19411207", "ACCZZ98765"


def _patient_id(i: int) -> str:
    return f"MRN-77{i // 2:04d}"  # two images per patient


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory):
    """48 real chest X-rays (24 per class) as DICOM files plus a labels CSV keyed by SOPInstanceUID."""
    from tests.conftest import require_data

    npz = require_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz")
    with np.load(npz) as f:
        images, labels = f["train_images"], f["train_labels"].reshape(-1)
    picked = np.concatenate([np.flatnonzero(labels == c)[: N_IMAGES // 2] for c in (0, 1)])
    root = tmp_path_factory.mktemp("hospital")
    rows = []
    for k, index in enumerate(picked):
        stored = images[index].astype(np.uint16) * 16  # 12-bit values (0..4080) in 16-bit words
        monochrome1 = k % 2 == 1
        if monochrome1:
            stored = 4095 - stored  # the same picture, stored inverted as MONOCHROME1 scanners do
        uid = f"1.2.826.0.1.3680043.8.498.{1000 + k}"
        name = f"study{k // 8}/img{k:03d}" + ("" if k % 3 == 0 else ".dcm")  # every third file has no suffix
        write_dicom(root / name, stored, bits_stored=12, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
                    compression="rle" if k % 4 == 2 else None, patient_id=_patient_id(k), patient_name=SECRET_NAME,
                    birth_date=SECRET_BIRTH, accession=SECRET_ACCESSION, sex="FM"[k % 2], age=f"{30 + k:03d}Y",
                    view=("PA", "AP")[k % 3 == 0], sop_instance_uid=uid)
        rows.append({"SOPInstanceUID": uid, "finding": ("normal", "pneumonia")[int(labels[index])], "name": name})
    pd.DataFrame(rows)[["SOPInstanceUID", "finding"]].to_csv(root / "labels.csv", index=False)
    return root, pd.DataFrame(rows)


def _config(root, tmp_path) -> str:
    cfg = {
        "name": "hospital", "output_dir": str(tmp_path),
        "data": {"source": "dicom", "image_size": 28, "channels": 1, "split_fractions": [0.5, 0.25, 0.25],
                 "params": {"root": str(root), "labels_csv": str(root / "labels.csv"), "label_column": "finding",
                            "label_names": {"normal": "normal", "pneumonia": "pneumonia"},
                            "key": "sop_instance_uid", "key_column": "SOPInstanceUID"}},
        "model": {"name": "unet", "params": {"block_out_channels": [16, 32], "attention": [False, True],
                                             "layers_per_block": 1, "conditioning": "embedding",
                                             "norm_num_groups": 8}},
        "diffusion": {"wavelet": True},
        "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 4, "log_every": 2, "seed": 0},
        "score": {"n_draws": N_DRAWS, "seed": SEED, "split": "test", "batch_size": 8, "shard_size": 8},
    }
    path = tmp_path / "hospital.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def trained(dicom_folder, tmp_path_factory):
    root, files = dicom_folder
    work = tmp_path_factory.mktemp("run")
    printed = io.StringIO()  # everything the commands print, searched for identifiers below
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert main(["train", "--config", _config(root, work), "--workers", "0"]) == 0
        res = work / "res"
        assert main(["score", "--checkpoint", str(work / "hospital"), "--out", str(res), "--n-draws", str(N_DRAWS),
                     "--seed", str(SEED)]) == 0
    assert "[score] images" in printed.getvalue()
    return work / "hospital", res, files, printed.getvalue()


def test_dicom_folder_trains_and_scores_without_identifiers(trained):
    run, res, files, printed = trained
    df = read_results(res)
    assert len(df) >= N_IMAGES // 4 - 2 and (df[S.STATUS] == "ok").all(), df[[S.IMAGE_ID, S.ERROR]]
    assert df[S.VOTES].map(sum).eq(N_DRAWS).all()
    # each row records how its pixels were made: 12 bits by the file's range, MONOCHROME1 inverted
    assert df[S.PREPROCESS].str.contains("DICOM").all()
    assert df[S.PREPROCESS].str.contains("invert").any() and not df[S.PREPROCESS].str.contains("invert").all()
    # groups are hashed patient ids: the two images of a patient share one, and no raw id survives
    assert df[S.GROUP].str.fullmatch(r"p-[0-9a-f]{16}").all()
    meta = df[S.METADATA].map(json.loads)
    assert {"sex", "view", "age"} <= set().union(*meta.map(set))
    assert set(meta.map(lambda m: m["sex"])) <= {"F", "M"}
    everything = df.astype(str).to_csv() + json.dumps(read_meta(res)) + printed
    for secret in (SECRET_NAME, "Zyxwert", SECRET_BIRTH, SECRET_ACCESSION, "MRN-77"):
        assert secret not in everything, secret
    for path in run.rglob("*.json"):
        text = path.read_text()
        assert not any(s in text for s in (SECRET_NAME, SECRET_BIRTH, SECRET_ACCESSION, "MRN-77")), path


@pytest.mark.ray
def test_a_dicom_sent_to_predict_gets_the_batch_answer(trained, dicom_folder, tmp_path):
    run, res, files, _ = trained
    root, _ = dicom_folder
    batch = read_results(res).set_index(S.IMAGE_ID)
    port = free_port()
    cmd = [sys.executable, "-m", "meddiff.cli", "serve", "--checkpoint", str(run), "--port", str(port),
           "--n-draws", str(N_DRAWS), "--seed", str(SEED), "--set", "num_threads=1"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, f"{url}/healthz", tmp_path / "serve.log", "meddiff serve", 240, signal.SIGINT, env):
        with httpx.Client(base_url=url, timeout=120) as client:
            for image_id in list(batch.index)[:4]:
                name = _file_of(image_id, files)
                r = client.post("/predict", params={"id": image_id}, content=(root / name).read_bytes(),
                                headers={"Content-Type": "application/dicom"})
                assert r.status_code == 200, r.text
                got = r.json()
                want = batch.loc[image_id]
                assert_same_image(want.to_dict() | {S.IMAGE_ID: image_id}, {
                    S.IMAGE_ID: image_id, S.VOTES: list(got["votes"].values()), S.PRED_VOTE: got["pred_vote"],
                    S.PRED_AVERAGE: got["pred_average"], S.MEAN_ERROR: list(got["mean_error"].values()),
                    S.UNCERTAINTY: got["uncertainty"]})
                assert SECRET_NAME not in r.text and "MRN-77" not in r.text
            # a multi-frame DICOM is refused with its reason, and the server goes on
            frames = np.stack([np.zeros((28, 28), np.uint16)] * 2)
            multi = write_dicom(tmp_path / "multi.dcm", frames, bits_stored=12)
            r = client.post("/predict", content=multi.read_bytes(), headers={"Content-Type": "application/dicom"})
            assert r.status_code == 422 and "frame" in r.json()["detail"]
            assert client.get("/healthz").status_code == 200


def _file_of(image_id: str, files: pd.DataFrame) -> str:
    """The file behind a manifest id (the dicom source's id is the relative path, or names it)."""
    for name in files["name"]:
        if image_id == name or image_id == name.removesuffix(".dcm") or image_id.endswith(name.removesuffix(".dcm")):
            return name
    raise AssertionError(f"no file for id {image_id!r}")
