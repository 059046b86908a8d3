"""Subgroups and shortcuts of a results frame: metrics per stratum of a metadata column, and how well the metadata
alone predicts the label (a shortcut probe), all with cluster-bootstrap confidence intervals that resample groups
(patients / lesions, the ``group`` column of ``meddiff.results.schema``), never images, because images of one group are
not independent.

    meta = expand_metadata(frame)                     # the ``metadata`` JSON column as one column per key
    table = stratum_table(frame, "site")              # per stratum and pooled: n, accuracy, sensitivity, AUC, ... + CIs
    probe = shortcut_probe(frame)                     # metadata-only classifier: AUC, balanced accuracy, verdict

Definitions (stated in every report that shows these numbers, ``METRIC_NOTE``):
    binary tasks: positive = class index 1 (the disease class in every meddiff task); sensitivity = TP / (TP + FN),
    specificity = TN / (TN + FP), AUC of ``prob[:, 1]``;
    more classes: sensitivity and specificity are macro one-vs-rest means, AUC is one-vs-rest macro
    (``meddiff.metrics.roc_auc``); balanced accuracy = mean recall over the classes present in the stratum.
The CIs are 95 % percentile intervals over ``n_boot`` resamples of groups with replacement (Field & Welsh 2007,
"Bootstrapping clustered data", J. R. Stat. Soc. B 69(3)); a resample where a metric is undefined (e.g. one class) is
dropped, and a CI is reported only when at least ``MIN_GROUPS`` groups and ``MIN_VALID`` of the resamples define it.

Pure pandas / numpy / scikit-learn: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from meddiff import metrics as M
from meddiff.errors import ResultsError
from meddiff.results import schema as S

POSITIVE_CLASS = 1
MIN_GROUPS = 10  # fewer groups in a stratum: no CI (a bootstrap over a handful of clusters is not a 95 % interval)
MIN_VALID = 0.5  # share of resamples in which a metric must be defined for its CI to be reported
SHORTCUT_AUC = 0.6  # "shortcut suspected" when the lower CI bound of the metadata-only AUC is above this
NO_SHORTCUT_AUC = 0.6  # "no evidence of a shortcut" when the upper CI bound is below this ... (else "inconclusive")
POOLED = "(all)"
MISSING = "(missing)"
METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc")
METRIC_NOTE = ("Binary tasks: positive = class index 1 (the disease class); sensitivity = TP/(TP+FN), specificity = "
               "TN/(TN+FP), AUC of the class-1 probability. More classes: macro one-vs-rest sensitivity, specificity "
               "and AUC. Balanced accuracy = mean recall over the classes present. 95 % CIs: cluster bootstrap that "
               f"resamples groups (patients / lesions; the image itself when the source has none), not images; no CI "
               f"with fewer than {MIN_GROUPS} groups or when a metric is undefined in more than "
               f"{100 * (1 - MIN_VALID):.0f} % of resamples.")


# --- metadata ---------------------------------------------------------------------------------------------------------


def expand_metadata(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``metadata`` JSON objects of ``frame`` as one column per key (index aligned with ``frame``; values as
    text, a key a row lacks is NaN). A null or empty metadata cell is an empty object. ResultsError naming the image
    when a cell is not a JSON object."""
    if S.METADATA not in frame.columns:
        return pd.DataFrame(index=frame.index)
    records = []
    ids = frame[S.IMAGE_ID] if S.IMAGE_ID in frame.columns else pd.Series(frame.index.astype(str), index=frame.index)
    for image_id, text in zip(ids, frame[S.METADATA]):
        if text is None or (isinstance(text, float) and text != text) or text == "":
            records.append({})
            continue
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"image {image_id!r}: metadata {text!r} is not JSON ({exc}); expected a JSON object "
                               f"such as {{\"sex\": \"F\", \"site\": \"A\"}}") from None
        if not isinstance(value, dict):
            raise ResultsError(f"image {image_id!r}: metadata is a JSON {type(value).__name__}; expected a JSON "
                               f"object of column -> value")
        records.append({str(k): (None if v is None else str(v)) for k, v in value.items()})
    return pd.DataFrame.from_records(records, index=frame.index) if records else pd.DataFrame(index=frame.index)


def metadata_columns(frame: pd.DataFrame, meta: pd.DataFrame | None = None) -> list[str]:
    """Metadata keys that take at least two values (a constant column cannot stratify or predict anything)."""
    meta = expand_metadata(frame) if meta is None else meta
    return [c for c in meta.columns if meta[c].fillna(MISSING).nunique() >= 2]


