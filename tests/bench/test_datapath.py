"""The data-path benchmark's plumbing (never its speed): real images written per format decode to the same pixels and
coefficients, the Ray path runs the scoring pipeline's shards on a real local cluster, the JSON has its keys, and the
sizing functions give hand-computed numbers."""

import json
import math
import os
from dataclasses import astuple

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA, require_data
from meddiff.bench.datapath import (
    DataPathConfig, DataPathResult, cores_per_gpu, decode_and_transform, file_frame, gpu_images_per_s,
    local_throughput, markdown, run_datapath, scoring_flops_per_image, source_pixels, training_flops_per_image,
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


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # logical CPUs beyond the 2 physical ones keep Ray Data's bookkeeping tasks schedulable beside the actors
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


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


@pytest.mark.slow
def test_ray_path_runs_the_scoring_shards_on_every_actor_and_writes_its_json(isic_root, ray_cluster, tmp_path):
    cfg = DataPathConfig(images=8, formats=("dicom",), colours=("gray",), ray_cpus=(1, 2), repeats=1)
    result = run_datapath(tmp_path, cfg, data_root=isic_root, flops_per_forward=190e9, log=lambda _line: None)
    assert ray_cluster.is_initialized()  # a cluster it did not start is left running
    data = json.loads((tmp_path / "datapath.json").read_text())
    assert data == json.loads(json.dumps(result.to_dict()))
    assert DataPathResult.from_dict(data) == result
    assert set(data) == {"source", "image_size", "channels", "aspect", "conditions", "formats"}
    assert {"machine", "load_average_before", "load_average_after"} <= set(data["conditions"])
    assert [f["name"] for f in data["formats"]] == ["DICOM gray"]
    for f in data["formats"]:
        assert {"mean_file_kib", "total_file_mib", "images_per_s", "images_per_cpu_s", "decode_images_per_cpu_s",
                "decode_ms", "dwt_ms"} <= set(f)
        assert f["images"] == 8 and f["mean_file_kib"] > 0
        assert [r["cpus"] for r in f["ray"]] == [1, 2]
        for r in f["ray"]:
            # plan_shards cuts at least 2 shards per actor; every actor of the pool scored some
            assert r["shards"] == 2 * r["cpus"] and r["actors_used"] == r["cpus"]
            assert r["images_per_s"] > 0 and 0 < r["images_per_cpu_s"] <= r["decode_images_per_cpu_s"]
            assert r["images_per_s_per_core"] == pytest.approx(r["images_per_s"] / r["cpus"], abs=0.1)
    text = (tmp_path / "datapath.md").read_text()
    assert "| DICOM gray |" in text and "Ray 2 CPU" in text
    assert "cores per GPU" in text and "cores per GPU" not in markdown(result)  # only with --flops-per-forward


def test_cli_data_path_in_process_only(isic_root, tmp_path, monkeypatch, capsys):
    from meddiff.cli import main

    monkeypatch.setenv("MEDDIFF_DATA", str(isic_root))
    code = main(["bench", "--data-path", "--images", "2", "--ray-actors", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "datapath.json").read_text())
    assert len(data["formats"]) == 6 and all(f["ray"] == [] and f["images"] == 2 for f in data["formats"])
    assert "| JPEG rgb |" in capsys.readouterr().out


def test_sizing_functions_against_hand_computed_numbers():
    # a 190 GFLOP forward: training 3 x 190e9 = 5.7e11 FLOPs per image; A100 312e12 x 0.4 = 1.248e14 FLOP/s
    assert training_flops_per_image(190e9) == pytest.approx(5.7e11)
    train = gpu_images_per_s(5.7e11, 312e12, 0.4)
    assert train == pytest.approx(218.947368, rel=1e-6)  # 1.248e14 / 5.7e11
    assert cores_per_gpu(200.0, train) == pytest.approx(1.094737, rel=1e-6)
    # scoring at N = 501 draws x 2 classes: 1002 forwards = 1.9038e14 FLOPs per image
    assert scoring_flops_per_image(190e9, 501, 2) == pytest.approx(1.9038e14)
    score = gpu_images_per_s(1.9038e14, 312e12, 0.4)
    assert score == pytest.approx(0.655531, rel=1e-5)
    assert cores_per_gpu(200.0, score) == pytest.approx(0.00327766, rel=1e-5)


@pytest.mark.parametrize("call", [
    lambda: gpu_images_per_s(1e9, 312e12, 0.0), lambda: gpu_images_per_s(1e9, 312e12, 1.5),
    lambda: gpu_images_per_s(-1.0, 312e12, 0.4), lambda: cores_per_gpu(0.0, 10.0),
    lambda: scoring_flops_per_image(1e9, 0, 2), lambda: DataPathConfig(images=0),
    lambda: DataPathConfig(formats=("gif",)), lambda: DataPathConfig(image_size=255),
])
def test_bad_sizing_inputs_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()
