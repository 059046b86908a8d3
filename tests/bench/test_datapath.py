"""The data-path benchmark's plumbing (never its speed): real images written per format decode to the same pixels and
coefficients, the CLI writes its JSON, and `meddiff plan --datapath` sizes CPUs per GPU from the slowest format (the Ray
pipeline: tests/ray/test_datapath_pipeline.py)."""

import json
import math
import os
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA, require_data
from meddiff.bench.datapath import (
    DataPathConfig, decode_and_transform, file_frame, local_throughput, read_datapath, slowest_per_core, source_pixels,
    write_files,
)
from meddiff.data import ImageDecoder
from meddiff.data.wavelet import haar_dwt
from meddiff.errors import ConfigError

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
MAGIC = {"jpeg": (0, b"\xff\xd8\xff"), "png": (0, b"\x89PNG"), "dicom": (128, b"DICM")}


@pytest.fixture
def isic_root():
    require_data("isic_skin_180/labels.csv")
    return SHARED_DATA


@pytest.mark.parametrize("fmt", ["jpeg", "png", "dicom"])
@pytest.mark.parametrize("colour", ["gray", "rgb"])
def test_real_images_per_format_decode_to_their_pixels_and_coefficients(isic_root, tmp_path, fmt, colour):
    pixels, source = source_pixels(3, 256, isic_root)
    assert source.startswith("isic_skin_180") and all(p.shape == (256, 256, 3) and p.dtype == np.uint8 for p in pixels)
    paths = write_files(tmp_path, pixels, fmt, colour)
    offset, magic = MAGIC[fmt]
    assert all(p.read_bytes()[offset:offset + len(magic)] == magic for p in paths)
    decoder = ImageDecoder(256, 3, aspect="pad")
    frame = file_frame(paths, f"{fmt} {colour}")
    rows = frame.to_dict("records")
    coefficients, timing = decode_and_transform(decoder, rows)
    images = torch.stack([decoder.decode_row(r) for r in rows])
    assert coefficients.shape == (3, 12, 128, 128) and timing.decode_s > 0 and timing.dwt_s > 0
    assert torch.equal(coefficients, haar_dwt(images))
    if fmt != "jpeg":  # lossless: the decoder gives back the written pixels (gray: PIL's luma, repeated to 3 planes)
        from PIL import Image

        want = [np.asarray(Image.fromarray(p).convert("L"))[..., None].repeat(3, 2) if colour == "gray" else p
                for p in pixels]
        expected = torch.from_numpy(np.stack(want)).permute(0, 3, 1, 2).float() / 127.5 - 1
        assert torch.allclose(images, expected, atol=1e-5)
    timing = local_throughput(decoder, frame, shard_size=2, repeats=1)
    assert all(math.isfinite(x) and x >= 0 for x in astuple(timing)) and timing.decode_cpu_s > 0


def test_cli_data_path_in_process_only(isic_root, tmp_path, monkeypatch, capsys):
    from meddiff.cli import main

    monkeypatch.setenv("MEDDIFF_DATA", str(isic_root))
    code = main(["bench", "--data-path", "--images", "2", "--ray-actors", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "datapath.json").read_text())
    assert len(data["formats"]) == 6 and all(f["ray"] == [] and f["images"] == 2 for f in data["formats"])
    assert "| JPEG rgb |" in capsys.readouterr().out
    # meddiff plan sizes CPUs per GPU from the slowest format's rate per core
    rate = slowest_per_core(read_datapath(tmp_path / "datapath.json"))
    config = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "chexpert-resnet18-a100.yaml"
    assert main(["plan", str(config), "--datapath", str(tmp_path / "datapath.json"), "--json", str(tmp_path / "p.json")]) == 0
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["decode_rate"] == rate and plan["cpus_per_worker"] == math.ceil(plan["train_images_per_s"] / rate)
    assert f"at {rate:g} images/s per core" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert main(["plan", str(config), "--datapath", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: expected the datapath.json of `meddiff bench --data-path`" in capsys.readouterr().err


@pytest.mark.parametrize("call", [
    lambda: DataPathConfig(images=0),
    lambda: DataPathConfig(formats=("gif",)), lambda: DataPathConfig(image_size=255),
])
def test_bad_sizing_inputs_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()
