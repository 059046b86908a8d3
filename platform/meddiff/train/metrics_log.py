"""The run's ``metrics.jsonl`` (one JSON object per logged step, rank 0 only) and its plot ``loss.png``.

Training lines carry ``step``, the loss terms (``loss``, ``loss_*``), ``lr``, ``grad_norm``, ``elapsed_s`` (seconds since
this worker group started its loop) and ``resumed_from_step`` (the step that worker group started from: 0 for a fresh
run, the checkpoint's step after a resume or a restarted worker group); validation lines carry ``step`` and ``val_*``.
"""

from __future__ import annotations

import json
from pathlib import Path


def append_metrics(path: Path, row: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(metrics_file: Path, out: Path, ylabel: str = "training loss") -> None:
    """Every ``loss*`` series against step (log scale) and the val accuracy (right axis), from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_file)
    train = [r for r in rows if "loss" in r]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in [k for k in train[-1] if k.startswith("loss")]:
        points = [(r["step"], r[key]) for r in train if key in r and r[key] > 0]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    val = [r for r in rows if "val_accuracy" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_accuracy"] for r in val], "o-", color="k", label="val accuracy")
        ax2.set_ylabel("val accuracy")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=8)
    ax.set_title(metrics_file.parent.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
