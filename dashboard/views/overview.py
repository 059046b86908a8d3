"""Runs overview: every results set under the folder, as the paper's Table 1 comparison, filterable."""

import streamlit as st

import meddiff_ui as ui
from meddiff.results.overview import overview_table

st.title("Runs overview")
root, scope, infos = ui.runs_or_stop()

c1, c2, c3 = st.columns(3)
pick = lambda col, label, attr: col.multiselect(label, sorted({getattr(i, attr) for i in infos}),
                                               placeholder="all", key=f"filter_{attr}")
datasets = pick(c1, "Dataset", "dataset")
methods = pick(c2, "Method", "method")
backbones = pick(c3, "Backbone", "backbone")
chosen = [i for i in infos if (not datasets or i.dataset in datasets) and (not methods or i.method in methods)
          and (not backbones or i.backbone in backbones)]
if not chosen:
    st.warning("No run matches these filters; clear one of them.")
    st.stop()

loaded = [(info, df) for info in chosen if (df := ui.load_run(info)) is not None]
table = overview_table(loaded)
if table.empty:
    st.stop()  # every chosen run failed to load; the errors above say why

st.subheader("Table 1: accuracy / F1 per dataset")
st.caption("Diffusion classifiers: majority vote over the N noise draws (the paper's rule); baselines: argmax of the "
           "softmax. Each cell is accuracy / F1 on the labelled images of the scored split.")
label = table["backbone"] + " (" + table["method"] + ")"
table1 = table.assign(model=label.where(~(label + table["dataset"]).duplicated(keep=False), label + " · " + table["run"]),
                      cell=[f"{ui.fmt(a)} / {ui.fmt(f)}" for a, f in zip(table["accuracy"], table["F1"])])
st.dataframe(table1.pivot(index="model", columns="dataset", values="cell").fillna("–"))

st.subheader(f"Runs ({len(table)})")
number = lambda fmt="%.3f": st.column_config.NumberColumn(format=fmt)
st.dataframe(
    table, hide_index=True, column_order=[c for c in table.columns if c != "model_id"],
    column_config={
        "accuracy": number(), "F1": number(), "ROC AUC": number(), "acc. average rule": number(),
        "F1 average rule": number(), "acc. @50% coverage": number(), "NFE / image": number("%d"),
        "N": st.column_config.NumberColumn(format="%d", help="noise draws per image (diffusion classifiers)"),
    },
)
st.caption("`N`: noise draws per image; `accuracy`, `F1`, `ROC AUC`: majority vote (diffusion) or softmax (baseline); "
           "`average rule`: the lowest mean error over the draws (Li et al.); `acc. @50% coverage`: accuracy on the "
           "half of the images with the lowest uncertainty (see Uncertainty curves); `failed`: rows with status error "
           "(e.g. an undecodable image); `NFE`: denoiser or network evaluations per image. An empty cell is undefined "
           "there: baselines have no draws or average rule, ROC AUC needs both classes among the scored images.")
st.download_button("Download this table (CSV)", table.to_csv(index=False).encode(), "meddiff-runs.csv", "text/csv")
