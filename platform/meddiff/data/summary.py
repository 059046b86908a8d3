"""The summary of a built manifest that ``meddiff data`` prints: rows per split and class, groups per split, the
grouping, the metadata columns with their values' counts, and the leakage report of build_manifest
(``meddiff.data.leakage``)."""

from __future__ import annotations

from typing import Any

from meddiff.data.leakage import summary_line
from meddiff.data.manifest import SPLITS, Manifest


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """A plain, JSON-ready dict describing ``manifest``."""
    frame = manifest.frame
    rows = {split: manifest.class_counts(split) for split in SPLITS}
    groups = {split: int(frame.loc[frame["split"] == split, "group"].nunique()) for split in SPLITS}
    folds = sorted(int(f) for f in frame["fold"].unique() if int(f) >= 0)
    return {
        "name": manifest.name,
        "rows": len(manifest),
        "class_names": list(manifest.class_names),
        "rows_per_split": rows,
        "grouping": manifest.grouping,
        "groups_per_split": groups,
        "folds": folds,
        "metadata_columns": manifest.metadata_columns(),
        "leakage": manifest.checks,
        "fingerprint": manifest.fingerprint(),
    }


def format_summary(summary: dict[str, Any], max_values: int = 12) -> str:
    """Human-readable lines of ``manifest_summary``'s dict."""
    names = summary["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = [f"{summary['name']}: {summary['rows']} rows, grouping: {summary['grouping']}",
             f"{'split':<6} " + " ".join(f"{n:>{width}}" for n in names) + f" {'total':>7} {'groups':>7}"]
    for split, counts in summary["rows_per_split"].items():
        lines.append(f"{split:<6} " + " ".join(f"{counts[n]:>{width}}" for n in names)
                     + f" {sum(counts.values()):>7} {summary['groups_per_split'][split]:>7}")
    if summary["folds"]:
        lines.append(f"cross-validation folds: {summary['folds']}")
    if not summary["metadata_columns"]:
        lines.append("metadata columns: none")
    for column, values in summary["metadata_columns"].items():
        shown = list(values.items())[:max_values]
        more = f", ... ({len(values) - max_values} more values)" if len(values) > max_values else ""
        lines.append(f"metadata {column}: " + ", ".join(f"{v} {n}" for v, n in shown) + more)
    leakage = summary["leakage"]
    if leakage:
        lines.append(f"leakage ({leakage['level']}, {'official' if leakage['official_splits'] else 'own'} splits): "
                     + summary_line(leakage))
        for key in ("exact_duplicates", "near_duplicates"):
            for example in leakage.get(key, {}).get("examples", []):
                extra = "".join(f", {k} {example[k]}" for k in ("hamming", "correlation") if k in example)
                lines.append(f"  {key.replace('_', ' ')}: {example['a']} ({example['splits'][0]}) ~ {example['b']} "
                             f"({example['splits'][1]}){extra}")
        for group, splits in leakage.get("groups", {}).get("examples", {}).items():
            lines.append(f"  group {group} in splits {splits}")
    return "\n".join(lines)
