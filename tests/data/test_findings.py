"""The finding-vs-no-finding rule shared by the chest X-ray sources (meddiff/data/sources/findings.py)."""

from __future__ import annotations

import logging

import pytest

from meddiff.data.sources.findings import FindingRule, Reading, aggregate, check_names, label, labels, split_names
from meddiff.errors import ConfigError


def r(*positive, uncertain=()):
    return Reading(frozenset(positive), frozenset(uncertain))


@pytest.mark.parametrize("reading, expected", [
    (r("Effusion"), 1),
    (r("effusion ", "Atelectasis"), 1),
    (r("No Finding"), 0),
    (r("Atelectasis"), None),
    (r(), None),
    (r("Effusion", "No Finding"), None),
    (r("No Finding", uncertain=["Effusion"]), None),
])
def test_default_rule_is_the_clean_task(reading, expected):
    assert label(reading, FindingRule("Effusion"))[0] == expected


def test_other_findings_negative_and_uncertain_policies():
    neg = FindingRule("Effusion", other_findings="negative")
    assert label(r("Atelectasis"), neg)[0] == 0
    assert label(r("Atelectasis", "Effusion"), neg)[0] == 1
    assert label(r(uncertain=["Effusion"]), FindingRule("Effusion", uncertain="positive"))[0] == 1
    assert label(r(uncertain=["Effusion"]), FindingRule("Effusion", uncertain="negative"))[0] == 0
    # uncertain negative with another positive finding is still "other findings"
    assert label(r("Mass", uncertain=["Effusion"]), FindingRule("Effusion", uncertain="negative"))[0] is None


def test_readers_majority_and_any():
    three = [r("Effusion"), r("No finding"), r("No finding")]
    assert label(aggregate(three, "majority"), FindingRule("Effusion", "No finding"), True)[0] == 0
    assert label(aggregate(three, "any"), FindingRule("Effusion", "No finding"), True)[0] == 1
    two_of_three = [r("Effusion"), r("effusion"), r("No finding")]
    assert label(aggregate(two_of_three, "majority"), FindingRule("Effusion", "No finding"), True)[0] == 1


def test_labels_logs_counts(caplog):
    with caplog.at_level(logging.INFO):
        out = labels([[r("Effusion")], [r("No Finding")], [r("Mass")], [r("Mass")]], FindingRule("Effusion"), "x.csv")
    assert out == [1, 0, None, None]
    assert "'other findings but not the finding (other_findings: exclude)': 2" in caplog.text


def test_unknown_finding_lists_names_seen():
    with pytest.raises(ConfigError, match=r"'Efusion' is not a finding name in x.csv; names seen .*'effusion'"):
        check_names(FindingRule("Efusion"), ["Effusion", "No Finding", "Mass"], "x.csv")
    with pytest.raises(ConfigError, match=r"no_finding: 'normal' is not"):
        check_names(FindingRule("Effusion", "normal"), ["Effusion", "No Finding"], "x.csv")


@pytest.mark.parametrize("key, value", [("other_findings", "drop"), ("uncertain", "maybe"), ("readers", "all")])
def test_bad_choices(key, value):
    with pytest.raises(ConfigError, match=rf"data.params.{key}: expected one of"):
        FindingRule("Effusion", **{key: value})


def test_split_names():
    assert split_names("Effusion|Atelectasis", ["|"]) == ["Effusion", "Atelectasis"]
    assert split_names("['pneumonia', ' pleural effusion']", [","]) == ["pneumonia", "pleural effusion"]
    assert split_names("['']", [","]) == []
    assert FindingRule("Pleural Effusion").class_names == ("no_finding", "pleural_effusion")
