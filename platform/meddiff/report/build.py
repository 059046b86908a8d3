"""Build the comparison report of several results sets: parquet tables, PNG figures and report.md.

    <out>/table1.parquet        Table 1 rows (one per run and rule) with bootstrap CIs, coverage points, AURC, ECE
    <out>/coverage.parquet      accuracy-vs-coverage curves            -> coverage.png (Fig. 3)
    <out>/calibration.parquet   reliability bins of the top vote share -> reliability.png
    <out>/confusion.parquet     confusion matrices                     -> confusion.png
    <out>/n_ablation.parquet    accuracy vs N, vote and average        -> n_ablation.png (Fig. 2)
    <out>/t_buckets.parquet, t_ranges.parquet                          -> t_ablation.png
    <out>/targets.parquet, shifts.parquet, vote_vs_average.parquet     -> vote_vs_average.png
    <out>/selective.parquet     referral thresholds (LTT, naive), conformal sets, ECE -> risk_coverage.png
    <out>/subgroups.parquet, shortcut_probe.parquet, ...  per-stratum metrics and the shortcut probe -> subgroups_*.png
    <out>/report.md             all of the above as markdown, plus the ``notes`` file if given
    <out>/model_card.md, model_card.html   with ``card=True`` (``meddiff.report.card``)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from meddiff import tracking
from meddiff.errors import ConfigError
from meddiff.provenance import code_version
from meddiff.report import ablation as A
from meddiff.report import plots
from meddiff.report.markdown import md_table
from meddiff.report.models import describe
from meddiff.report.selective import selective_section
from meddiff.report.subgroups import subgroup_section, subgroup_tables
from meddiff.report.table import calibration_frame, confusion_frame, coverage_frame, table1_rows
from meddiff.report.vote_average import gap_frame, replay
from meddiff.results.runs import ResultsSet, load


def build_report(
    results: Sequence[str | Path],
    out_dir: str | Path,
    notes: str | Path | None = None,
    n_boot: int = 1000,
    repeats: int = 20,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    card: bool = False,
    extra_sections: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Write the report of the results sets ``results`` (``DIR`` or ``NAME=DIR``) into ``out_dir``; with ``card``,
    also the model card, which embeds ``extra_sections`` ({title, markdown, figures, tables}) after its own.

    Returns {"report": path of report.md, "tables": {name: path}, "figures": {name: path}, "runs": labels} and, with
    ``card``, "card": {"md": path, "html": path}.
    """
    log = log or (lambda _: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [load(r) for r in results]
    labels = [r.name for r in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"runs need distinct names, got {labels}; name them NAME=DIR")
    tables: dict[str, pd.DataFrame] = {}
    t0 = time.monotonic()
    infos = {r.name: describe(r) for r in runs}
    tables["table1"] = pd.DataFrame([row for run in runs for row in table1_rows(run, infos[run.name], n_boot, seed)])
    tables["coverage"] = pd.concat([coverage_frame(r) for r in runs], ignore_index=True)
    tables["calibration"] = pd.concat([calibration_frame(r) for r in runs], ignore_index=True)
    tables["confusion"] = pd.concat([confusion_frame(r) for r in runs], ignore_index=True)
    log(f"[report] Table 1 and curves of {len(runs)} run(s) in {time.monotonic() - t0:.1f}s")
    subgroups = [subgroup_section(r, out, n_boot, seed) for r in runs]
    for key, frames in subgroup_tables(subgroups).items():
        tables[key] = frames
    with_draws = [r for r in runs if r.has_draws]
    n_common = min(infos[r.name]["n_draws"] for r in with_draws) if len(with_draws) > 1 else None
    replays = [replay(r, infos[r.name], repeats=repeats, seed=seed, n_common=n_common) for r in with_draws]
    if replays:
        for key in replays[0]:
            tables[key if key != "summary" else "vote_vs_average"] = pd.concat([r[key] for r in replays],
                                                                                ignore_index=True)
        tables["gaps"] = gap_frame(tables)
        log(f"[report] replays of {len(replays)} run(s) with stored draws in {time.monotonic() - t0:.1f}s")
    paths = {}
    for name, frame in tables.items():
        paths[name] = out / f"{name}.parquet"
        _to_parquet(frame, paths[name])
    figures = {
        "coverage": plots.coverage_plot(tables["coverage"], out / "coverage.png"),
        "reliability": plots.reliability_plot(tables["calibration"], out / "reliability.png"),
        "confusion": plots.confusion_plot(tables["confusion"], out / "confusion.png"),
    }
    if replays:
        figures["n_ablation"] = plots.n_ablation_plot(n_summary(tables["n_ablation"]), out / "n_ablation.png")
        figures["t_ablation"] = plots.t_ablation_plot(tables["t_buckets"], tables["t_ranges"], out / "t_ablation.png")
        figures["vote_vs_average"] = plots.gap_plot(tables["gaps"], tables["vote_vs_average"],
                                                    out / "vote_vs_average.png")
    section = selective_section(runs, out, seed=seed)  # referral with a guarantee (report/selective.py)
    figures.update(section["figures"])
    paths["selective"] = out / "selective.parquet"
    figures.update({v.stem: v for s in subgroups for v in s["figures"].values()})  # subgroups_<run>_<column>
    text = markdown(runs, infos, tables, figures, Path(notes).read_text() if notes else None, n_boot,
                    sections=[section["markdown"]])
    text += "\n## Subgroups and shortcuts\n\n" + "\n".join(s["markdown"] for s in subgroups)
    report = out / "report.md"
    report.write_text(text)
    written = {}
    if card:
        from meddiff.report.card import write_card

        written = {"card": write_card(runs, infos, tables, figures, [*subgroups, section, *extra_sections], out, n_boot)}
        log(f"[report] model card {written['card']['html']}")
    for run in runs:  # the MLflow run of a tracked scoring job (its meta.json names it) gets the report too
        tracking.reopen(run.meta.get(tracking.META_KEY), log).log_artifacts(out, "report")
    log(f"[report] {report} ({len(figures)} figures) in {time.monotonic() - t0:.1f}s")
    return {"report": str(report), "tables": {k: str(v) for k, v in paths.items()},
            "figures": {k: str(v) for k, v in figures.items()}, "runs": labels, **written}


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.copy()
    for col in frame.columns:  # tuples / mixed objects -> strings, so parquet has one type per column
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (tuple, list, dict))).any():
            frame[col] = frame[col].astype(str)
        elif frame[col].dtype == object:
            kinds = {type(v) for v in frame[col].dropna()}
            if len(kinds) > 1:
                frame[col] = frame[col].astype(str)
    frame.to_parquet(path, index=False)


