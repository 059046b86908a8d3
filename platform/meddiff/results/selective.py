"""Selective prediction on a results set: the arrays the referral maths needs, the calibration/test split, the
referral.json record ``meddiff calibrate`` writes and the re-split check table. The maths is
``meddiff.results.referral``; this module reads results sets (``meddiff.results.runs``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meddiff.errors import ResultsError
from meddiff.results import referral as R
from meddiff.results import schema as S
from meddiff.results.runs import ResultsSet

CHECK_ALPHAS = (0.05, 0.10)
CHECK_DELTA = 0.1


@dataclass(frozen=True)
class Rows:
    """The labelled scored rows of a results set as arrays: uncertainty [n], correct [n] (pred == label), probs [n, C]
    (vote shares or softmax), labels [n], groups [n] (patient/lesion, else image id), splits [n]."""

    uncertainty: np.ndarray
    correct: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    splits: np.ndarray

    def take(self, mask: np.ndarray) -> "Rows":
        return Rows(*(a[mask] for a in (self.uncertainty, self.correct, self.probs, self.labels, self.groups,
                                         self.splits)))

    def __len__(self) -> int:
        return len(self.labels)


def rows_of(frame: pd.DataFrame, where: str = "results") -> Rows:
    """``frame``: scored labelled rows (``ResultsSet.frame``). ResultsError when a row has no uncertainty or prob."""
    if frame.empty:
        raise ResultsError(f"{where}: no scored rows with a known label to calibrate on")
    u = frame[S.UNCERTAINTY].to_numpy(dtype=np.float64)
    bad = frame[S.IMAGE_ID][np.isnan(u) | frame[S.PROB].isna().to_numpy()]
    if len(bad):
        raise ResultsError(f"{where}: {len(bad)} scored row(s) lack uncertainty or prob (first: image "
                           f"{bad.iloc[0]!r}); selective prediction needs both")
    labels = frame[S.LABEL].to_numpy().astype(np.int64)
    groups = frame[S.GROUP].where(frame[S.GROUP].notna(), frame[S.IMAGE_ID]).astype(str).to_numpy()
    return Rows(u, frame[S.PRED].to_numpy().astype(np.int64) == labels,
                np.stack([np.asarray(p, dtype=np.float64) for p in frame[S.PROB]]), labels, groups,
                frame[S.SPLIT].astype(str).to_numpy())


def calibration_split(rows: Rows, referral: dict[str, Any] | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """(calibration mask, how it was chosen) for a report: the val rows when the set holds val and other rows; none
    when a referral (meta.json) already fixes the threshold (every row is then a test row); else a seeded
    group-aware 50/50 split."""
    splits = set(rows.splits)
    if "val" in splits and len(splits) > 1:
        return rows.splits == "val", "the set's val rows (tested on its other rows)"
    if referral:
        return np.zeros(len(rows), bool), f"the referral of meta.json ({referral.get('path') or 'referral.json'})"
    cal = R.group_halves(rows.groups, 1, seed)[0]
    return cal, f"a seeded (seed {seed}) group-aware 50/50 split of the rows (calibration half, test half)"


def calibrate(run: ResultsSet, alpha: float, delta: float, rule: str = "ltt", split: str | None = None,
              conformal_alpha: float | None = None) -> dict[str, Any]:
    """The referral.json record of ``run``: the threshold of ``rule`` chosen on its rows (only split ``split`` when
    given), its calibration figures, the naive rule's for comparison, the temperature and the conformal qhat."""
    from meddiff.provenance import code_version

    rows = rows_of(run.frame, str(run.path))
    if split:
        rows = rows.take(rows.splits == split)
        if not len(rows):
            raise ResultsError(f"{run.path}: no scored labelled rows of split {split!r}; its splits are "
                               f"{sorted(set(run.frame[S.SPLIT].astype(str)))}")
    chosen = R.choose_threshold(rule, rows.uncertainty, rows.correct, alpha, delta)
    naive = R.naive_threshold(rows.uncertainty, rows.correct, alpha, delta)
    conf = R.fit_conformal(rows.probs, rows.labels, conformal_alpha or alpha)
    return {
        "rule": rule, "alpha": alpha, "delta": delta, "threshold": chosen.threshold,
        "calibration": chosen.as_dict(), "naive": naive.as_dict(),
        "results": str(Path(run.path).resolve()), "split": split, "model_id": run.model_id,
        "method": run.method, "temperature": R.fit_temperature(rows.probs, rows.labels),
        "conformal": conf.as_dict(), "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def check(run: ResultsSet, repeats: int = 200, alphas=CHECK_ALPHAS, delta: float = CHECK_DELTA,
          seed: int = 0) -> list[dict[str, Any]]:
    """``referral.resplit_check`` on every labelled scored row of ``run`` (group-aware)."""
    rows = rows_of(run.frame, str(run.path))
    return R.resplit_check(rows.uncertainty, rows.correct, rows.groups, rows.probs, rows.labels, alphas=alphas,
                           delta=delta, repeats=repeats, seed=seed)


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f} %"


