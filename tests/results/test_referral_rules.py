"""The referral rules as data (meddiff.rules.REFERRAL_RULES): every entry resolves to its function, which returns
the threshold the registry claims; an unknown name is a ConfigError naming the choices."""

import importlib

import numpy as np
import pytest

from meddiff.errors import ConfigError
from meddiff.results.referral import Threshold, choose_threshold
from meddiff.rules import REFERRAL_RULES, referral_rule


def test_every_referral_rule_resolves_and_dispatches():
    u = np.r_[np.zeros(40), np.full(40, 0.5)]
    correct = np.r_[np.ones(40), np.ones(35), np.zeros(5)].astype(bool)
    assert set(REFERRAL_RULES) == {"ltt", "ltt-multistart", "naive"}
    for name, rule in REFERRAL_RULES.items():
        module, func = rule.choose.split(":")
        fn = getattr(importlib.import_module(module), func)
        direct = fn(u, correct, 0.1, 0.1)
        assert isinstance(direct, Threshold) and direct.rule == name
        assert choose_threshold(name, u, correct, 0.1, 0.1) == direct
        assert rule.guarantee
    assert REFERRAL_RULES["ltt"].certified and REFERRAL_RULES["ltt-multistart"].certified
    assert not REFERRAL_RULES["naive"].certified
    # 5 errors in 80 = 6.25 %: the naive rule takes all; LTT cannot certify 6.25 % <= 10 % with 80 images at delta 0.1
    # (P(Binom(80, 0.1) <= 5) = 0.14), so it stops at the certain block (0.9^40 = 0.015)
    assert choose_threshold("naive", u, correct, 0.1, 0.1).threshold == 0.5
    assert choose_threshold("ltt", u, correct, 0.1, 0.1).threshold == 0.0
    # the chains from 0.0, 0.2 and 0.4 test the 40 certain images (0.9^40 = 0.015 <= delta / 5) and stop at 0.5
    # (0.14 > 0.02): the largest certified start value is 0.4, which accepts the same calibration images as 0
    multi = choose_threshold("ltt-multistart", u, correct, 0.1, 0.1)
    assert (multi.threshold, multi.n_accepted, multi.errors) == (0.4, 40, 0)
    with pytest.raises(ConfigError, match="'ltt', 'ltt-multistart', 'naive'"):
        referral_rule("bonferroni")
