"""The data-path benchmark through the scoring job's Ray Data pipeline on a real local cluster
(platform/meddiff/bench/datapath.py): every actor of a pool runs the scoring shards, the JSON round-trips, and the rate
sizing uses is one actor's decode rate per CPU-second."""

import json

import pytest

from tests.conftest import SHARED_DATA, require_data
from meddiff.bench.datapath import DataPathConfig, DataPathResult, per_core, read_datapath, run_datapath, slowest_per_core


@pytest.mark.slow
def test_ray_path_runs_the_scoring_shards_on_every_actor_and_writes_its_json(ray_local, tmp_path):
    cfg = DataPathConfig(images=8, formats=("dicom",), colours=("gray",), ray_cpus=(1, 2), repeats=1)
    require_data("isic_skin_180/labels.csv")
    result = run_datapath(tmp_path, cfg, data_root=SHARED_DATA, log=lambda _line: None)
    assert ray_local.is_initialized()  # a cluster it did not start is left running
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
    assert read_datapath(tmp_path / "datapath.json") == result
    # sizing uses one actor's decode rate per CPU-second without the DWT
    assert slowest_per_core(result) == per_core(result.formats[0]) == data["formats"][0]["ray"][0]["decode_images_per_cpu_s"]
    assert f"{slowest_per_core(result):.1f} images per CPU-second" in text
