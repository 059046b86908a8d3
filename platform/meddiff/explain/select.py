"""Which scored images to explain: a small selection language over a results set.

    uncertain:k   the k most uncertain images (highest vote entropy; ties: smallest error margin first)
    certain:k     the k least uncertain images (ties: largest error margin first)
    extremes:k    both of the above (k each), certain first
    errors        every misclassified image (labelled rows whose prediction is wrong), most certain mistakes first
    errors:k      the k most certain mistakes
    ids:a,b,c     exactly these image ids, in this order
    all           every scored image
Rows that failed scoring (status "error") are never selected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from meddiff import metrics as M
from meddiff.errors import ConfigError
from meddiff.results import schema as S
from meddiff.results.runs import ok_rows

KINDS = ("uncertain", "certain", "extremes", "errors", "ids", "all")
SELECTED_COLUMNS = ("image_id", "label", "pred", "uncertainty", "reason")


@dataclass(frozen=True)
class Selection:
    kind: str
    k: int | None = None
    ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "ids":
            return "ids:" + ",".join(self.ids)
        return self.kind if self.k is None else f"{self.kind}:{self.k}"


def parse_selection(text: str) -> Selection:
    """Parse ``uncertain:8``, ``certain:4``, ``extremes:8``, ``errors``, ``errors:5``, ``ids:a,b``, ``all``."""
    kind, _, arg = str(text).strip().partition(":")
    if kind not in KINDS:
        raise ConfigError(f"select {text!r}: unknown kind {kind!r}; expected one of uncertain:k, certain:k, extremes:k, "
                          f"errors[:k], ids:a,b,..., all")
    if kind == "ids":
        ids = tuple(i.strip() for i in arg.split(",") if i.strip())
        if not ids:
            raise ConfigError(f"select {text!r}: ids: needs at least one image id, e.g. ids:img001,img007")
        return Selection("ids", ids=ids)
    if kind == "all":
        if arg:
            raise ConfigError(f"select {text!r}: 'all' takes no argument")
        return Selection("all")
    if not arg:
        if kind == "errors":
            return Selection("errors")
        raise ConfigError(f"select {text!r}: {kind} needs a count, e.g. {kind}:8")
    try:
        k = int(arg)
    except ValueError:
        raise ConfigError(f"select {text!r}: expected a positive integer count after '{kind}:', got {arg!r}") from None
    if k < 1:
        raise ConfigError(f"select {text!r}: expected a positive integer count, got {k}")
    return Selection(kind, k=k)


def _certainty_tiebreak(df: pd.DataFrame) -> np.ndarray:
    """Larger = more certain among equal uncertainties: the relative error margin (diffusion), else the top prob."""
    if df[S.MEAN_ERROR].notna().all() and len(df):
        return M.error_margin(np.stack(df[S.MEAN_ERROR].to_numpy()))
    if df[S.PROB].notna().all() and len(df):
        return np.stack(df[S.PROB].to_numpy()).max(axis=1)
    return np.zeros(len(df))


def select_images(results: pd.DataFrame, selection: Selection | str) -> pd.DataFrame:
    """The selected rows of a results frame, in selection order, with columns SELECTED_COLUMNS (ids are unique)."""
    sel = parse_selection(selection) if isinstance(selection, str) else selection
    ok = ok_rows(results).reset_index(drop=True)
    order = M.certainty_order(ok[S.UNCERTAINTY].to_numpy(dtype=np.float64), _certainty_tiebreak(ok))  # most certain first
    picks: list[tuple[int, str]] = []
    if sel.kind in ("certain", "extremes"):
        picks += [(i, "certain") for i in order[: sel.k]]
    if sel.kind in ("uncertain", "extremes"):
        picks += [(i, "uncertain") for i in order[::-1][: sel.k]]
    if sel.kind == "errors":
        wrong = ((ok[S.LABEL] >= 0) & (ok[S.PRED] != ok[S.LABEL])).to_numpy()
        picks += [(i, "error") for i in order if wrong[i]][: sel.k or None]
    if sel.kind == "all":
        picks += [(i, "all") for i in range(len(ok))]
    if sel.kind == "ids":
        where = {iid: i for i, iid in enumerate(ok[S.IMAGE_ID].astype(str))}
        missing = [i for i in sel.ids if i not in where]
        if missing:
            raise ConfigError(f"select ids: {missing[:5]} are not scored (status ok) in this results set; "
                              f"pick ids from its image_id column")
        picks += [(where[i], "id") for i in sel.ids]
    seen: set[int] = set()
    rows = []
    for i, reason in picks:
        if i in seen:
            continue
        seen.add(i)
        r = ok.iloc[i]
        rows.append({"image_id": str(r[S.IMAGE_ID]), "label": int(r[S.LABEL]), "pred": int(r[S.PRED]),
                     "uncertainty": float(r[S.UNCERTAINTY]), "reason": reason})
    return pd.DataFrame(rows, columns=list(SELECTED_COLUMNS))
