"""The CLI's last line of defence: every error is one line on stderr with a meaningful exit code (2: bad input,
130: interrupted, 1: a bug, with the hint to re-run with --debug), never a traceback unless --debug asks for it."""

from __future__ import annotations

import pytest

from meddiff import cli
from meddiff.cli import main
from meddiff.errors import DataError


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, code, needle", [
    pytest.param(["score", "--checkpoint", "{tmp}/nope", "--out", "{tmp}/out"], 2, "checkpoint {tmp}/nope does not exist",
                 id="missing-checkpoint"),
    pytest.param(["score", "--checkpoint", "{tmp}", "--out", "{tmp}/out"], 2, "is not a checkpoint bundle",
                 id="folder-without-bundles"),
    pytest.param(["data", "{tmp}/missing.yaml"], 2, "missing.yaml", id="missing-config-file"),
    pytest.param(["data", "demo-pneumonia", "--set", "data.no_such_key=1"], 2, "no_such_key", id="unknown-config-key"),
    pytest.param(["calibrate", "{tmp}", "--out", "{tmp}/r.json"], 2, "{tmp}", id="results-folder-without-results"),
])
def test_bad_input_is_one_line_exit_2(argv, code, needle, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == code
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"meddiff {argv[0]}: error: ") and needle.format(tmp=tmp_path) in line


def test_bad_metadata_json_via_cli(tmp_path, capsys):
    bundle = tmp_path / "step_0000001"
    bundle.mkdir()
    (bundle / "metadata.json").write_text('{"kind": ')
    assert main(["score", "--checkpoint", str(bundle), "--out", str(tmp_path / "o")]) == 2
    assert "metadata.json: not valid JSON" in _one_line(capsys.readouterr().err)


def _raiser(exc: BaseException):
    def cmd(args):
        raise exc
    return cmd


@pytest.mark.parametrize("exc, code, needles", [
    pytest.param(DataError("rows.csv row 3: label 'x'\nnot in classes"), 2, ["error: rows.csv row 3: label 'x' not in"],
                 id="multi-line-meddiff-error"),
    pytest.param(FileNotFoundError(2, "No such file or directory", "/data/x.csv"), 2, ["/data/x.csv"], id="os-error"),
    pytest.param(PermissionError(13, "Permission denied", "/results"), 2, ["Permission denied", "/results"],
                 id="permission-error"),
    pytest.param(KeyboardInterrupt(), 130, ["interrupted; re-run the same command to resume"], id="interrupted"),
    pytest.param(ZeroDivisionError("division by zero"), 1,
                 ["internal error (ZeroDivisionError: division by zero)", "this is a bug", "--debug"], id="internal-bug"),
])
def test_every_failure_is_one_line(exc, code, needles, monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_presets", _raiser(exc))
    assert main(["presets"]) == code
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("meddiff presets: ")
    for needle in needles:
        assert needle in line


def test_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_presets", _raiser(ZeroDivisionError("boom")))
    assert main(["--debug", "presets"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: boom" in err
    assert err.strip().splitlines()[-1].startswith("meddiff presets: internal error")


def test_debug_on_a_meddiff_error(tmp_path, capsys):
    assert main(["--debug", "score", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "CheckpointError" in err


def test_success_writes_nothing_to_stderr(capsys):
    assert main(["presets"]) == 0
    assert capsys.readouterr().err == ""
