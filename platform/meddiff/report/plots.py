"""PNG figures of the report (matplotlib, Agg backend): every function takes frames and a path, writes one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meddiff.report.table import COVERAGES


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


RULE_STYLE = {"vote": "-", "average": "--", "softmax": "-.", "normalised": ":"}


def coverage_plot(coverage: pd.DataFrame, path: Path) -> Path:
    """Fig. 3: accuracy of the most certain images against the fraction kept, one panel per data set."""
    plt = _plt()
    datasets = sorted(coverage["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for (run, rule), g in coverage[coverage["dataset"] == ds].groupby(["run", "rule"], sort=False):
            ax.plot(g["coverage"] * 100, g["accuracy"] * 100, RULE_STYLE.get(rule, "-"), label=f"{run} ({rule})")
        for c in COVERAGES[1:]:
            ax.axvline(c * 100, color="0.8", lw=0.8)
        ax.set_xlim(100, 0)
        ax.set_xlabel("coverage: % of images kept (most uncertain filtered out)")
        ax.set_ylabel("accuracy on kept images (%)")
        ax.set_title(ds)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def n_ablation_plot(summary: pd.DataFrame, path: Path) -> Path:
    """Fig. 2: accuracy against N for the vote and the average (eps and x errors), mean and 10-90 % band over
    random draw subsets, one panel per run."""
    plt = _plt()
    runs = list(dict.fromkeys(summary["run"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, run in zip(axes[0], runs):
        g = summary[summary["run"] == run]
        for key, sub in g.groupby("series", sort=False):
            sub = sub.sort_values("n")
            line, = ax.plot(sub["n"], sub["mean"] * 100, RULE_STYLE.get(key.split(" ")[0], "-"), marker="o", ms=3,
                            label=key)
            ax.fill_between(sub["n"], sub["q10"] * 100, sub["q90"] * 100, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("N (draws per image)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(run, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def t_ablation_plot(buckets: pd.DataFrame, ranges: pd.DataFrame, path: Path) -> Path:
    """Per run: single-draw accuracy per t bucket with the draws' error sizes (left); each rule restricted to a t
    range (right)."""
    plt = _plt()
    runs = list(dict.fromkeys(buckets["run"]))
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.6 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        b = buckets[buckets["run"] == run]
        mid = (b["t_lo"] + b["t_hi"]) / 2
        ax = row[0]
        ax.plot(mid, b["accuracy"] * 100, "o-", color="C0", label="single-draw accuracy")
        ax.set_xlabel("t of the draw")
        ax.set_ylabel("single-draw accuracy (%)", color="C0")
        ax.axhline(50, color="0.7", lw=0.8)
        ax2 = ax.twinx()
        ax2.semilogy(mid, b["mean_error_eps"], "s--", color="C1", ms=3, label="mean eps error")
        ax2.semilogy(mid, b["mean_error_x"], "^:", color="C2", ms=3, label="mean x error")
        ax2.set_ylabel("mean per-draw error (log)")
        ax2.legend(fontsize=7, loc="upper center")
        ax.set_title(f"{run}: one draw as a classifier", fontsize=9)
        ax.grid(alpha=0.3)
        ax = row[1]
        r = ranges[ranges["run"] == run]
        labels = [f"{lo:g}-{hi:g}" for lo, hi in dict.fromkeys(zip(r["t_lo"], r["t_hi"]))]
        series = [("vote", "eps"), ("average", "eps"), ("average", "x"), ("normalised", "eps")]
        width = 0.8 / len(series)
        for i, (rule, tg) in enumerate(series):
            s = r[(r["rule"] == rule) & (r["target"] == tg)]
            ax.bar(np.arange(len(s)) + i * width, s["accuracy"] * 100, width, label=f"{rule} ({tg})")
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
        ax.set_xticklabels(labels, rotation=45, fontsize=7)
        ax.set_xlabel("t range of the draws used")
        ax.set_ylabel("accuracy (%)")
        lo = r["accuracy"].min() * 100
        ax.set_ylim(max(0, lo - 5), 100)
        ax.legend(fontsize=7)
        ax.set_title(f"{run}: rules on a t range", fontsize=9)
    return _save(fig, path)


def confusion_plot(confusion: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    keys = list(dict.fromkeys(zip(confusion["run"], confusion["rule"])))
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_axis_off()
    for ax, (run, rule) in zip(axes.flat, keys):
        g = confusion[(confusion["run"] == run) & (confusion["rule"] == rule)]
        n = int(np.sqrt(len(g)))
        cm = g.sort_values(["true", "pred"])["count"].to_numpy().reshape(n, n)
        names = g.sort_values("true")["true_name"].unique()
        ax.imshow(cm, cmap="Blues")
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black" if cm[i, j] < cm.max() / 2 else "white")
        ax.set_xticks(range(n), names, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{run} ({rule})", fontsize=8)
    return _save(fig, path)


def reliability_plot(calibration: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
    for (run, rule), g in calibration.groupby(["run", "rule"], sort=False):
        g = g[g["count"] > 0]
        ax.plot(g["confidence"], g["accuracy"], "o-", ms=3, label=f"{run} ({rule})")
    ax.set_xlabel("confidence (top vote share / top softmax)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (ECE in the table)", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def gap_plot(gaps: pd.DataFrame, cross: pd.DataFrame | None, path: Path) -> Path:
    """Vote - average accuracy (points) over every replayed setting, and across runs (trained settings)."""
    plt = _plt()
    panels = ["N", "t range", "shift delta"] + (["runs"] if cross is not None and len(cross) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], panels):
        ax.axhline(0, color="0.5", lw=0.8)
        if setting == "runs":
            x = np.arange(len(cross))
            common = "vote_common" in cross.columns and cross["vote_common"].notna().all()
            sfx = "_common" if common else ""
            ax.bar(x - 0.2, (cross["vote" + sfx] - cross["average" + sfx]) * 100, 0.4, label="eps errors")
            ax.bar(x + 0.2, (cross["vote" + sfx] - cross["average_x" + sfx]) * 100, 0.4, label="x errors")
            ax.set_xticks(x, cross["run"], rotation=30, fontsize=7, ha="right")
            n_text = f", first {int(cross['n_common'].iloc[0])} draws" if common else ""
            ax.set_title(f"trained settings (one run each{n_text})", fontsize=9)
        else:
            g = gaps[gaps["setting"] == setting]
            for (run, tg), s in g.groupby(["run", "target"], sort=False):
                if setting == "t range":
                    ax.plot(range(len(s)), s["gap"] * 100, "o-" if tg == "eps" else "s:", ms=3, label=f"{run} ({tg})")
                    ax.set_xticks(range(len(s)), s["value"], rotation=45, fontsize=7)
                else:
                    s = s.sort_values("value")
                    ax.plot(s["value"], s["gap"] * 100, "o-" if tg == "eps" else "s:", ms=3, label=f"{run} ({tg})")
            if setting == "N":
                ax.set_xscale("log")
            ax.set_xlabel({"N": "N (draws)", "t range": "t range of the draws",
                           "shift delta": "scoring-time shift change (re-weighted draws)"}[setting])
            ax.set_title(f"vote - average over {setting}", fontsize=9)
        ax.set_ylabel("vote - average accuracy (points)")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def stratum_plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Accuracy and balanced accuracy (%) per stratum of one metadata column with their cluster-bootstrap 95 % CIs
    (``meddiff.results.strata.stratum_table``); the pooled row is drawn first and the pooled accuracy as a line.
    A stratum without a CI is drawn without error bars."""
    plt = _plt()
    labels = [f"{s}\n(n={n}, {g} groups)" for s, n, g in zip(table["stratum"], table["images"], table["groups"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(table) + 1.5), 3.6))
    for i, (key, name) in enumerate((("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))):
        v = table[key].to_numpy(np.float64) * 100
        err = np.vstack([v - table[f"{key}_lo"].to_numpy(np.float64) * 100,
                         table[f"{key}_hi"].to_numpy(np.float64) * 100 - v])
        ax.bar(x + (i - 0.5) * 0.38, v, 0.38, yerr=np.nan_to_num(err), capsize=3, label=name,
               color=f"C{i}", alpha=0.85)
    ax.axhline(table["accuracy"].iloc[0] * 100, color="0.3", lw=0.8, ls="--", label="pooled accuracy")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% (95 % CI over groups)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