def n_summary(n_abl: pd.DataFrame) -> pd.DataFrame:
    """Plot-ready N-ablation: one series per rule and error target ("vote", "average (eps)", "average (x)")."""
    frame = n_abl.assign(series=np.where(n_abl["rule"] == "vote", "vote", n_abl["rule"] + " (" + n_abl["target"] + ")"))
    parts = []
    for run, g in frame.groupby("run", sort=False):
        s = A.summarize_n_ablation(g.drop(columns=["rule"]).rename(columns={"series": "rule"}))
        parts.append(s.rename(columns={"rule": "series"}).assign(run=run))
    return pd.concat(parts, ignore_index=True)


# --- markdown ---------------------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"


def _ci(row, name: str, pct: bool) -> str:
    f = _pct if pct else _fmt
    return f"{f(row[name])} [{f(row[name + '_lo'])}, {f(row[name + '_hi'])}]"


def markdown(runs: list[ResultsSet], infos: dict[str, dict[str, Any]], tables: dict[str, pd.DataFrame], figures: dict[str, Path], notes: str | None,
             n_boot: int = 1000, sections: Sequence[str] = ()) -> str:
    t1 = tables["table1"]
    out = ["# meddiff comparison report", "",
           f"Generated {time.strftime('%Y-%m-%d %H:%M')} by {code_version()} from {len(runs)} results set(s):", ""]
    for r in runs:
        out.append(f"- **{r.name}**: `{r.path}` ({r.method}, {infos[r.name]['dataset']}, {len(r.frame)} labelled "
                   f"images, model {infos[r.name]['model_id']})")
    out += ["", "## Table 1", "",
            "Accuracy and ROC AUC in %, F1 as a fraction; 95 % percentile-bootstrap confidence intervals over images "
            f"({n_boot} resamples). A diffusion run gives one row per decision rule (both are computed from the same draws). "
            "NFE = denoiser (or network) evaluations per image; images/s as recorded by the scorer, or estimated from "
            "file times (marked ~).", ""]
    rows = []
    for _, r in t1.iterrows():
        ips = "–" if r["images_per_s"] is None or np.isnan(r["images_per_s"]) else (
            f"{r['images_per_s']:.1f}" if r["images_per_s_source"] == "recorded" else f"~{r['images_per_s']:.1f}")
        params = "" if r["params_m"] is None or np.isnan(r["params_m"]) else f" ({r['params_m']:.1f} M)"
        rows.append([r["method"], r["run"], f"{r['backbone']}{params}", r["dataset"], r["images"],
                     _ci(r, "accuracy", True), _ci(r, "f1", False), _ci(r, "auc", True),
                     _pct(r.get("sensitivity")), _pct(r.get("specificity")),
                     _fmt(r["n_draws"], 0) if r["n_draws"] == r["n_draws"] and r["n_draws"] is not None else "–",
                     _fmt(r["nfe_per_image"], 0), ips])
    out.append(md_table(["method", "run", "backbone", "dataset", "images", "accuracy", "F1", "AUC", "sens.", "spec.",
                         "N", "NFE/image", "images/s"], rows))
    out += ["", "## Uncertainty: accuracy vs coverage (Fig. 3), AURC, calibration", "",
            "Images are sorted from most to least certain (vote entropy for the vote, softmax entropy for baselines, "
            "the relative error margin for the average rule) and the most uncertain are filtered out. acc@80 = accuracy "
            "on the 80 % most certain images. AURC = area under the risk-coverage curve (lower is better). ECE = "
            "expected calibration error of the top vote share (baselines: top softmax probability), 10 bins.", ""]
    out.append(md_table(["run", "rule", "acc@100", "acc@80", "acc@55", "AURC", "ECE"],
                        [[r["run"], r["rule"], _pct(r["acc@100"]), _pct(r["acc@80"]), _pct(r["acc@55"]),
                          _fmt(r["aurc"]), _fmt(r["ece"])] for _, r in t1.iterrows()]))
    out += ["", f"![coverage]({figures['coverage'].name})", "", f"![reliability]({figures['reliability'].name})", "",
            f"![confusion]({figures['confusion'].name})", ""]
    if "vote_vs_average" in tables:
        out += vote_average_markdown(tables, figures)
    else:
        out += ["## Vote vs average", "", "No results set with stored per-draw errors (score with "
                "`score.store_draws: true`), so the N and t ablations were skipped.", ""]
    out += [s for s in sections]
    if notes:
        out += ["", notes.strip(), ""]
    return "\n".join(out) + "\n"


