"""Subgroups and shortcuts: one run's metrics per stratum of a metadata column (sex, age band, view, site, batch) side
by side with cluster-bootstrap 95 % CIs over groups, and the shortcut probe: how well the metadata alone predicts the
label, next to the model (``meddiff.results.strata``)."""

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

import meddiff_ui as ui
from meddiff.results import strata as T
from meddiff.results.root import signature
from meddiff.results.runs import open_results, scored

N_BOOT = 500


@st.cache_data(max_entries=16, show_spinner="Bootstrapping strata over groups ...")
def _strata(path: str, files: tuple, column: str, class_names: tuple, n_boot: int) -> pd.DataFrame:
    return T.stratum_table(scored(open_results(Path(path)).rows), column, n_boot=n_boot, class_names=class_names)


@st.cache_data(max_entries=8, show_spinner="Cross-validating the metadata-only probe ...")
def _probe(path: str, files: tuple, n_classes: int, n_boot: int) -> T.ShortcutProbe:
    return T.shortcut_probe(scored(open_results(Path(path)).rows), n_boot=n_boot, num_classes=n_classes)


def ci(row: pd.Series, key: str, percent: bool = True) -> str:
    scale, digits = (100, 1) if percent else (1, 3)
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None or v != v:
        return "–"
    if lo is None or lo != lo:
        return f"{v * scale:.{digits}f} (no CI)"
    return f"{v * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


st.title("Subgroups and shortcuts")
root, info, df = ui.pick_run("strata_run")
run_name = info.name
frame = scored(df)
if frame.empty:
    st.warning("No scored images with a known label in this run.")
    st.stop()
columns = T.metadata_columns(frame)
if not columns:
    st.info("no metadata columns: the rows of this run carry no metadata key with two or more values (sex, age band, "
            "view, site, acquisition batch), so subgroups and shortcuts cannot be assessed. Add metadata columns to "
            "the data source and re-score.")
    st.stop()
wanted_col = st.query_params.get("column")
column = st.selectbox("Metadata column", columns, index=columns.index(wanted_col) if wanted_col in columns else 0,
                      key="strata_column")
st.query_params.update(run=run_name, column=column)
files = signature(info.path)
table = _strata(str(info.path), files, column, tuple(info.class_names), N_BOOT)
st.caption(T.METRIC_NOTE + f" {N_BOOT} resamples.")

shown = pd.DataFrame({
    "stratum": table["stratum"], "images": table["images"], "groups": table["groups"], "per class": table["per_class"],
    **{label: [ci(r, key) for _, r in table.iterrows()] for key, label in
       [("accuracy", "accuracy %"), ("balanced_accuracy", "balanced acc. %"), ("sensitivity", "sensitivity %"),
        ("specificity", "specificity %")]},
    "AUC": [ci(r, "auc", percent=False) for _, r in table.iterrows()],
    **({"coverage %": [ci(r, "coverage") for _, r in table.iterrows()]} if "coverage" in table.columns else {}),
    "note": table["note"],
})
st.markdown(f"**Per stratum of `{column}`** (95 % CIs over groups)")
st.dataframe(shown, hide_index=True)
chart, _ = st.columns([3, 2])
with chart:
    long = pd.concat([table.assign(metric=name, value=table[key] * 100, lo=table[f"{key}_lo"] * 100,
                                   hi=table[f"{key}_hi"] * 100)
                      for key, name in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))])
    base = alt.Chart(long).encode(x=alt.X("stratum:N", title=None, sort=list(table["stratum"]),
                                          axis=alt.Axis(labelAngle=0)),
                                  xOffset="metric:N", color=alt.Color("metric:N", title=None))
    bars = base.mark_bar().encode(y=alt.Y("value:Q", title="% (95 % CI)", scale=alt.Scale(domain=[0, 100])),
                                  tooltip=["stratum", "metric", alt.Tooltip("value:Q", format=".1f"),
                                           alt.Tooltip("lo:Q", format=".1f"), alt.Tooltip("hi:Q", format=".1f")])
    rules = base.mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")
    st.altair_chart((bars + rules).properties(height=300), width="stretch")

st.subheader("Shortcut probe")
probe = _probe(str(info.path), files, info.num_classes if info.class_names else 0, N_BOOT)
if not probe.available:
    st.info(probe.note)
    st.stop()
say = {"shortcut suspected": st.error, "no evidence of a shortcut": st.success}.get(probe.verdict, st.warning)
say(f"Verdict: **{probe.verdict}**")
st.caption(probe.note)
st.dataframe(pd.DataFrame({"metadata used": probe.probe["features"],
                           "AUC": [ci(r, "auc", percent=False) for _, r in probe.probe.iterrows()],
                           "balanced accuracy %": [ci(r, "balanced_accuracy") for _, r in probe.probe.iterrows()],
                           "verdict": probe.probe["verdict"]}), hide_index=True)
st.markdown("**Does the model beat the metadata?**")
st.dataframe(pd.DataFrame({"reference": probe.baselines["reference"],
                           "accuracy %": [ci(r, "accuracy") for _, r in probe.baselines.iterrows()],
                           "balanced accuracy %": [ci(r, "balanced_accuracy") for _, r in probe.baselines.iterrows()],
                           "AUC": [ci(r, "auc", percent=False) for _, r in probe.baselines.iterrows()]}),
             hide_index=True)
if probe.model_vs_probe:
    st.markdown(f"**{probe.model_vs_probe['text']}**")
if not probe.within.empty:
    st.markdown("**Within-stratum vs pooled balanced accuracy** (strata with both classes, size-weighted; a model "
                "leaning on the metadata drops within a stratum)")
    w = probe.within
    st.dataframe(pd.DataFrame({
        "column": w["column"], "strata (with both classes)": [f"{a} ({b})" for a, b in zip(w["strata"], w["mixed_strata"])],
        "within-stratum %": [ci(pd.Series({"v": r["within_balanced_accuracy"], "v_lo": r["within_lo"],
                                           "v_hi": r["within_hi"]}), "v") for _, r in w.iterrows()],
        "pooled %": [ci(pd.Series({"v": r["pooled_balanced_accuracy"], "v_lo": r["pooled_lo"], "v_hi": r["pooled_hi"]}),
                        "v") for _, r in w.iterrows()],
        "difference (points)": [ci(r, "difference") for _, r in w.iterrows()]}), hide_index=True)
