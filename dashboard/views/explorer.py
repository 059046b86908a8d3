"""Per-image explorer: how one image was classified, draw by draw.

Each of the N draws noises the image at a random t with the same noise for every class and asks the denoiser to undo
it under each class; the class with the smallest error wins that draw's vote. This page shows the image itself (its
stored pixels, located through the run's recorded data config) next to its votes, how the vote share settles as draws
accumulate, every draw's error against its t, and its counterfactuals when an explanation folder of the run holds it.
"""

import altair as alt
import streamlit as st

import meddiff_ui as ui
from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.results.gallery import gallery_items
from meddiff.results.image import draws_frame, image_pixels, image_row, vote_share_over_draws, votes_frame
from meddiff.results.runs import ok_rows
from meddiff.results.summary import scoring_rules

MAX_OPTIONS = 1000
CLASS_COLOUR = alt.Color("class:N", scale=alt.Scale(scheme="tableau10"))  # distinct hues, same class = same colour

st.title("Image explorer")
root, info, df = ui.pick_run("explorer_run")
run_name = info.name
ok = ok_rows(df)
failed = len(df) - len(ok)
if failed:
    with st.expander(f"{failed} image(s) could not be scored"):
        st.dataframe(df[df[S.STATUS] != S.STATUS_OK][[S.IMAGE_ID, S.ERROR]], hide_index=True)
if ok.empty:
    st.warning("No scored images in this run.")
    st.stop()

c1, c2 = st.columns([1, 2])
only_wrong = c1.toggle("Only misclassified images", key="explorer_wrong")
rows = ok[(ok[S.LABEL] >= 0) & (ok[S.PRED] != ok[S.LABEL])] if only_wrong else ok
rows = rows.sort_values([S.UNCERTAINTY, S.IMAGE_ID], ascending=[False, True])
if rows.empty:
    st.info("No misclassified images in this run.")
    st.stop()
options = rows[S.IMAGE_ID].tolist()[:MAX_OPTIONS]
wanted_image = st.query_params.get("image")  # a deep link (?run=...&image=...) selects an image that passes the filter
if wanted_image in set(rows[S.IMAGE_ID]) and wanted_image not in options:
    options = [wanted_image] + options
image_id = c2.selectbox(f"Image (most uncertain first; {len(rows)} images"
                        + (f", the first {MAX_OPTIONS} listed" if len(rows) > MAX_OPTIONS else "") + ")",
                        options, index=options.index(wanted_image) if wanted_image in options else 0,
                        key="explorer_image")
st.query_params.update(run=run_name, image=image_id)  # the address bar links to what is shown
row = image_row(df, image_id)
classes = list(info.class_names)
name_of = lambda i: classes[i] if i is not None and 0 <= i < len(classes) else "–"
present = lambda v: v is not None and v == v  # parquet nulls arrive as None or NaN

m = st.columns(5)
m[0].metric("True class", row[S.LABEL_NAME] or "unknown")
m[1].metric("Prediction" + (f" ({row[S.RULE]} rule)" if present(row[S.RULE]) else ""), row[S.PRED_NAME],
            "correct" if row[S.LABEL] == row[S.PRED] else ("wrong" if row[S.LABEL] >= 0 else None),
            delta_color="normal" if row[S.LABEL] == row[S.PRED] else "inverse", delta_arrow="off")
others = [r for r in scoring_rules() if r.name != row[S.RULE] and present(row.get(r.column))]
if others:  # the other decision rule(s) the row carries (meddiff.rules)
    m[2].metric(" · ".join(r.title for r in others).capitalize() + " rule",
                " · ".join(name_of(int(row[r.column])) for r in others),
                help="; ".join(f"{r.name}: {r.summary}" for r in others))
m[3].metric("Uncertainty", ui.fmt(row[S.UNCERTAINTY]), help="normalised entropy of the votes: 0 = all draws agree")
if present(row[S.N_DRAWS]):
    m[4].metric("Draws N · NFE", f"{int(row[S.N_DRAWS])} · {int(row[S.NFE])}",
                help="noise draws, and denoiser evaluations (N x classes)")
else:
    m[4].metric("Network evaluations", f"{int(row[S.NFE])}" if present(row[S.NFE]) else "–")