def vote_average_markdown(tables: dict[str, pd.DataFrame], figures: dict[str, Path]) -> list[str]:
    s = tables["vote_vs_average"]
    out = ["## Vote vs average (Fig. 2) from stored per-draw errors", "",
           "Replays of the stored errors; no denoiser call. `average (x)` rescales every draw's eps error by "
           "exp(-lambda) (= ||x - x_hat||^2, the paper's eq. 4); the vote is the same for every target. `normalised` "
           "averages each draw's errors divided by that draw's mean over classes (an average in which every draw "
           "weighs the same). McNemar: images only the vote gets right / only the average gets right, exact two-sided "
           "p-value.", ""]
    out.append(md_table(
        ["run", "dataset", "backbone", "train steps", "shift", "N", "vote", "average (eps)", "average (x)", "normalised",
         "vote-only / avg-only right", "McNemar p"],
        [[r["run"], r["dataset"], r["backbone"], _fmt(r["train_steps"], 0), f"{r['shift']:+.2f} (d={r['shift_size']})",
          r["n_draws"], _pct(r["vote"]), _pct(r["average"]), _pct(r["average_x"]), _pct(r["normalised"]),
          f"{r['vote_only_right']} / {r['average_only_right']}", f"{r['mcnemar_p']:.3g}"] for _, r in s.iterrows()]))
    if "n_common" in s.columns:
        n = int(s["n_common"].iloc[0])
        out += ["", f"The same runs on their first {n} draws (identical (eps, t) draws in every run of the same seed):", ""]
        out.append(md_table(["run", "vote", "average (eps)", "average (x)", "vote - average (eps)"],
                            [[r["run"], _pct(r["vote_common"]), _pct(r["average_common"]), _pct(r["average_x_common"]),
                              f"{100 * (r['vote_common'] - r['average_common']):+.1f}"] for _, r in s.iterrows()]))
    nab = n_summary(tables["n_ablation"])
    out += ["", f"![N ablation]({figures['n_ablation'].name})", "",
            "Accuracy (%) against N: mean over random subsets of the stored draws (the same subsets for both rules).", ""]
    ns = sorted(nab["n"].unique())
    show = [n for n in ns if n in (1, 3, 5, 11, 21, 51, 101, 201, 501) or n == ns[-1]]
    rows = []
    for (run, series), g in nab.groupby(["run", "series"], sort=False):
        g = g.set_index("n")
        rows.append([run, series] + [_pct(g["mean"].get(n, float("nan"))) for n in show])
    out.append(md_table(["run", "rule"] + [f"N={n}" for n in show], rows))
    out += ["", f"![t ablation]({figures['t_ablation'].name})", "",
            "Single-draw accuracy per t bucket (a draw at t as a one-draw classifier), and both rules restricted "
            "to the draws in a t range:", ""]
    tr = tables["t_ranges"]
    rows = []
    for (run, lo, hi), g in tr.groupby(["run", "t_lo", "t_hi"], sort=False):
        acc = {(r["rule"], r["target"]): r["accuracy"] for _, r in g.iterrows()}
        rows.append([run, f"{lo:g}-{hi:g}", _fmt(g["mean_draws"].iloc[0], 1), _pct(acc.get(("vote", "eps"))),
                     _pct(acc.get(("average", "eps"))), _pct(acc.get(("average", "x"))),
                     _pct(acc.get(("normalised", "eps")))])
    out.append(md_table(["run", "t range", "draws/image", "vote", "average (eps)", "average (x)", "normalised"], rows))
    tb = tables["t_buckets"]
    out += ["", md_table(["run", "t bucket", "log-SNR (mid)", "single-draw acc", "rel. class gap", "mean eps err",
                          "mean x err"],
                         [[r["run"], f"{r['t_lo']:g}-{r['t_hi']:g}", f"{r['logsnr_mid']:+.1f}", _pct(r["accuracy"]),
                           _fmt(r["rel_gap"]), f"{r['mean_error_eps']:.3g}", f"{r['mean_error_x']:.3g}"]
                          for _, r in tb.iterrows()]), ""]
    sh = tables["shifts"]
    out += ["Scoring-time schedule shift (draws re-weighted to the log-SNR density of another shift; "
            "effective draws per image in brackets):", ""]
    rows = []
    for (run, d), g in sh.groupby(["run", "shift_delta"], sort=False):
        acc = {(r["rule"], r["target"]): r["accuracy"] for _, r in g.iterrows()}
        rows.append([run, f"{d:+g} ({g['shift'].iloc[0]:+.2f})", _fmt(g["effective_draws"].iloc[0], 1),
                     _pct(acc.get(("vote", "eps"))), _pct(acc.get(("average", "eps"))), _pct(acc.get(("average", "x")))])
    out.append(md_table(["run", "shift change (shift)", "eff. draws", "vote", "average (eps)", "average (x)"], rows))
    out += ["", f"![vote vs average]({figures['vote_vs_average'].name})", ""]
    return out
