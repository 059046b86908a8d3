"""Serving settings and the two new commands, without Ray: strict settings, the checkpoint's defaults, clear errors."""

import pytest

from meddiff.cli import build_parser, main
from meddiff.errors import CheckpointError, ConfigError
from meddiff.serving.classifier import ServeSettings, explain_config, score_config

META = {"config": {"score": {"n_draws": 51, "seed": 4, "batch_size": 32, "store_draws": True},
                   "explain": {"t_start": 0.3, "steps": 50, "guidance": 4.5}}}


def test_settings_are_strict_and_read_strings_as_yaml():
    s = ServeSettings.from_mapping({"checkpoint": "runs/x", "n_draws": "11", "batch_wait_timeout_s": "0.05"})
    assert (s.n_draws, s.batch_wait_timeout_s, s.checkpoint) == (11, 0.05, "runs/x")
    with pytest.raises(ConfigError, match="unknown key.*n_draw"):
        ServeSettings.from_mapping({"checkpoint": "runs/x", "n_draw": 3})
    with pytest.raises(ConfigError, match="max_batch_size"):
        ServeSettings.from_mapping({"checkpoint": "runs/x", "max_batch_size": "many"})
    with pytest.raises(ConfigError, match="checkpoint"):
        ServeSettings.from_mapping({})


def test_the_checkpoint_score_and_explain_settings_are_the_defaults():
    cfg = score_config(ServeSettings(checkpoint="x"), META)
    assert (cfg.n_draws, cfg.seed, cfg.store_draws) == (51, 4, False)
    cfg = score_config(ServeSettings(checkpoint="x", n_draws=5, seed=1), META)
    assert (cfg.n_draws, cfg.seed) == (5, 1)
    ex = explain_config(ServeSettings(checkpoint="x", explain_steps=8), META, seed=4)
    assert (ex.t_start, ex.steps, ex.guidance, ex.seed) == (0.3, 8, 4.5, 4)
    assert explain_config(ServeSettings(checkpoint="x"), {}, seed=0).steps == 256  # the paper's default


def test_build_app_refuses_a_missing_checkpoint_before_starting_anything(tmp_path):
    from meddiff.serving.app import build_app

    with pytest.raises(CheckpointError, match="does not exist"):
        build_app({"checkpoint": str(tmp_path / "nope")})


def test_serve_and_dashboard_commands(tmp_path, capsys):
    args = build_parser().parse_args(["serve", "--checkpoint", "runs/x", "--port", "9000", "--n-draws", "7",
                                      "--set", "explain_steps=4"])
    assert (args.command, args.port, args.n_draws, args.host, args.set) == ("serve", 9000, 7, "127.0.0.1",
                                                                            ["explain_steps=4"])
    args = build_parser().parse_args(["dashboard", "--results", "runs"])
    assert (args.command, args.results, args.port) == ("dashboard", "runs", 8501)
    assert main(["dashboard", "--results", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