def check_markdown(rows: list[dict[str, Any]]) -> str:
    """The re-split table as markdown: thresholds (LTT vs naive) and conformal sets."""
    if not rows:
        return ""
    r0 = rows[0]
    head = (f"{r0['repeats']} group-aware 50/50 re-splits of {r0['n']} rows, delta = {r0['delta']}. Raw: test-half "
            f"risk > alpha (noisy: the half's own risk is an estimate). Population: calibration drawn with replacement "
            f"from all rows, the chosen threshold's exact risk on all rows > alpha; LTT must stay <= delta + "
            f"{r0['mc_error']:.3f} (Monte Carlo error 2 sqrt(delta (1 - delta) / R)).\n\n")
    lines = ["| alpha | rule | violations (raw) | violations (population) | mean coverage | mean risk | refer all |",
             "|---|---|---|---|---|---|---|"]
    conf = ["| alpha | sets | mean coverage | sd | below 1 - alpha | population coverage | mean set size |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["rule"].startswith("conformal"):
            conf.append(f"| {r['alpha']:.2f} | {r['rule']} | {_pct(r['mean_coverage'])} | {_pct(r['coverage_sd'])} "
                        f"| {_pct(r['coverage_below_target'])} | {_pct(r['population_coverage'])} "
                        f"| {r['mean_set_size']:.2f} |")
        else:
            lines.append(f"| {r['alpha']:.2f} | {r['rule']} | {_pct(r['violation_raw'])} "
                         f"| {_pct(r['violation_population'])} | {_pct(r['mean_coverage'])} | {_pct(r['mean_risk'])} "
                         f"| {_pct(r['refer_all'])} |")
    out = head + "\n".join(lines)
    if len(conf) > 2:
        out += "\n\n" + "\n".join(conf)
    return out + "\n"


@dataclass(frozen=True)
class HeldOut:
    """A threshold chosen on calibration rows and measured on the held-out test rows (the dashboard's page).
    how: how the calibration rows were chosen; chosen: the ``referral.Threshold``; test: ``selective_figures`` of the
    test rows; curve: risk and coverage of the test rows at every distinct uncertainty."""

    how: str
    chosen: R.Threshold
    test: dict[str, float]
    curve: pd.DataFrame


def held_out(frame: pd.DataFrame, rule: str, alpha: float, delta: float, seed: int = 0,
             where: str = "results") -> HeldOut:
    """``rule``'s threshold on the calibration rows of ``frame`` (its val rows, else a seeded group-aware 50/50
    split) and its coverage and selective risk on the other rows."""
    rows = rows_of(frame, where)
    cal, how = calibration_split(rows, None, seed)
    c, t = rows.take(cal), rows.take(~cal)
    chosen = R.choose_threshold(rule, c.uncertainty, c.correct, alpha, delta)
    curve = pd.DataFrame(R.risk_coverage_curve(t.uncertainty, t.correct))
    return HeldOut(how, chosen, R.selective_figures(t.uncertainty, t.correct, chosen.threshold), curve)


def referral_rules() -> dict[str, str]:
    """{rule name: what it guarantees} of ``meddiff.rules.REFERRAL_RULES`` (for the dashboard, which reads only
    ``meddiff.results``)."""
    from meddiff.rules import REFERRAL_RULES

    return {name: r.guarantee for name, r in REFERRAL_RULES.items()}
