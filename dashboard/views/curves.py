"""Accuracy vs uncertainty threshold: keep only the images the model is sure about and watch the accuracy rise.

The paper's selective-prediction analysis: the uncertainty of a diffusion classifier is the normalised entropy of its
N votes (0 = every draw agrees, 1 = an even split); a baseline's is the normalised entropy of its softmax. Keeping the
images whose uncertainty is at most a threshold trades coverage for accuracy.
"""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import meddiff_ui as ui
from meddiff.results.curves import at_threshold, coverage_curve, thin, threshold_curve
from meddiff.results.runs import scored

st.title("Accuracy vs uncertainty threshold")
root, scope, infos = ui.runs_or_stop()

by_name = {i.name: i for i in infos}
chosen = st.multiselect("Runs to overlay", list(by_name), default=list(by_name)[:4], key="curve_runs",
                        help="Every run under the browsed folder can be overlaid; the first four are shown by default.")
if not chosen:
    st.info("Pick at least one run.")
    st.stop()
frames = {}
for name in chosen:
    df = ui.load_run(by_name[name])
    if df is None:
        continue
    if scored(df).empty:
        st.warning(f"{name}: no scored, labelled images; nothing to plot")
        continue
    frames[name] = df
if not frames:
    st.stop()
# start where about half of the first run's images are kept (with few draws the uncertainty takes few values)
first = scored(next(iter(frames.values())))
start = float(np.ceil(np.median(first["uncertainty"]) * 100) / 100)
threshold = st.slider("Uncertainty threshold: keep the images whose uncertainty is at most", 0.0, 1.0,
                      min(max(start, 0.0), 1.0), 0.01, key="threshold",
                      help="Uncertainty = normalised entropy of the votes (0: every draw agrees, 1: an even split).")

points, thresholds, coverages = [], [], []
for name, df in frames.items():
    points.append({"run": name, **at_threshold(df, threshold)})
    thresholds.append(threshold_curve(df).assign(run=name))
    coverages.append(thin(coverage_curve(df)).assign(run=name))
at = pd.DataFrame(points)
curve = pd.concat(thresholds, ignore_index=True)
cover = pd.concat(coverages, ignore_index=True)

cols = st.columns(min(len(at), 4))
for k, row in at.iterrows():
    col = cols[k % len(cols)]
    if row["kept"] == 0:
        smallest = threshold_curve(frames[row["run"]])["threshold"].min()
        col.metric(f"{row['run']}", "no image kept",
                   help="no image of this run is as certain as the threshold")
        col.caption(f"raise the threshold to at least {smallest:.2f} (this run's lowest uncertainty)")
        continue
    delta = row["accuracy"] - row["accuracy (all)"]
    col.metric(f"{row['run']}", f"{ui.fmt(row['accuracy'])} accuracy", f"{delta:+.3f} vs all images",
               help="accuracy on the images kept at this threshold, and the change against keeping every image")
    col.caption(f"coverage {ui.fmt(row['coverage'])} · {row['kept']} / {row['images']} images kept")

colour = alt.Color("run:N", scale=alt.Scale(scheme="tableau10"),
                   legend=alt.Legend(orient="bottom", columns=1, labelLimit=600))
left, right = st.columns(2)
with left:
    st.markdown("**Accuracy of the kept images vs threshold**")
    base = alt.Chart(curve).encode(
        x=alt.X("threshold:Q", title="uncertainty threshold", scale=alt.Scale(domain=[0, 1])), color=colour)
    acc = base.mark_line(interpolate="step-after").encode(
        y=alt.Y("accuracy:Q", title="accuracy of kept images", scale=alt.Scale(zero=False)),
        tooltip=["run", alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"),
                 alt.Tooltip("coverage:Q", format=".3f"), "kept"])
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[4, 4]).encode(x="threshold:Q")
    st.altair_chart((acc + rule).properties(height=340), width="stretch")
with right:
    st.markdown("**Accuracy vs coverage (most certain images first)**")
    line = alt.Chart(cover).mark_line().encode(
        x=alt.X("coverage:Q", title="coverage (fraction of images kept)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(zero=False)), color=colour,
        tooltip=["run", alt.Tooltip("coverage:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"), "k"])
    dots = alt.Chart(at).mark_point(size=90, filled=True).encode(
        x="coverage:Q", y="accuracy:Q", color=colour, tooltip=["run", "threshold", "kept", "coverage", "accuracy"])
    st.altair_chart((line + dots).properties(height=340), width="stretch")

st.markdown(f"**At threshold {threshold:.2f}**")
st.dataframe(at[["run", "threshold", "kept", "images", "coverage", "accuracy", "accuracy (all)"]], hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in ("threshold", "coverage", "accuracy", "accuracy (all)")})
with st.expander("Curve data (accuracy and coverage at every distinct threshold)"):
    st.dataframe(curve[["run", "threshold", "kept", "coverage", "accuracy"]], hide_index=True)
    st.download_button("Download (CSV)", curve.to_csv(index=False).encode(), "meddiff-threshold-curves.csv", "text/csv")
