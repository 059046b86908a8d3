"""Multi-label findings -> one binary task "finding X vs no finding", the rule shared by the chest X-ray sources
(``nih_cxr14.py``, ``mimic_cxr.py``, ``image_csv.py`` with ``finding``).

Per reader, an image has a set of *positive* findings and a set of *uncertain* ones (CheXpert-style -1 labels, Irvin
et al. 2019). The rule (``FindingRule``):
    class 1 ``finding``     X is positive (or uncertain with ``uncertain: positive``);
    class 0 ``no_finding``  the "no finding" label is positive and no other finding is (or, with
                            ``other_findings: negative``, X is absent whatever else is);
    dropped                 X uncertain with ``uncertain: exclude`` (default); other findings but not X with
                            ``other_findings: exclude`` (default: the clean task); X and "no finding" both positive for
                            one reader (contradictory); nothing positive at all (unlabelled).
Several readers per image (VinDr-CXR: three radiologists, Nguyen et al. 2022): a finding counts as present when
``readers: majority`` (default) of the image's readers mark it, or ``any`` of them; "no finding" is kept only when X is
not present. Names match case-insensitively after trimming blanks; an unknown ``finding`` or ``no_finding`` is a
ConfigError listing the names the data holds.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from meddiff.data.sources.tables import row_ref
from meddiff.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

OTHER_FINDINGS = ("exclude", "negative")
UNCERTAIN = ("exclude", "positive", "negative")
READERS = ("majority", "any")
NO_FINDING_CLASS = "no_finding"


@dataclass(frozen=True)
class FindingRule:
    """finding: the name of X. no_finding: the name meaning "no finding". other_findings / uncertain / readers: see
    the module docstring."""

    finding: str
    no_finding: str = "No Finding"
    other_findings: str = "exclude"
    uncertain: str = "exclude"
    readers: str = "majority"

    def __post_init__(self) -> None:
        for key, value, allowed in (("other_findings", self.other_findings, OTHER_FINDINGS),
                                    ("uncertain", self.uncertain, UNCERTAIN), ("readers", self.readers, READERS)):
            if value not in allowed:
                raise ConfigError(f"data.params.{key}: expected one of {list(allowed)}, got {value!r}")
        if not self.finding.strip():
            raise ConfigError("data.params.finding: expected the name of a finding (e.g. Effusion), got a blank")
        if norm(self.finding) == norm(self.no_finding):
            raise ConfigError(f"data.params.finding: {self.finding!r} is the no-finding name; pick a finding")

    @property
    def class_names(self) -> tuple[str, str]:
        """("no_finding", "<finding as a slug>"), e.g. ("no_finding", "pleural_effusion")."""
        return NO_FINDING_CLASS, slug(self.finding)


@dataclass(frozen=True)
class Reading:
    """One reader's labels of one image: the names marked positive and the names marked uncertain."""

    positive: frozenset[str]
    uncertain: frozenset[str] = frozenset()


def norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", norm(name)).strip("_") or "finding"


def check_names(rule: FindingRule, seen: Iterable[str], where: str) -> None:
    """ConfigError when ``finding`` or ``no_finding`` is not among the names ``seen`` in the data (``where``)."""
    counts = Counter(norm(n) for n in seen if norm(n))
    for key, name in (("finding", rule.finding), ("no_finding", rule.no_finding)):
        if norm(name) not in counts:
            listed = [n for n, _ in counts.most_common(40)]
            raise ConfigError(f"data.params.{key}: {name!r} is not a finding name in {where}; names seen there "
                              f"(most frequent first): {listed}")


def aggregate(readings: Sequence[Reading], how: str) -> Reading:
    """The readings of several readers of one image as one: a name counts when ``how`` (majority / any) of them mark it;
    uncertain names likewise (a name positive for the image is not uncertain)."""
    if len(readings) == 1:
        return readings[0]
    need = 1 if how == "any" else len(readings) // 2 + 1
    positive = Counter(n for r in readings for n in {norm(x) for x in r.positive})
    uncertain = Counter(n for r in readings for n in {norm(x) for x in r.uncertain})
    pos = frozenset(n for n, c in positive.items() if c >= need)
    unc = frozenset(n for n, c in uncertain.items() if c >= need) - pos
    return Reading(pos, unc)


def label(reading: Reading, rule: FindingRule, multi_reader: bool = False) -> tuple[int | None, str]:
    """(1, "finding"), (0, "no finding") or (None, why it is dropped) for one (aggregated) reading."""
    positive = {norm(n) for n in reading.positive}
    uncertain = {norm(n) for n in reading.uncertain} - positive
    x, nf = norm(rule.finding), norm(rule.no_finding)
    if x in positive and nf in positive and not multi_reader:
        return None, "contradictory (finding and no finding both positive)"
    if x in positive:
        return 1, "finding"
    if x in uncertain:
        if rule.uncertain == "positive":
            return 1, "finding"
        if rule.uncertain == "exclude":
            return None, "finding uncertain (uncertain: exclude)"
    others = (positive | uncertain) - {x, nf}
    if others:
        if rule.other_findings == "negative":
            return 0, "no finding"
        return None, "other findings but not the finding (other_findings: exclude)"
    if nf in positive or (x in uncertain and rule.uncertain == "negative"):
        return 0, "no finding"
    return None, "no label (nothing positive)"


def labels(readings: Sequence[Sequence[Reading]], rule: FindingRule, where: str) -> list[int | None]:
    """The binary label of each image (None = dropped) from its readers' readings; logs the count per reason."""
    out, reasons = [], Counter()
    for image in readings:
        value, reason = label(aggregate(image, rule.readers), rule, multi_reader=len(image) > 1)
        out.append(value)
        reasons[reason] += 1
    dropped = {r: c for r, c in reasons.items() if r not in ("finding", "no finding")}
    logger.info("%s: %s=%d, no finding=%d; dropped %s", where, rule.finding, reasons["finding"],
                reasons["no finding"], dropped or "none")
    return out


def split_names(text: str, separators: Sequence[str]) -> list[str]:
    """The finding names of one cell: ``a|b`` (NIH) or a Python-style list ``['a', ' b']`` (PadChest); quotes,
    brackets and blanks around names are removed, empty names dropped."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts = [text]
    for sep in separators:
        parts = [piece for part in parts for piece in part.split(sep)]
    names = [p.strip().strip("'\"").strip() for p in parts]
    return [n for n in names if n]


def finding_value(text: str, column: str, csv: Path, index: int) -> float | None:
    """A CheXpert-style finding cell: 1.0 positive, 0.0 negative, -1.0 uncertain, None blank ("1.0" etc. accepted);
    any other cell is a DataError naming the CSV line and column."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (1.0, 0.0, -1.0):
        raise DataError(f"{row_ref(csv, index)}: {column}={text!r}; expected 1, 0, -1 or blank")
    return value


def column_readings(table: pd.DataFrame, columns: Sequence[str], csv: Path) -> list[list[Reading]]:
    """One reading per row from one column per finding (CheXpert style: 1 positive, 0 negative, -1 uncertain, blank
    not mentioned; "1.0" etc. accepted); any other cell is a DataError naming the line and column."""
    out = []
    for index, values in zip(table.index, table[list(columns)].itertuples(index=False, name=None)):
        positive, uncertain = [], []
        for column, text in zip(columns, values):
            value = finding_value(text, column, csv, index)
            if value is None:
                continue
            if value == 1.0:
                positive.append(column)
            elif value == -1.0:
                uncertain.append(column)
        out.append([Reading(frozenset(positive), frozenset(uncertain))])
    return out
