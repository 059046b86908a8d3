"""The dashboard's image lookup (meddiff/results/image.py) for the dicom, nih_cxr14, mimic_cxr and templated
image_csv sources: the pixels of the file the source's manifest points at."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import ResultsError
from meddiff.results.image import image_pixels
from tests.data.test_dicom_source import labels_csv, make_folder
from tests.data.test_mimic_cxr import make_mimic
from tests.data.test_nih_cxr14 import make_nih
from tests.hostile.test_sources import write_image


def meta(source, params):
    return {"checkpoint_metadata": {"config": {"data": {"source": source, "params": params}}}}


def check_all_rows(source, params):
    """Every manifest row's image is found, and it is the file the manifest names."""
    m = build_manifest(DataConfig(source=source, params=params))
    for image_id, path in zip(m.frame["id"][:6], m.frame["path"][:6]):
        shown = image_pixels(meta(source, params), image_id)
        if source != "dicom":
            assert (shown == np.asarray(Image.open(path).convert("L"))).all()
        else:
            assert shown.dtype == np.uint8 and shown.shape == (8, 8) and shown.max() == 255
    return m


def test_nih_and_mimic(tmp_path):
    check_all_rows("nih_cxr14", {"root": str(make_nih(tmp_path / "a", write_image, n_patients=8)),
                                 "finding": "Effusion"})
    root = make_mimic(tmp_path / "b", write_image, n_subjects=6)
    check_all_rows("mimic_cxr", {"root": str(root), "finding": "Pleural Effusion"})
    with pytest.raises(ResultsError, match="no dicom_id 'nope'"):
        image_pixels(meta("mimic_cxr", {"root": str(root)}), "nope")


@pytest.mark.parametrize("key", ["path", "sop_instance_uid"])
def test_dicom_by_path_and_by_uid(tmp_path, key):
    root, rows = make_folder(tmp_path)
    params = {"root": str(root), "labels_csv": str(labels_csv(tmp_path, rows, key=key)), "label_column": "y",
              "label_names": {0: "neg", 1: "pos"}, "key": key, "id_from": key}
    check_all_rows("dicom", params)
    with pytest.raises(ResultsError, match="no DICOM file"):
        image_pixels(meta("dicom", params), "series9/none")


def test_image_csv_path_template(tmp_path):
    write_image(tmp_path / "d1" / "x.png", mode="L", seed=3)
    (tmp_path / "labels.csv").write_text("ImageDir,ImageID,y\nd1,x.png,1\n")
    shown = image_pixels(meta("image_csv", {"csv": str(tmp_path / "labels.csv"), "id_column": "ImageID",
                                            "path_template": "{ImageDir}/{ImageID}"}), "x.png")
    assert (shown == np.asarray(Image.open(tmp_path / "d1" / "x.png"))).all()
