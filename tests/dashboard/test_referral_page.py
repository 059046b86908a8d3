"""The referral page (dashboard/views/referral.py) on the test results root: the threshold, coverage and risk it
shows are the held-out figures of meddiff.results.selective, and they follow alpha, delta and the rule."""

import pytest
from streamlit.testing.v1 import AppTest

from meddiff.results.runs import open_results, scored
from meddiff.results.root import ROOT_ENV
from meddiff.results.selective import held_out

from tests.dashboard.test_pages import APP, UNET, frame_with, texts


def test_referral_page_shows_the_held_out_figures(results_root, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(results_root["root"]))
    at = AppTest.from_file(str(APP), default_timeout=60).switch_page("views/referral.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="referral_run").set_value(UNET).run()
    frame = scored(open_results(results_root["root"] / UNET).rows).reset_index(drop=True)
    seen = set()
    for alpha, delta, rule in ((0.3, 0.2, "ltt"), (0.3, 0.2, "naive"), (0.05, 0.05, "ltt")):
        at.number_input(key="referral_alpha").set_value(alpha).run()
        at.number_input(key="referral_delta").set_value(delta).run()
        at.radio(key="referral_rule").set_value(rule).run()
        assert not at.exception, at.exception
        expect = held_out(frame, rule, alpha, delta)
        shown = frame_with(at, "test coverage").iloc[0]
        assert shown["rule"] == rule and shown["calibration rows"] == expect.chosen.n
        assert shown["test coverage"] == pytest.approx(expect.test["coverage"])
        assert shown["test accepted"] == expect.test["n_accepted"]
        if expect.chosen.refer_all:
            assert "every image is referred" in texts(at)
            assert shown["test coverage"] == 0.0
        else:
            assert shown["threshold"] == pytest.approx(expect.chosen.threshold)
            assert shown["test risk"] == pytest.approx(expect.test["risk"])
        assert "group-aware 50/50" in " ".join(c.value for c in at.caption)
        seen.add(expect.chosen.refer_all)
        assert len(at.get("vega_lite_chart")) == 1
    assert seen == {True, False}  # both a certified threshold and a refer-all were shown