# --- cluster bootstrap ------------------------------------------------------------------------------------------------


def group_codes(frame: pd.DataFrame) -> np.ndarray:
    """[M] integer code of each row's group (the ``group`` column; the image id where it is null)."""
    if S.GROUP in frame.columns:
        groups = frame[S.GROUP].where(frame[S.GROUP].notna(), frame[S.IMAGE_ID])
    else:
        groups = frame[S.IMAGE_ID]
    return pd.factorize(groups.astype(str))[0]


def cluster_bootstrap(stat: Callable[[np.ndarray], np.ndarray], codes: np.ndarray, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile CIs of the vector statistic ``stat(row indices)`` over resamples of groups.

    codes: [M] group code of each row (0..G-1). Each resample draws G groups with replacement and takes all rows of
    each drawn group (a group drawn twice counts twice). Returns (lo, hi, share of resamples in which each component
    was defined); a component defined in fewer than ``MIN_VALID`` of them, or with fewer than ``MIN_GROUPS`` groups,
    gets NaN bounds."""
    codes = np.asarray(codes)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    width = len(np.atleast_1d(stat(np.arange(len(codes)))))
    nan = np.full(width, np.nan)
    if n_groups < MIN_GROUPS or n_boot <= 0:
        return nan, nan.copy(), np.zeros(width)
    rows = np.arange(len(codes))
    rng = np.random.default_rng(seed)
    stats = np.empty((n_boot, width))
    for b in range(n_boot):
        drawn = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        idx = np.repeat(rows, drawn[codes])  # every row of a group as often as the group was drawn
        stats[b] = stat(idx)
    valid = ~np.isnan(stats)
    share = valid.mean(axis=0)
    tail = (1.0 - level) / 2.0
    lo, hi = nan.copy(), nan.copy()
    for j in range(width):
        if share[j] >= MIN_VALID:
            lo[j], hi[j] = np.quantile(stats[valid[:, j], j], [tail, 1.0 - tail])
    return lo, hi, share


# --- per-stratum metrics ----------------------------------------------------------------------------------------------


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (NaN without rows)."""
    y, pred = np.asarray(y), np.asarray(pred)
    classes = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in classes])) if len(classes) else float("nan")


