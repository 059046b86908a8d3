"""The dashboard's file access under a results root with hostile symlinks: a FILE inside the root that links out of it
(a results part, meta.json, explain.json, an index part, an explanation PNG) is refused with a message naming it,
never read; the rest of the root is still browsable."""

import shutil

import pytest

from tests.dashboard.conftest import baseline_rows, diffusion_rows, write_explanations, write_run

from meddiff.errors import ResultsError
from meddiff.results.explanations import read_index
from meddiff.results.gallery import explanation_info, gallery_items
from meddiff.results.root import OutsideRootError, ResultsRoot


@pytest.fixture
def root(tmp_path):
    """root/runs/unet (a diffusion results set), root/runs/base (a baseline one), root/explanations/unet; outside/ a
    folder next to the root holding the files the links point at."""
    base = tmp_path / "root"
    rows = diffusion_rows(12, 5, seed=1, model_id="unet-aaaa", skill=0.5)
    run = write_run(base / "runs" / "unet", rows, "diffusion", "unet", "unet-aaaa", "pneumoniamnist_balanced", 5)
    write_run(base / "runs" / "base", baseline_rows(12, seed=2, model_id="r-1"), "baseline", "resnet18", "r-1",
              "pneumoniamnist_balanced", None)
    write_explanations(base / "explanations" / "unet", run, rows[:2], "unet-aaaa")
    outside = tmp_path / "outside"
    outside.mkdir()
    return ResultsRoot(base), outside


def _link_out(path, outside):
    """Move ``path`` out of the root and leave a symlink to it in its place (a readable file, outside the root)."""
    target = outside / path.name
    shutil.move(path, target)
    path.symlink_to(target)
    return target


RUN_FILES = {
    "results part symlinked out": "shard-000000.parquet",
    "meta.json symlinked out": "meta.json",
}


@pytest.mark.parametrize("name", list(RUN_FILES.values()), ids=list(RUN_FILES))
def test_a_results_set_with_a_file_linked_out_of_the_root_is_refused(root, name):
    root, outside = root
    target = _link_out(root.path / "runs" / "unet" / name, outside)
    with pytest.raises(OutsideRootError) as info:
        root.open_run("runs/unet")
    assert f"runs/unet/{name} is a symlink to {target}" in str(info.value)
    assert "outside the results root" in str(info.value)
    assert root.open_run("runs/base").method == "baseline"  # the rest of the root is still read


def test_a_link_to_etc_passwd_posing_as_a_part_is_refused(root):
    root, _ = root
    (root.path / "runs" / "unet" / "shard-000002.parquet").symlink_to("/etc/passwd")
    with pytest.raises(OutsideRootError, match="shard-000002.parquet is a symlink to /etc/passwd"):
        root.open_run("runs/unet")


def test_a_dangling_link_out_of_the_root_is_refused(root, tmp_path):
    root, _ = root
    (root.path / "runs" / "unet" / "shard-000009.parquet").symlink_to(tmp_path / "gone.parquet")
    with pytest.raises(OutsideRootError, match="shard-000009.parquet is a symlink"):
        root.open_run("runs/unet")


def test_a_link_that_stays_inside_the_root_is_followed(root):
    root, _ = root
    folder = root.path / "runs" / "unet"
    (folder / "shard-000001.parquet").rename(root.path / "kept.parquet")
    (folder / "shard-000001.parquet").symlink_to(root.path / "kept.parquet")
    assert len(root.open_run("runs/unet").rows) == 12


EXPLANATION_FILES = {
    "explain.json symlinked out": "explain.json",
    "explanation index part symlinked out": "index/shard-000000.parquet",
}


@pytest.mark.parametrize("name", list(EXPLANATION_FILES.values()), ids=list(EXPLANATION_FILES))
def test_an_explanation_folder_with_a_file_linked_out_is_refused(root, name):
    root, outside = root
    folder = root.path / "explanations" / "unet"
    target = _link_out(folder / name, outside)
    with pytest.raises(OutsideRootError, match=f"{name} is a symlink to {target}"):
        explanation_info(root, folder)


def test_an_explanation_png_linked_out_is_refused_for_that_image_only(root):
    root, outside = root
    folder = root.path / "explanations" / "unet"
    info = explanation_info(root, folder)
    index = read_index(folder)
    first_id = index["image_id"].iloc[0]
    png = folder / index[index["image_id"] == first_id]["input_png"].iloc[0]
    _link_out(png, outside)
    items = gallery_items(root, info, index)
    bad = next(i for i in items if i["image_id"] == first_id)
    assert bad["input"] is None and "outside the results root" in bad["error"]
    good = [i for i in items if i["image_id"] != first_id and i["input"] is not None]
    assert good and all(p.is_relative_to(root.path) for p in [g["input"] for g in good])


def test_a_png_folder_linked_out_refuses_the_explanation(root):
    root, outside = root
    folder = root.path / "explanations" / "unet"
    (folder / "png" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ResultsError, match="png/evil is a symlink"):
        explanation_info(root, folder)
