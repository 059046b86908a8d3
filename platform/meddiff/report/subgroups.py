"""The report's subgroup section of a results set: per metadata column, the model's metrics per stratum with
cluster-bootstrap CIs and a figure; the shortcut probe (does the metadata alone predict the label?) with its
references (majority class, metadata-only probe, the model) and the model's within-stratum accuracy.

``subgroup_section(run, out_dir)`` returns {"title", "markdown", "figures": {name: Path}, "tables": {name: frame}}, the
shape every section of the model card (``meddiff.report.card``) takes. The numbers come from
``meddiff.results.strata``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from meddiff.report import plots
from meddiff.report.markdown import md_table, num, pct, with_ci
from meddiff.results import strata as T
from meddiff.results.runs import ResultsSet


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "run"


def subgroup_section(run: ResultsSet, out_dir: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Subgroups and shortcut probe of ``run`` (its scored rows and the prediction of its configured rule); figures
    are written into ``out_dir`` as ``subgroups_<run>_<column>.png``."""
    out = Path(out_dir)
    frame = run.frame
    title = f"Subgroups and shortcut probe: {run.name}"
    checklist = ["CLAIM 2024: robustness and subgroup analysis; characteristics per partition",
                 "TRIPOD+AI: fairness (performance across subgroups); heterogeneity"]
    columns = T.metadata_columns(frame)
    if not columns:
        text = (f"### {title}\n\nno metadata columns: the rows of this run carry no metadata key with two or more "
                f"values (sex, age band, view, site, acquisition batch, ...), so subgroup metrics and the shortcut "
                f"probe cannot be computed. Add metadata columns to the data source to get them.\n")
        return {"title": title, "markdown": text, "figures": {}, "tables": {}, "checklist": checklist}
    names = list(run.class_names)
    positive = names[T.POSITIVE_CLASS] if len(names) > T.POSITIVE_CLASS else str(T.POSITIVE_CLASS)
    lines = [f"### {title}", "",
             f"Prediction of the configured rule on {len(frame)} labelled images. " + T.METRIC_NOTE
             + (f" Positive class here: **{positive}**." if len(names) == 2 else ""), ""]
    figures, tables = {}, {}
    for column in columns:
        table = T.stratum_table(frame, column, n_boot=n_boot, seed=seed, class_names=names)
        tables[f"strata_{column}"] = table.assign(run=run.name)
        has_cov = "coverage" in table.columns
        header = ["stratum", "images", "groups", "per class", "accuracy", "balanced acc.", "sensitivity",
                  "specificity", "AUC"] + (["coverage"] if has_cov else []) + ["note"]
        rows = [[r["stratum"], r["images"], r["groups"], r["per_class"], with_ci(r, "accuracy"),
                 with_ci(r, "balanced_accuracy"), with_ci(r, "sensitivity"), with_ci(r, "specificity"),
                 with_ci(r, "auc")] + ([with_ci(r, "coverage")] if has_cov else []) + [r["note"] or ""]
                for _, r in table.iterrows()]
        path = plots.stratum_plot(table, out / f"subgroups_{_slug(run.name)}_{_slug(column)}.png",
                                  f"{run.name}: accuracy by {column}")
        figures[f"strata_{column}"] = path
        lines += [f"**{column}** (all values in %; coverage = share accepted by the referral rule):" if has_cov
                  else f"**{column}** (all values in %):", "", md_table(header, rows), "",
                  f"![{column}]({path.name})", ""]
    probe = T.shortcut_probe(frame, n_boot=n_boot, seed=seed, num_classes=run.num_classes)
    lines += probe_markdown(probe)
    if probe.available:
        tables["shortcut_probe"] = probe.probe.assign(run=run.name)
        tables["shortcut_baselines"] = probe.baselines.assign(run=run.name)
        tables["within_strata"] = probe.within.assign(run=run.name)
    return {"title": title, "markdown": "\n".join(lines) + "\n", "figures": figures, "tables": tables,
            "checklist": checklist}


def subgroup_tables(sections: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The report's tables of several runs' sections: "subgroups" (every stratum table), "shortcut_probe",
    "shortcut_baselines", "within_strata" (rows of every run, column ``run``)."""
    buckets: dict[str, list[pd.DataFrame]] = {}
    for section in sections:
        for name, frame in section["tables"].items():
            buckets.setdefault("subgroups" if name.startswith("strata_") else name, []).append(frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in buckets.items()}


def probe_markdown(probe: T.ShortcutProbe) -> list[str]:
    """The shortcut probe as markdown lines: the verdict, the probe per feature set, the references, within-stratum."""
    if not probe.available:
        return ["**Shortcut probe**: " + probe.note, ""]
    out = [f"**Shortcut probe: {probe.verdict}.** {probe.note}", "",
           md_table(["metadata used", "AUC", "balanced accuracy (%)", "verdict"],
                    [[r["features"], _auc(r), with_ci(r, "balanced_accuracy"), r["verdict"]]
                     for _, r in probe.probe.iterrows()]), "",
           "Does the model beat the metadata? References (95 % CIs over groups):", "",
           md_table(["reference", "accuracy (%)", "balanced accuracy (%)", "AUC"],
                    [[r["reference"], with_ci(r, "accuracy"), with_ci(r, "balanced_accuracy"), _auc(r)]
                     for _, r in probe.baselines.iterrows()]), ""]
    if probe.model_vs_probe:
        out += [f"**{probe.model_vs_probe['text']}**", ""]
    if not probe.within.empty:
        out += ["The model's balanced accuracy within each stratum (strata holding two or more classes, weighted by "
                "their size) next to its pooled balanced accuracy; a model that relies on the metadata loses "
                "accuracy within a stratum, where the metadata no longer separates the classes:", "",
                md_table(["column", "strata (with both classes)", "images covered (%)", "within-stratum (%)",
                          "pooled (%)", "difference (points)"],
                         [[r["column"], f"{r['strata']} ({r['mixed_strata']})", pct(r["images_covered"]),
                           _pair(r, "within"),
                           _pair(r, "pooled"), _diff(r)] for _, r in probe.within.iterrows()]), ""]
    return out


def _auc(r: pd.Series) -> str:
    return with_ci(r, "auc", percent=False)


def _pair(r: pd.Series, key: str) -> str:
    value = r[f"{key}_balanced_accuracy"]
    return with_ci(pd.Series({"v": value, "v_lo": r[f"{key}_lo"], "v_hi": r[f"{key}_hi"]}), "v")


def _diff(r: pd.Series) -> str:
    d = pd.Series({"v": r["difference"] * 100, "v_lo": r["difference_lo"] * 100, "v_hi": r["difference_hi"] * 100})
    if num(d["v_lo"]) == "–":
        return f"{num(d['v'], 1)} (no CI)"
    return f"{num(d['v'], 1)} [{num(d['v_lo'], 1)}, {num(d['v_hi'], 1)}]"