def sens_spec(y: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Binary: ``meddiff.metrics.sensitivity_specificity`` with positive = class 1; more classes: macro one-vs-rest
    (classes with no positive, resp. no negative, rows are left out of the mean)."""
    if num_classes == 2:
        r = M.sensitivity_specificity(y, pred, positive=POSITIVE_CLASS)
        return r["sensitivity"], r["specificity"]
    sens = [M.sensitivity_specificity(y, pred, positive=c) for c in range(num_classes)]
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return mean(np.array([s["sensitivity"] for s in sens])), mean(np.array([s["specificity"] for s in sens]))


def auc(y: np.ndarray, prob: np.ndarray) -> float:
    """Binary: ``meddiff.metrics.binary_auc`` (class 1); more classes: ``meddiff.metrics.roc_auc`` (one-vs-rest)."""
    if len(np.unique(y)) < 2:
        return float("nan")
    if prob.shape[1] == 2:
        return M.binary_auc(y, prob)
    present = np.unique(y)
    if len(present) < prob.shape[1]:  # one-vs-rest over the classes present (sklearn needs every class)
        return float(np.mean([M.binary_auc((y == c).astype(int), prob[:, c]) for c in present]))
    return M.roc_auc(y, prob)


@dataclass(frozen=True)
class _Arrays:
    y: np.ndarray
    pred: np.ndarray
    prob: np.ndarray
    accept: np.ndarray | None  # bool per row when the rows carry a referral decision
    codes: np.ndarray
    num_classes: int

    @classmethod
    def of(cls, frame: pd.DataFrame, num_classes: int | None = None) -> "_Arrays":
        y = frame[S.LABEL].to_numpy().astype(int)
        if S.PROB in frame.columns and len(frame) and frame[S.PROB].notna().all():
            prob = np.stack(frame[S.PROB].to_numpy()).astype(np.float64)
        else:  # labels without a model (a manifest): only the metadata probe applies
            prob = np.full((len(frame), max(num_classes or 0, int(y.max()) + 1 if len(y) else 2, 2)), np.nan)
        c = num_classes or prob.shape[1]
        accept = None
        if S.DECISION in frame.columns and frame[S.DECISION].notna().any():
            accept = (frame[S.DECISION] == "accept").to_numpy()
        pred = frame[S.PRED].to_numpy().astype(int) if S.PRED in frame.columns else np.full(len(frame), -1)
        return cls(y, pred, prob, accept, group_codes(frame), c)

    @property
    def has_model(self) -> bool:
        return bool(len(self.pred)) and bool((self.pred >= 0).all()) and not np.isnan(self.prob).any()

    def metrics(self, idx: np.ndarray) -> np.ndarray:
        y, pred = self.y[idx], self.pred[idx]
        if not len(y):
            return np.full(len(METRICS) + (self.accept is not None), np.nan)
        sens, spec = sens_spec(y, pred, self.num_classes)
        out = [M.accuracy(y, pred), balanced_accuracy(y, pred), sens, spec, auc(y, self.prob[idx])]
        if self.accept is not None:
            out.append(float(self.accept[idx].mean()))
        return np.asarray(out, dtype=np.float64)


def stratum_table(frame: pd.DataFrame, column: str, n_boot: int = 1000, seed: int = 0,
                  class_names: Sequence[str] = ()) -> pd.DataFrame:
    """Per stratum of metadata ``column`` (rows lacking it form the stratum "(missing)") and a pooled row "(all)":
    images, groups, images per class, accuracy, balanced accuracy, sensitivity, specificity, AUC (from ``prob``) and,
    when the rows carry a referral decision, coverage (share accepted); each with ``_lo``/``_hi`` cluster-bootstrap
    95 % CI bounds over the stratum's groups. ``note`` says why a CI or metric is missing. ``frame``: scored rows
    (``meddiff.results.runs.scored``). ResultsError naming the column when no row carries it."""
    meta = expand_metadata(frame)
    if column not in meta.columns:
        raise ResultsError(f"metadata column {column!r} is in no row; the rows carry {sorted(meta.columns) or 'none'}")
    arrays = _Arrays.of(frame, len(class_names) or None)
    names = list(class_names) or [str(i) for i in range(arrays.num_classes)]
    values = meta[column].fillna(MISSING).astype(str).to_numpy()
    strata = [(POOLED, np.arange(len(frame)))] + [(v, np.flatnonzero(values == v)) for v in sorted(set(values))]
    keys = list(METRICS) + (["coverage"] if arrays.accept is not None else [])
    rows = []
    for k, (value, rows_idx) in enumerate(strata):
        sub = _Arrays(arrays.y[rows_idx], arrays.pred[rows_idx], arrays.prob[rows_idx],
                      None if arrays.accept is None else arrays.accept[rows_idx],
                      pd.factorize(arrays.codes[rows_idx])[0], arrays.num_classes)
        point = sub.metrics(np.arange(len(rows_idx)))
        lo, hi, share = cluster_bootstrap(sub.metrics, sub.codes, n_boot, seed + k)
        n_groups = int(sub.codes.max()) + 1 if len(sub.codes) else 0
        counts = np.bincount(sub.y, minlength=arrays.num_classes)
        row = {"column": column, "stratum": value, "images": len(rows_idx), "groups": n_groups,
               "per_class": ", ".join(f"{names[c]} {int(counts[c])}" for c in range(arrays.num_classes))}
        for j, key in enumerate(keys):
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = point[j], lo[j], hi[j]
        row["note"] = _stratum_note(sub, n_groups, point, share, keys, names)
        rows.append(row)
    return pd.DataFrame(rows)


def _stratum_note(sub: _Arrays, n_groups: int, point: np.ndarray, share: np.ndarray, keys: list[str],
                  names: list[str]) -> str:
    notes = []
    present = np.unique(sub.y)
    if len(present) < 2:
        only = names[present[0]] if len(present) else "none"
        undefined = "AUC and balanced accuracy across classes"
        if sub.num_classes == 2:
            undefined = "AUC and " + ("specificity" if len(present) and present[0] == POSITIVE_CLASS else "sensitivity")
        notes.append(f"one class only ({only}): {undefined} undefined")
    if n_groups < MIN_GROUPS:
        notes.append(f"{n_groups} group(s) < {MIN_GROUPS}: no CIs")
    else:
        missing = [k for k, v, s in zip(keys, point, share) if not np.isnan(v) and s < MIN_VALID]
        if missing:
            notes.append(f"no CI for {', '.join(missing)}: undefined in most resamples (too few of one class)")
    return "; ".join(notes)


# --- shortcut probe ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShortcutProbe:
    """What a metadata-only classifier achieves, next to the model.

    available: False when the rows carry no usable metadata column (``note`` says so); probe: one row per feature
    set ("all columns" and each column alone) with auc, balanced_accuracy and their CIs, out-of-fold over ``folds``
    stratified group folds, and a verdict; baselines: the reference rows (majority class, the model pooled, the
    metadata-only probe); within: per column, the model's stratum-size-weighted mean within-stratum balanced accuracy
    next to its pooled balanced accuracy; verdict: the overall verdict; note: how it was computed."""

    available: bool
    note: str
    verdict: str = ""
    probe: pd.DataFrame = field(default_factory=pd.DataFrame)
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)
    within: pd.DataFrame = field(default_factory=pd.DataFrame)
    oof: pd.DataFrame = field(default_factory=pd.DataFrame)  # out-of-fold probabilities of the "all columns" probe
    model_vs_probe: dict = field(default_factory=dict)  # paired difference of balanced accuracy, model - probe


def verdict_of(auc_lo: float, auc_hi: float) -> str:
    if auc_lo == auc_lo and auc_lo > SHORTCUT_AUC:
        return "shortcut suspected"
    if auc_hi == auc_hi and auc_hi < NO_SHORTCUT_AUC:
        return "no evidence of a shortcut"
    return "inconclusive"


VERDICT_NOTE = (f"Verdict per feature set: \"shortcut suspected\" when the lower 95 % CI bound of the metadata-only "
                f"AUC is above {SHORTCUT_AUC}; \"no evidence of a shortcut\" when its upper bound is below "
                f"{NO_SHORTCUT_AUC}; else \"inconclusive\". A suspected shortcut means the label can be told from the "
                f"metadata alone in this data set, so a model may have learned the metadata (site, device, batch) "
                f"instead of the disease; compare its within-stratum accuracy with its pooled accuracy.")


def _features(meta: pd.DataFrame, columns: Sequence[str]):
    """A scikit-learn transformer: numeric columns (every present value parses as a number) median-imputed with a
    missing indicator and standardised; the others one-hot with "(missing)" as a category."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical = [], []
    for c in columns:
        present = meta[c].dropna()
        (numeric if len(present) and pd.to_numeric(present, errors="coerce").notna().all()
         and present.nunique() > 2 else categorical).append(c)
    parts = []
    if numeric:
        parts.append(("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
                      numeric))
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore"), categorical))
    table = meta[list(columns)].copy()
    for c in numeric:
        table[c] = pd.to_numeric(table[c], errors="coerce")
    for c in categorical:
        table[c] = table[c].fillna(MISSING).astype(str)
    return ColumnTransformer(parts), table, numeric, categorical


def oof_probabilities(meta: pd.DataFrame, columns: Sequence[str], y: np.ndarray, codes: np.ndarray, folds: int,
                      seed: int, num_classes: int) -> np.ndarray:
    """[M, C] out-of-fold probabilities of a logistic regression on ``columns`` of ``meta`` (StratifiedGroupKFold on
    the group codes, so no group is in a training and a test fold at once). NaN rows if a fold cannot be fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline

    out = np.full((len(y), num_classes), np.nan)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(y)), y, codes):
        if len(np.unique(y[train])) < 2:
            continue
        transformer, table, _, _ = _features(meta, columns)
        model = make_pipeline(transformer, LogisticRegression(max_iter=1000))
        model.fit(table.iloc[train], y[train])
        p = model.predict_proba(table.iloc[test])
        out[np.ix_(test, model.classes_.astype(int))] = p
        out[test] = np.nan_to_num(out[test], nan=0.0)
    return out


def shortcut_probe(frame: pd.DataFrame, columns: Sequence[str] | None = None, folds: int = 5, seed: int = 0,
                   n_boot: int = 1000, num_classes: int | None = None) -> ShortcutProbe:
    """How well the metadata alone predicts the label (see ``ShortcutProbe``). ``frame``: scored rows. ``columns``:
    the metadata keys to use (default: every key with two or more values)."""
    meta = expand_metadata(frame)
    usable = metadata_columns(frame, meta)
    if columns is not None:
        unknown = [c for c in columns if c not in meta.columns]
        if unknown:
            raise ResultsError(f"shortcut probe: metadata column(s) {unknown} are in no row; the rows carry "
                               f"{sorted(meta.columns) or 'none'}")
        usable = [c for c in columns if c in usable]
    if not usable:
        return ShortcutProbe(False, "no metadata columns: the rows carry no metadata key with two or more values, so "
                                    "neither subgroups nor a shortcut can be assessed")
    arrays = _Arrays.of(frame, num_classes)
    y, codes, c = arrays.y, arrays.codes, arrays.num_classes
    n_groups = int(codes.max()) + 1
    min_class_groups = min(len(np.unique(codes[y == k])) for k in np.unique(y))
    k = min(folds, min_class_groups)
    if len(np.unique(y)) < 2 or k < 2:
        return ShortcutProbe(False, f"cannot cross-validate: {len(np.unique(y))} class(es), {n_groups} group(s); "
                                    "the probe needs two classes with at least two groups each")
    sets = [("all columns", list(usable))] + ([(col, [col]) for col in usable] if len(usable) > 1 else [])
    rows, oof_all = [], None
    for i, (name, cols) in enumerate(sets):
        p = oof_probabilities(meta, cols, y, codes, k, seed, c)
        ok = ~np.isnan(p).any(axis=1)
        pred = p.argmax(axis=1)

        def stat(idx, p=p, pred=pred, ok=ok):
            idx = idx[ok[idx]]
            return np.array([auc(y[idx], p[idx]), balanced_accuracy(y[idx], pred[idx])])

        point = stat(np.arange(len(y)))
        lo, hi, _ = cluster_bootstrap(stat, codes, n_boot, seed + 100 + i)
        rows.append({"features": name, "columns": ", ".join(cols), "auc": point[0], "auc_lo": lo[0],
                     "auc_hi": hi[0], "balanced_accuracy": point[1], "balanced_accuracy_lo": lo[1],
                     "balanced_accuracy_hi": hi[1], "verdict": verdict_of(lo[0], hi[0])})
        if i == 0:
            oof_all = pd.DataFrame({S.IMAGE_ID: frame[S.IMAGE_ID].to_numpy(), S.LABEL: y,
                                    "probe_pred": pred, "probe_prob": list(p)})
    probe = pd.DataFrame(rows)
    baselines = _baselines(arrays, probe.iloc[0], n_boot, seed)
    # seed + 50: the same group resamples as the model's pooled CI in the references, so the two pooled CIs agree
    within = pd.DataFrame([_within(arrays, meta[col].fillna(MISSING).astype(str).to_numpy(), col, n_boot, seed + 50)
                           for col in usable] if arrays.has_model else [])
    verdicts = set(probe["verdict"])
    verdict = ("shortcut suspected" if "shortcut suspected" in verdicts else
               "no evidence of a shortcut" if verdicts == {"no evidence of a shortcut"} else "inconclusive")
    note = (f"Logistic regression on the metadata alone ({', '.join(usable)}; categorical one-hot, numeric "
            f"standardised), out-of-fold probabilities from {k}-fold StratifiedGroupKFold on the group column "
            f"({n_groups} groups, {len(y)} images). " + VERDICT_NOTE)
    versus = _model_vs_probe(arrays, oof_all["probe_pred"].to_numpy(), n_boot, seed) if arrays.has_model else {}
    return ShortcutProbe(True, note, verdict, probe, baselines, within, oof_all, versus)


def _model_vs_probe(arrays: _Arrays, probe_pred: np.ndarray, n_boot: int, seed: int) -> dict:
    """The model's balanced accuracy minus the metadata-only probe's (all columns), paired over the same group
    resamples, with a sentence: the model beats the metadata when the CI's lower bound is above 0."""
    y, pred = arrays.y, arrays.pred

    def stat(idx):
        return np.array([balanced_accuracy(y[idx], pred[idx]) - balanced_accuracy(y[idx], probe_pred[idx])])

    point = stat(np.arange(len(y)))[0]
    lo, hi, _ = cluster_bootstrap(stat, arrays.codes, n_boot, seed + 60)
    points = f"{100 * point:+.1f} points (95 % CI {100 * lo[0]:+.1f} to {100 * hi[0]:+.1f})" if lo[0] == lo[0] else (
        f"{100 * point:+.1f} points (no CI)")
    if lo[0] == lo[0] and lo[0] > 0:
        text = f"The model beats the metadata alone: balanced accuracy {points} above the metadata-only probe."
    elif hi[0] == hi[0] and hi[0] < 0:
        text = (f"The model does NOT beat the metadata alone: balanced accuracy {points} relative to the "
                f"metadata-only probe.")
    else:
        text = (f"The model cannot be told apart from the metadata alone: balanced accuracy {points} relative to the "
                f"metadata-only probe.")
    return {"difference": point, "difference_lo": lo[0], "difference_hi": hi[0], "text": text}


def _baselines(arrays: _Arrays, probe_all: pd.Series, n_boot: int, seed: int) -> pd.DataFrame:
    y, pred, codes = arrays.y, arrays.pred, arrays.codes
    majority = int(np.bincount(y).argmax())

    def model_stat(idx):
        return np.array([M.accuracy(y[idx], pred[idx]), balanced_accuracy(y[idx], pred[idx]),
                         auc(y[idx], arrays.prob[idx])])

    maj_acc = lambda idx: np.array([float((y[idx] == majority).mean())])
    mlo, mhi, _ = cluster_bootstrap(maj_acc, codes, n_boot, seed + 51)
    refs = [
        {"reference": "majority class (always predicts the most frequent class)", "accuracy": maj_acc(np.arange(len(y)))[0],
         "accuracy_lo": mlo[0], "accuracy_hi": mhi[0], "balanced_accuracy": 1.0 / arrays.num_classes,
         "balanced_accuracy_lo": np.nan, "balanced_accuracy_hi": np.nan, "auc": 0.5, "auc_lo": np.nan,
         "auc_hi": np.nan},
        {"reference": "metadata-only probe (all columns)", "accuracy": np.nan, "accuracy_lo": np.nan,
         "accuracy_hi": np.nan, "balanced_accuracy": probe_all["balanced_accuracy"],
         "balanced_accuracy_lo": probe_all["balanced_accuracy_lo"],
         "balanced_accuracy_hi": probe_all["balanced_accuracy_hi"], "auc": probe_all["auc"],
         "auc_lo": probe_all["auc_lo"], "auc_hi": probe_all["auc_hi"]}]
    if arrays.has_model:
        point = model_stat(np.arange(len(y)))
        lo, hi, _ = cluster_bootstrap(model_stat, codes, n_boot, seed + 50)
        refs.append({"reference": "the model (pooled)", "accuracy": point[0], "accuracy_lo": lo[0],
                     "accuracy_hi": hi[0], "balanced_accuracy": point[1], "balanced_accuracy_lo": lo[1],
                     "balanced_accuracy_hi": hi[1], "auc": point[2], "auc_lo": lo[2], "auc_hi": hi[2]})
    return pd.DataFrame(refs)


def _within(arrays: _Arrays, values: np.ndarray, column: str, n_boot: int, seed: int) -> dict:
    """The model's balanced accuracy within each stratum of ``column`` that holds two or more classes, averaged with
    stratum-size weights, next to its pooled balanced accuracy (a model that leans on the metadata does worse within a
    stratum, where the metadata no longer separates the classes)."""
    y, pred = arrays.y, arrays.pred
    strata = np.unique(values)

    def stat(idx):
        yi, pi, vi = y[idx], pred[idx], values[idx]
        accs, weights = [], []
        for v in strata:
            m = vi == v
            if len(np.unique(yi[m])) >= 2:
                accs.append(balanced_accuracy(yi[m], pi[m]))
                weights.append(m.sum())
        within = float(np.average(accs, weights=weights)) if accs else float("nan")
        pooled = balanced_accuracy(yi, pi)
        return np.array([within, pooled, within - pooled])

    point = stat(np.arange(len(y)))
    lo, hi, _ = cluster_bootstrap(stat, arrays.codes, n_boot, seed)
    mixed = [v for v in strata if len(np.unique(y[values == v])) >= 2]
    covered = float(np.isin(values, mixed).mean()) if len(values) else float("nan")
    return {"column": column, "strata": len(strata), "mixed_strata": len(mixed), "images_covered": covered,
            "within_balanced_accuracy": point[0], "within_lo": lo[0], "within_hi": hi[0],
            "pooled_balanced_accuracy": point[1], "pooled_lo": lo[1], "pooled_hi": hi[1],
            "difference": point[2], "difference_lo": lo[2], "difference_hi": hi[2]}
