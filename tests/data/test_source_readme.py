"""The README's YAML for the DICOM folder and chest X-ray sources uses only keys and values the sources accept."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from meddiff.config import from_dict
from meddiff.data.sources import SOURCES
from meddiff.data.sources.findings import FindingRule

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_source_examples_parse():
    section = README.read_text().split("### Data: DICOM folders and the public chest X-ray sets")[1].split("\n### ")[0]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, flags=re.S)]
    assert [b["data"]["source"] for b in blocks] == ["dicom", "nih_cxr14", "mimic_cxr", "image_csv", "image_csv"]
    for block in blocks:
        params = from_dict(SOURCES[block["data"]["source"]][0], block["data"]["params"], "data.params")
        if getattr(params, "finding", None):
            FindingRule(params.finding, getattr(params, "no_finding", "No Finding"))
