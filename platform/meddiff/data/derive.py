"""Derived metadata columns: a new metadata column computed from an existing column by a documented rule.

``data.derive`` maps a new column name to a rule (``DeriveRule``), for example the ISIC archive acquisition batch
from the image id (``platform/meddiff/presets/demo-isic.yaml``)::

    derive:
      archive_batch: {from: id, regex: 'ISIC_(\\d+)', bins: [0, 11000, 24306, 34321, 1000000000],
                      labels: [archive_0-10999, archive_11000-24305, ham10000, archive_34321+]}

A rule reads ``from`` (a manifest column such as ``id``, ``path`` or ``group``, or a metadata key), then
    regex  (optional): the value must match (``re.search``) and the rule keeps its one capture group;
    bins + labels:      the kept text is a number; bin i is ``bins[i] <= x < bins[i + 1]`` and gets ``labels[i]``;
    map:                the kept text is looked up in ``{value: label}`` (values compare as text).
Exactly one of bins or map. A row whose value does not match the regex, is not a number, falls outside the bins or is
missing from the map is a DataError naming the row's id and file: a derived column never silently holds a guess.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from meddiff.config import from_dict
from meddiff.errors import ConfigError, DataError
from meddiff.data.manifest import describe_row


@dataclass(frozen=True)
class DeriveRule:
    """One derived column: ``source`` is the YAML key ``from``."""

    source: str
    regex: str | None = None
    bins: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.bins) == bool(self.map):
            raise ConfigError("data.derive: a rule needs exactly one of bins (with labels) or map")
        if self.bins:
            edges = [float(b) for b in self.bins]
            if any(a >= b for a, b in zip(edges[:-1], edges[1:])):
                raise ConfigError(f"data.derive: bins must increase strictly, got {list(self.bins)}")
            if len(self.labels) != len(edges) - 1:
                raise ConfigError(f"data.derive: {len(edges)} bin edges need {len(edges) - 1} labels, "
                                  f"got {list(self.labels)}")
        if self.regex is not None:
            try:
                groups = re.compile(self.regex).groups
            except re.error as exc:
                raise ConfigError(f"data.derive: regex {self.regex!r} does not compile ({exc})") from None
            if groups != 1:
                raise ConfigError(f"data.derive: regex {self.regex!r} must have exactly one capture group, has {groups}")


def parse_rules(derive: Mapping[str, Any]) -> dict[str, DeriveRule]:
    """``data.derive`` -> {column: DeriveRule}, strictly (unknown keys are errors naming the column)."""
    rules = {}
    for column, spec in dict(derive or {}).items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"data.derive.{column}: expected a mapping with from and bins/labels or map, got {spec!r}")
        spec = dict(spec)
        if "from" not in spec:
            raise ConfigError(f"data.derive.{column}: missing key 'from' (the column the rule reads)")
        spec["source"] = spec.pop("from")
        spec["map"] = {str(k): str(v) for k, v in (spec.get("map") or {}).items()}
        try:
            rules[str(column)] = from_dict(DeriveRule, spec, f"data.derive.{column}")
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("data.derive:", f"data.derive.{column}:")) from None
    return rules


def derive_metadata(frame: pd.DataFrame, derive: Mapping[str, Any]) -> pd.DataFrame:
    """The manifest frame with every derived column added to each row's ``metadata`` JSON."""
    rules = parse_rules(derive)
    if not rules:
        return frame
    metadata = [json.loads(m) for m in frame["metadata"]]
    for column, rule in rules.items():
        for meta, (_, row) in zip(metadata, frame.iterrows()):
            meta[column] = _apply(rule, column, row, meta)
    return frame.assign(metadata=[json.dumps(m, sort_keys=True) for m in metadata])


def _apply(rule: DeriveRule, column: str, row: pd.Series, meta: dict) -> str:
    where = f"data.derive.{column}: row id {row['id']!r} ({describe_row(row)})"
    if rule.source in row.index and rule.source != "metadata":
        value = str(row[rule.source])
    elif rule.source in meta:
        value = str(meta[rule.source])
    else:
        raise DataError(f"{where} has no column or metadata key {rule.source!r} to derive from")
    text = value
    if rule.regex is not None:
        match = re.search(rule.regex, value)
        if match is None:
            raise DataError(f"{where}: {rule.source}={value!r} does not match regex {rule.regex!r}")
        text = match.group(1)
    if rule.map:
        if text not in rule.map:
            raise DataError(f"{where}: {rule.source} value {text!r} is not in map {sorted(rule.map)}")
        return rule.map[text]
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isnan(number):
        raise DataError(f"{where}: {rule.source} value {text!r} is not a number to bin")
    edges = [float(b) for b in rule.bins]
    for low, high, label in zip(edges[:-1], edges[1:], rule.labels):
        if low <= number < high:
            return label
    raise DataError(f"{where}: {rule.source} value {number:g} is outside the bins [{edges[0]:g}, {edges[-1]:g})")