votes = votes_frame(row, classes)
draws = draws_frame(row, classes)
picture, left, right = st.columns([1, 2, 2])
with picture:
    st.markdown("**The image**")
    try:
        st.image(image_pixels(info.meta, image_id), caption=f"{image_id} (stored pixels, not resized)",
                 width="stretch", output_format="PNG")
    except ResultsError as exc:
        st.info(f"The image cannot be shown: {exc}")
    if present(row.get(S.GROUP)) and row[S.GROUP] != image_id:
        st.caption(f"group: {row[S.GROUP]}")
    if present(row.get(S.METADATA)) and row[S.METADATA] not in ("", "{}"):
        st.caption(f"metadata: {row[S.METADATA]}")
with left:
    st.markdown("**Votes per class**" if row[S.VOTES] is not None else "**Softmax per class** (a baseline has no votes)")
    y = "votes" if row[S.VOTES] is not None else "softmax"
    bars = alt.Chart(votes).mark_bar().encode(x=alt.X("class:N", title=None, axis=alt.Axis(labelAngle=0)),
                                              y=alt.Y(f"{y}:Q"), color=CLASS_COLOUR.legend(None),
                                              tooltip=list(votes.columns))
    st.altair_chart(bars.properties(height=280), width="stretch")
    st.dataframe(votes, hide_index=True)
with right:
    if draws is None:
        st.info("This run kept no per-draw errors (score.store_draws: false, or a baseline), so the vote share over "
                "draws and the error per draw cannot be shown. Re-score with score.store_draws=true to see them.")
    else:
        st.markdown("**Vote share after the first k draws**")
        share = vote_share_over_draws(draws)
        line = alt.Chart(share).mark_line().encode(
            x=alt.X("draw:Q", title="draws k"), y=alt.Y("share:Q", title="vote share", scale=alt.Scale(domain=[0, 1])),
            color=CLASS_COLOUR, tooltip=["draw", "class", alt.Tooltip("share:Q", format=".3f")])
        st.altair_chart(line.properties(height=280), width="stretch")

if draws is not None:
    st.markdown("**Error of every draw against its noise level t** (large solid dot = the class that won that draw's vote)")
    scatter = alt.Chart(draws.assign(won=draws["vote"].map({True: "won the vote", False: "lost"}))).mark_point(
        filled=True).encode(
        x=alt.X("t:Q", title="t (0 = clean, 1 = pure noise)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("error:Q", title="error ‖target − prediction‖²", scale=alt.Scale(type="log")),
        color=CLASS_COLOUR,
        opacity=alt.Opacity("won:N", scale=alt.Scale(domain=["won the vote", "lost"], range=[1.0, 0.3]), title=None),
        size=alt.Size("won:N", scale=alt.Scale(domain=["won the vote", "lost"], range=[90, 40]), title=None),
        tooltip=["draw", "class", alt.Tooltip("t:Q", format=".3f"), alt.Tooltip("error:Q", format=".4g"), "won"])
    st.altair_chart(scatter.properties(height=320), width="stretch")
    with st.expander("Per-draw data"):
        st.dataframe(draws.pivot(index=["draw", "t"], columns="class", values="error").reset_index(), hide_index=True)

# counterfactuals of this image from an explanation folder made from this run (meddiff explain)
made_from_run = [e for e in ui.explanations(root, root.path) if e.results is not None and e.results == info.path]
shown_cf = False
for expl in made_from_run:
    index = ui.load_explanations(expl)
    if index is None or image_id not in set(index["image_id"]):
        continue
    item = gallery_items(root, expl, index[index["image_id"] == image_id])[0]
    st.markdown(f"**Counterfactuals** from `{expl.name}`: the image re-generated under each class (t_start = "
                f"{expl.settings.get('t_start')}), and reconstruction − input")
    if item["error"]:
        st.warning(f"not explained: {item['error']}")
    else:
        cells = st.columns(1 + 2 * len(item["classes"]))
        cells[0].image(str(item["input"]), caption="input", width="stretch", output_format="PNG")
        for k, c in enumerate(item["classes"]):
            tag = " (true class)" if c["factual"] else ""
            cells[1 + k].image(str(c["reconstruction"]), caption=f"as {c['class_name']}{tag} · mse {c['error']:.4f}",
                               width="stretch", output_format="PNG")
            cells[1 + len(item["classes"]) + k].image(str(c["difference"]), caption=f"difference: {c['class_name']}",
                                                      width="stretch", output_format="PNG")
    shown_cf = True
    break
if not shown_cf:
    st.caption("No counterfactuals of this image: no explanation folder made from this run holds it "
               "(meddiff explain --results <this run> --select ids:<image id>).")
