"""The vote-vs-average question (issue 4, the paper's Fig. 2) answered from one run's stored per-draw errors.

For a diffusion run with stored draws, every setting that can be changed *after scoring* is replayed (``ablation``):
    N           random subsets of the N stored draws (several per n), both rules on the same subsets
    target      eps (official code) vs x (paper eq. 4) vs v: votes are identical, averages differ
    t range     only the draws whose t lies in a window
    shift       the draws re-weighted to another schedule shift (importance weights on the log-SNR density)
Settings that need new training (schedule shift at training time, training length, model size) are compared across
runs: give the report several diffusion runs of one data set.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from meddiff.report import ablation as A
from meddiff.report.models import draw_logsnr, logsnr
from meddiff.results.runs import ResultsSet

T_EDGES = tuple(np.round(np.linspace(0.0, 1.0, 11), 3))
T_RANGES = ((0.0, 1.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0), (0.0, 0.5), (0.5, 1.0), (0.0, 0.75),
            (0.1, 0.9))
SHIFT_DELTAS = (-4.0, -2.0, 0.0, 2.0, 4.0)
REPLAY_TARGETS = ("eps", "x")


def default_ns(n: int) -> list[int]:
    grid = [1, 3, 5, 7, 9, 11, 15, 21, 25, 31, 41, 51, 75, 101, 151, 201, 251, 301, 401, 501]
    return sorted({k for k in grid if k <= n} | {n})


def replay(run: ResultsSet, info: dict[str, Any], ns: Sequence[int] | None = None, repeats: int = 20, seed: int = 0,
           n_common: int | None = None) -> dict[str, pd.DataFrame]:
    """All replays of one run (``info``: its ``report.models.describe``). Returns frames keyed n_ablation, t_buckets, t_ranges, targets, shifts, summary.

    ``n_common``: also give the rules on the first n_common draws (summary columns ``*_common``), so runs scored with
    different N compare at the same N; with the same seed these are the very same (eps, t) draws in every run.
    """
    y = run.y
    t = run.draw_t()
    lam = draw_logsnr(run)
    stored = info.get("error_target") or "eps"
    eps = A.to_eps_errors(run.draw_errors(), lam, stored)
    n = eps.shape[2]
    by_target = {tg: A.retarget(eps, lam, tg) for tg in A.TARGETS}
    tag = {"run": run.name, "dataset": info["dataset"]}

    n_abl = pd.concat([A.n_ablation(by_target[tg], y, ns or default_ns(n), repeats, seed,
                                    rules=("vote", "average")).assign(target=tg) for tg in REPLAY_TARGETS],
                      ignore_index=True)
    # the vote does not depend on the target: keep one copy of it
    n_abl = n_abl[(n_abl["rule"] == "average") | (n_abl["target"] == "eps")].assign(**tag)

    buckets = A.t_bucket_accuracy(eps, t, y, T_EDGES)
    buckets["mean_error_x"] = A.t_bucket_accuracy(by_target["x"], t, y, T_EDGES)["mean_error"]
    buckets = buckets.rename(columns={"mean_error": "mean_error_eps"}).assign(**tag)
    mids = (np.array(T_EDGES[:-1]) + np.array(T_EDGES[1:])) / 2
    buckets["logsnr_mid"] = logsnr(run, mids)

    ranges = pd.concat([A.t_range_ablation(by_target[tg], t, y, T_RANGES).assign(target=tg) for tg in REPLAY_TARGETS],
                       ignore_index=True).assign(**tag)

    target_rows, shift_rows = [], []
    shift0 = float(info.get("shift", 0.0))
    for tg in A.TARGETS:
        preds = A.weighted_rules(by_target[tg])
        for rule in A.RULES:
            target_rows.append({"target": tg, "rule": rule, "accuracy": A.accuracy_of(preds.of(rule), y)})
    for delta in SHIFT_DELTAS:
        w = A.logsnr_density_weights(lam, shift0, shift0 + delta)
        ess = float(np.mean(w.sum(axis=1) ** 2 / (w ** 2).sum(axis=1)))  # effective draws per image
        for tg in REPLAY_TARGETS:
            preds = A.weighted_rules(by_target[tg], w)
            for rule in ("vote", "average"):
                shift_rows.append({"shift_delta": delta, "shift": shift0 + delta, "target": tg, "rule": rule,
                                   "accuracy": A.accuracy_of(preds.of(rule), y), "effective_draws": ess})
    targets = pd.DataFrame(target_rows).assign(**tag)
    shifts = pd.DataFrame(shift_rows).assign(**tag)

    full = A.weighted_rules(by_target[stored])
    test = A.mcnemar(full.vote == y, full.average == y)
    summary = {**tag, "backbone": info["backbone"], "params_m": info["params_m"],
               "train_steps": info["train_steps"], "shift": shift0, "shift_size": info.get("shift_size"),
               "n_draws": n, "stored_target": stored,
               "vote": A.accuracy_of(full.vote, y), "average": A.accuracy_of(full.average, y),
               "average_x": A.accuracy_of(A.weighted_rules(by_target["x"]).average, y),
               "normalised": A.accuracy_of(full.normalised, y),
               "vote_only_right": test["only_first"], "average_only_right": test["only_second"],
               "mcnemar_p": test["p_value"]}
    summary["gap"] = summary["vote"] - summary["average"]
    if n_common:
        first = A.weighted_rules(by_target[stored][:, :, :n_common])
        summary.update({"n_common": n_common, "vote_common": A.accuracy_of(first.vote, y),
                        "average_common": A.accuracy_of(first.average, y),
                        "average_x_common": A.accuracy_of(A.weighted_rules(by_target["x"][:, :, :n_common]).average, y)})
    return {"n_ablation": n_abl, "t_buckets": buckets, "t_ranges": ranges, "targets": targets, "shifts": shifts,
            "summary": pd.DataFrame([summary])}


def gap_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One long frame of vote - average accuracy gaps over every replayed setting (for the summary figure)."""
    rows: list[dict[str, Any]] = []
    for run, g in frames["n_ablation"].groupby("run"):
        vote = g[g["rule"] == "vote"].groupby("n")["accuracy"].mean()
        for tg in REPLAY_TARGETS:
            avg = g[(g["rule"] == "average") & (g["target"] == tg)].groupby("n")["accuracy"].mean()
            rows += [{"run": run, "setting": "N", "value": float(n), "target": tg, "gap": vote[n] - avg[n]}
                     for n in vote.index]
    for (run, tg, lo, hi), g in frames["t_ranges"].groupby(["run", "target", "t_lo", "t_hi"], sort=False):
        acc = g.set_index("rule")["accuracy"]
        rows.append({"run": run, "setting": "t range", "value": f"{lo:g}-{hi:g}", "target": tg,
                     "gap": acc["vote"] - acc["average"]})
    for (run, tg, d), g in frames["shifts"].groupby(["run", "target", "shift_delta"]):
        acc = g.set_index("rule")["accuracy"]
        rows.append({"run": run, "setting": "shift delta", "value": float(d), "target": tg,
                     "gap": acc["vote"] - acc["average"]})
    return pd.DataFrame(rows)
