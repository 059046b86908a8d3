"""Counterfactual gallery: each explained image beside its reconstruction under every class and the difference maps,
with the votes and uncertainty it was scored with (``meddiff explain`` writes the folders this page reads)."""

import streamlit as st

import meddiff_ui as ui
from meddiff.results.gallery import gallery_items

PAGE_SIZE = 6

st.title("Counterfactual gallery")
root, scope = ui.context()
infos = ui.explanations(root, scope)
if not infos:
    st.info(f"No explanations under `{scope}`. An explanation folder holds explain.json, index/shard-*.parquet and "
            f"png/ written by `meddiff explain --checkpoint RUN --results RESULTS --out {root.path}/<name>`; it "
            f"noises each selected image to t_start and denoises it under every class.")
    st.stop()

by_name = {i.name: i for i in infos}
name = st.selectbox("Explanation folder", list(by_name), key="gallery_folder")
info = by_name[name]
index = ui.load_explanations(info)
if index is None:
    st.stop()
s = info.settings
st.caption(f"Model `{info.model_id}` · noised to t_start = {s['t_start']}, {s['steps']} ancestral steps, guidance "
           f"w = {s['guidance']}, seed {s['seed']} · selection `{s['select']}`")
results = None
if info.results is not None:
    results = next((ui.load_run(r) for r in ui.runs(root, root.path) if r.path == info.results), None)
elif info.results_note:
    st.caption(f"Votes not shown: {info.results_note}.")

items = gallery_items(root, info, index, results)
reasons = sorted({str(i["reason"]) for i in items})
c1, c2 = st.columns([3, 1])
shown_reasons = c1.multiselect("Why the image was selected", reasons, placeholder="all", key="gallery_reason")
items = [i for i in items if not shown_reasons or str(i["reason"]) in shown_reasons]
pages = max(1, -(-len(items) // PAGE_SIZE))
page = c2.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page")
mode = index["difference_mode"].dropna().iloc[0] if index["difference_mode"].notna().any() else "signed"
st.caption(f"{len(items)} images. Difference map = reconstruction − input, one colour scale per image: "
           + ("red = the class adds intensity, blue = it removes it." if mode == "signed"
              else "bright = changed, dark = unchanged."))

for item in items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
    st.divider()
    classes = item["classes"]
    text, *cells = st.columns([2] + [1] * (1 + max(1, len(classes))))
    pred = item["pred"]
    names = list(info.class_names) or [c["class_name"] for c in classes]
    pred_name = names[pred] if pred is not None and 0 <= pred < len(names) else "–"
    lines = [f"**{item['image_id']}**", f"true: **{item['label'] or 'unknown'}** · predicted: **{pred_name}**",
             f"uncertainty: **{ui.fmt(item['uncertainty'])}** · selected as *{item['reason']}*"]
    if item["votes"]:
        lines.append("votes: " + ", ".join(f"{k} **{v}**" for k, v in item["votes"].items()))
    text.markdown("  \n".join(lines))
    if item["error"]:
        text.error(f"not explained: {item['error']}")
        continue
    cells[0].image(str(item["input"]), caption="input", width="stretch", output_format="PNG")
    for cell, c in zip(cells[1:], classes):
        tag = " (true class)" if c["factual"] else ""
        cell.image(str(c["reconstruction"]), caption=f"as {c['class_name']}{tag} · mse {c['error']:.4f}",
                   width="stretch", output_format="PNG")
    _, legend, *dcells = st.columns([2] + [1] * (1 + max(1, len(classes))))
    legend.caption(f"{'signed' if mode == 'signed' else 'absolute'} difference →")
    for cell, c in zip(dcells, classes):
        cell.image(str(c["difference"]), caption=f"difference: {c['class_name']}", width="stretch",
                   output_format="PNG")
