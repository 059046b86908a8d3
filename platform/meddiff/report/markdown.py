"""Markdown pieces shared by the report sections (tables, numbers, confidence intervals)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal; "–" when missing."""
    return "–" if missing(v) else num(100 * float(v), 1)


def num(v: Any, digits: int = 3) -> str:
    if missing(v):
        return "–"
    text = f"{float(v):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def with_ci(row: Any, name: str, percent: bool = True) -> str:
    """``row[name]`` with its ``_lo``/``_hi`` bounds: "81.2 [77.0, 85.1]"; without bounds, the value and "(no CI)"."""
    f = pct if percent else num
    if missing(row[name]):
        return "–"
    if missing(row.get(f"{name}_lo")) or missing(row.get(f"{name}_hi")):
        return f"{f(row[name])} (no CI)"
    return f"{f(row[name])} [{f(row[name + '_lo'])}, {f(row[name + '_hi'])}]"
