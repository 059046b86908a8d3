import json

import pytest

from meddiff.config import (ExperimentConfig, TrainConfig, config_from_json, from_dict, load_config, parse_override,
                            preset_names, save_config, to_dict)
from meddiff.errors import ConfigError


def test_presets_load_and_round_trip(tmp_path):
    assert "demo-pneumonia" in preset_names()
    for name in preset_names():
        cfg = load_config(name)
        assert "${MEDDIFF_DATA}" not in json.dumps(to_dict(cfg))
        save_config(cfg, tmp_path / "c.json")
        assert config_from_json(json.loads((tmp_path / "c.json").read_text())) == cfg


def test_overrides_and_types(tmp_path):
    cfg = load_config("demo-pneumonia", {"train.steps": 7, "score.n_draws": 11, "name": "x"})
    assert cfg.train.steps == 7 and cfg.score.n_draws == 11 and cfg.name == "x"
    assert isinstance(cfg.data.split_fractions, tuple)
    assert parse_override("score.t_max=0.8") == ("score.t_max", 0.8)
    assert parse_override("model.params.attention=[true, false]") == ("model.params.attention", [True, False])


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"train": {"stepz": 3}}, r"train: unknown key\(s\) \['stepz'\]"),
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"steps": 0}}, "train.steps: expected a positive integer"),
        ({"score": {"rule": "median"}}, "score.rule"),
        ({"data": {"channels": 2}}, "data.channels"),
        ({"data": {"split_fractions": [0.5, 0.5, 0.5]}}, "split_fractions"),
        ({"diffusion": {"cfg_dropout": 1.5}}, "cfg_dropout"),
        ({"bogus": {}}, "unknown key"),
        ({"score": {"stopping": "futility"}}, "needs score.referral"),
        ({"score": {"t_draws": "sobol"}}, "score.t_draws"),
        ({"score": {"t_draws": "stratified", "strata": 8, "chunk_draws": 4, "stopping": "mixture"}},
         "score.chunk_draws: expected a multiple of score.strata"),
        ({"score": {"antithetic": True, "stopping": "mixture"}}, "antithetic pairs are dependent"),
    ],
)
def test_bad_values_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ExperimentConfig, raw)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such file, and not a preset"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=f"{bad}: train.batch_size"):
        load_config(bad)


def test_frozen():
    with pytest.raises(Exception):
        TrainConfig().steps = 3  # type: ignore[misc]


def test_data_aspect_and_max_pixels_are_validated_and_old_bundles_keep_stretch():
    from meddiff.config import DataConfig, ExperimentConfig, config_from_json, to_dict

    with pytest.raises(ConfigError, match=r"data.aspect: expected one of pad, crop, stretch, got 'letterbox'"):
        DataConfig(aspect="letterbox")
    with pytest.raises(ConfigError, match="data.max_pixels: expected a positive integer"):
        DataConfig(max_pixels=0)
    assert (DataConfig().aspect, DataConfig().max_pixels) == ("pad", 36_000_000)
    saved = to_dict(ExperimentConfig(data=DataConfig(aspect="crop")))
    assert config_from_json(saved).data.aspect == "crop"  # a new bundle keeps what it was trained with
    del saved["data"]["aspect"]  # a bundle written before data.aspect existed
    assert config_from_json(saved).data.aspect == "stretch"
