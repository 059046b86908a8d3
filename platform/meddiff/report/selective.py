"""Report section "Referral with a guarantee": per run, the Learn-then-Test threshold (error rate among accepted
images <= alpha with probability >= 1 - delta; ``meddiff.results.referral``) chosen on calibration rows and measured
on held-out test rows, the naive threshold for comparison, split-conformal prediction sets (coverage, mean set size)
and the ECE before and after temperature scaling and isotonic regression (fitted on the calibration rows, measured on
the test rows).

Calibration rows: the set's val rows when it holds val and other rows; else, when meta.json carries the referral
``meddiff score --referral`` applied, its threshold (every row is a test row; the conformal sets and calibrators then
use a seeded group-aware 50/50 split, stated); else, when the report also holds a val-split results set of the same
model_id, that set's rows (every row of this set is a test row: how a referral calibrated on val fares on test);
else a seeded group-aware 50/50 split (``results.selective``).

``selective_section(runs, out_dir)`` returns {title, markdown, figures, tables} so a model card can embed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom

from meddiff.results import referral as R
from meddiff.results.runs import ResultsSet
from meddiff.results.selective import Rows, calibration_split, rows_of

TITLE = "Referral with a guarantee (selective prediction)"


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def run_rows(run: ResultsSet, alpha: float, delta: float, seed: int = 0,
             val_run: ResultsSet | None = None) -> tuple[list[dict[str, Any]], dict]:
    """(table rows of ``run``: one per rule, with the conformal and calibration figures; the test curve).
    ``val_run``: a val-split results set of the same model, used as the calibration rows when ``run`` has neither
    val rows of its own nor a recorded referral."""
    rows = rows_of(run.frame, str(run.path))
    referral = run.meta.get("referral")
    cal, how = calibration_split(rows, referral, seed)
    if val_run is not None and not referral and "val" not in set(rows.splits):
        val = rows_of(val_run.frame, str(val_run.path))
        rows = Rows(*(np.concatenate([a, b]) for a, b in zip(
            (val.uncertainty, val.correct, val.probs, val.labels, val.groups, val.splits),
            (rows.uncertainty, rows.correct, rows.probs, rows.labels, rows.groups, rows.splits))))
        cal = np.arange(len(rows)) < len(val)
        how = f"the val results set {val_run.name} of the same model (tested on every row of this set)"
    test = ~cal
    out: list[dict[str, Any]] = []
    base = {"run": run.name, "calibration": how, "n_calibration": int(cal.sum()), "n_test": int(test.sum())}
    tr = rows.take(test)
    if referral:
        thresholds = [("referral (" + str(referral.get("rule")) + ")", referral.get("threshold"),
                       referral.get("alpha"), referral.get("delta"), None)]
    else:
        cr = rows.take(cal)
        thresholds = []
        for rule in (R.LTT, R.LTT_MULTI, R.NAIVE):
            t = R.choose_threshold(rule, cr.uncertainty, cr.correct, alpha, delta)
            thresholds.append((rule, t.threshold, alpha, delta, t))
    # conformal sets and calibrators need calibration rows: with a referral only, a seeded group-aware split
    cal2 = cal if cal.any() else R.group_halves(rows.groups, 1, seed)[0]
    c2, t2 = rows.take(cal2), rows.take(~cal2)
    conf = R.fit_conformal(c2.probs, c2.labels, alpha)
    sets = R.set_figures(conf, t2.probs, t2.labels)
    calib = R.calibration_figures(c2.probs, c2.labels, t2.probs, t2.labels)
    for rule, thr, a, d, t in thresholds:
        fig = R.selective_figures(tr.uncertainty, tr.correct, thr)
        # H0: the accepted test images' risk is <= alpha; a small p says these images are not like the calibration's
        exceed_p = float(binom.sf(fig["errors"] - 1, fig["n_accepted"], a)) if fig["n_accepted"] else float("nan")
        out.append({**base, "rule": rule, "alpha": a, "delta": d, "threshold": thr,
                    "calibration_coverage": None if t is None else t.coverage,
                    "calibration_risk": None if t is None else t.risk, "ucb": None if t is None else t.ucb,
                    "test_coverage": fig["coverage"], "test_risk": fig["risk"], "test_accepted": fig["n_accepted"],
                    "test_errors": fig["errors"], "test_exceeds_alpha_p": exceed_p, "conformal_coverage": sets["coverage"],
                    "conformal_set_size": sets["mean_set_size"], "conformal_qhat": conf.qhat, **calib})
    return out, R.risk_coverage_curve(tr.uncertainty, tr.correct)


def risk_coverage_plot(curves: dict[str, dict], table: pd.DataFrame, path: Path) -> Path:
    """Selective risk against coverage on the test rows, one line per run, the chosen thresholds marked."""
    from meddiff.report.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for run, curve in curves.items():
        line, = ax.plot(curve["coverage"] * 100, curve["risk"] * 100, "-", label=run)
        for _, r in table[table["run"] == run].iterrows():
            if r["test_accepted"]:
                ax.plot(r["test_coverage"] * 100, r["test_risk"] * 100, "o" if "ltt" in r["rule"] else "x",
                        color=line.get_color(), label=f"{run}: {r['rule']}")
    for a in sorted(set(table["alpha"].dropna())):
        ax.axhline(100 * a, color="grey", ls=":", lw=1)
    ax.set_xlabel("coverage (% of test images accepted)")
    ax.set_ylabel("error rate among accepted (%)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def selective_section(runs: Sequence[ResultsSet], out_dir: str | Path, alpha: float = 0.1, delta: float = 0.1,
                      seed: int = 0) -> dict[str, Any]:
    """The section: {"title", "markdown", "figures": {name: path}, "tables": {name: frame}}; writes
    ``selective.parquet`` and ``selective.json`` (the table) and ``risk_coverage.png`` into ``out_dir``."""
    out = Path(out_dir)
    rows, curves = [], {}
    vals = {r.model_id: r for r in runs if r.split == "val" and r.model_id}
    for run in runs:
        val_run = vals.get(run.model_id) if run.split != "val" else None
        r, curve = run_rows(run, alpha, delta, seed, val_run)
        rows += r
        curves[run.name] = curve
    table = pd.DataFrame(rows)
    table.to_parquet(out / "selective.parquet", index=False)
    table.to_json(out / "selective.json", orient="records", indent=2)
    figures = {"risk_coverage": risk_coverage_plot(curves, table, out / "risk_coverage.png")}
    md = [f"## {TITLE}", "",
          "An image is accepted when its uncertainty is at or below the threshold, else referred. `ltt` (Learn then "
          "Test, Angelopoulos et al.) and `ltt-multistart` (five fixed-sequence chains at delta / 5) certify that "
          "the error rate among accepted images is <= alpha with probability >= 1 - delta over the calibration "
          "rows; `naive` takes the largest threshold whose calibration "
          "error is <= alpha (no guarantee). Coverage and risk are measured on the test rows (never the calibration "
          "rows); threshold – = refer every image. Conformal: LAC prediction sets at level 1 - alpha. ECE of the top "
          "probability on the test rows, raw and after temperature scaling / isotonic regression fitted on the "
          "calibration rows. All rates in %.", ""]
    lines = ["| run | calibration | rule | alpha | delta | threshold | cal. coverage | test coverage | test risk "
             "| accepted (errors) / test |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        thr = "–" if r["threshold"] is None or r["threshold"] != r["threshold"] else f"{r['threshold'] + 0.0:.4f}"
        lines.append(f"| {r['run']} | {r['calibration']} ({r['n_calibration']} rows) | {r['rule']} | {r['alpha']} "
                     f"| {r['delta']} | {thr} | {_pct(r['calibration_coverage'])} | {_pct(r['test_coverage'])} "
                     f"| {_pct(r['test_risk'])} | {r['test_accepted']} ({r['test_errors']}) / {r['n_test']} |")
    flagged = table[(table["test_exceeds_alpha_p"] < 0.01) & table["rule"].str.startswith(("ltt", "referral"))]
    for _, r in flagged.iterrows():
        lines += ["", f"**Warning ({r['run']}, {r['rule']})**: the error rate among accepted test images, "
                      f"{_pct(r['test_risk'])} % ({r['test_errors']} of {r['test_accepted']}), is above alpha = "
                      f"{r['alpha']} beyond chance (one-sided binomial p = {r['test_exceeds_alpha_p']:.2g}). The "
                      f"guarantee assumes the test images are exchangeable with the calibration images; these are "
                      f"not (another split, site or population): calibrate on images like these before relying on it."]
    md += lines + ["", "| run | conformal coverage | mean set size | temperature | ECE raw | ECE temperature "
                       "| ECE isotonic |", "|---|---|---|---|---|---|---|"]
    for _, r in table.drop_duplicates("run").iterrows():
        md.append(f"| {r['run']} | {_pct(r['conformal_coverage'])} | {r['conformal_set_size']:.2f} "
                  f"| {r['temperature']:.2f} | {r['ece_raw']:.3f} | {r['ece_temperature']:.3f} "
                  f"| {r['ece_isotonic']:.3f} |")
    md += ["", f"![risk-coverage]({figures['risk_coverage'].name})", ""]
    return {"title": TITLE, "markdown": "\n".join(md) + "\n", "figures": figures, "tables": {"selective": table}}
