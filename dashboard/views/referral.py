"""Referral with a guarantee: pick the error rate alpha you accept among the images the model answers, the risk
delta that this promise fails, and the rule; the page chooses the uncertainty threshold on calibration rows and
shows what it achieves on held-out rows.

``ltt`` (Learn then Test, Angelopoulos et al.) certifies P(error rate among accepted images > alpha) <= delta over
the calibration rows; ``naive`` takes the largest threshold whose calibration error rate is <= alpha and has no such
guarantee (``meddiff.rules.REFERRAL_RULES``, ``meddiff.results.referral``; read through ``meddiff.results.selective``). Calibration rows: the run's val rows when
it has val and other rows, else a seeded group-aware 50/50 split (no patient on both sides).
"""

import altair as alt
import pandas as pd
import streamlit as st

import meddiff_ui as ui
from meddiff.errors import MeddiffError
from meddiff.results.runs import scored
from meddiff.results.selective import held_out, referral_rules

st.title("Referral with a guarantee")
RULES = referral_rules()
root, scope, infos = ui.runs_or_stop()
by_name = {i.name: i for i in infos}
name = st.selectbox("Run", list(by_name), key="referral_run")
left, mid, right = st.columns(3)
alpha = left.number_input("alpha: highest error rate among accepted images", 0.01, 0.5, 0.10, 0.01,
                          key="referral_alpha", format="%.2f")
delta = mid.number_input("delta: chance the promise fails", 0.01, 0.5, 0.10, 0.01, key="referral_delta",
                         format="%.2f")
rule = right.radio("Rule", list(RULES), key="referral_rule", horizontal=True,
                   help=" · ".join(f"{k}: {g}" for k, g in RULES.items()))
df = ui.load_run(by_name[name])
if df is None:
    st.stop()
frame = scored(df).reset_index(drop=True)
try:
    result = held_out(frame, rule, float(alpha), float(delta), where=name)
except MeddiffError as exc:
    st.error(str(exc))
    st.stop()

t, test = result.chosen, result.test
st.caption(f"Calibration: {result.how}; {t.n} calibration rows, {test['n']} test rows. "
           f"{rule}: {RULES[rule]}.")
if t.refer_all:
    st.warning(f"No threshold can be certified at alpha = {alpha:.2f}, delta = {delta:.2f} with these {t.n} "
               f"calibration rows: every image is referred. Raise alpha or delta, or calibrate on more images.")
c1, c2, c3, c4 = st.columns(4)
c1.metric("threshold (accept uncertainty <=)", "refer all" if t.refer_all else ui.fmt(t.threshold, 4))
c2.metric("coverage on test rows", ui.fmt(test["coverage"]), help="share of held-out images accepted")
c3.metric("error rate on accepted test rows", ui.fmt(test["risk"]),
          help=f"{test['errors']} wrong of {test['n_accepted']} accepted")
c4.metric("upper bound (calibration)", ui.fmt(t.ucb),
          help=f"one-sided {100 * (1 - delta):.0f} % Clopper-Pearson bound on the error rate among accepted images")
summary = pd.DataFrame([{"rule": rule, "alpha": alpha, "delta": delta,
                         "threshold": None if t.refer_all else t.threshold, "calibration rows": t.n,
                         "calibration coverage": t.coverage, "calibration risk": t.risk, "upper bound": t.ucb,
                         "test rows": test["n"], "test accepted": test["n_accepted"], "test errors": test["errors"],
                         "test coverage": test["coverage"], "test risk": test["risk"]}])
st.dataframe(summary, hide_index=True)

st.markdown("**Error rate among accepted test images vs coverage**")
curve = result.curve
line = alt.Chart(curve).mark_line(interpolate="step-after").encode(
    x=alt.X("coverage:Q", title="coverage (fraction of test images accepted)", scale=alt.Scale(domain=[0, 1])),
    y=alt.Y("risk:Q", title="error rate among accepted"),
    tooltip=[alt.Tooltip("threshold:Q", format=".4f"), alt.Tooltip("coverage:Q", format=".3f"),
             alt.Tooltip("risk:Q", format=".3f"), "n_accepted"])
target = alt.Chart(pd.DataFrame({"alpha": [alpha]})).mark_rule(strokeDash=[4, 4]).encode(y="alpha:Q")
layers = line + target
if not t.refer_all and test["n_accepted"]:
    point = pd.DataFrame({"coverage": [test["coverage"]], "risk": [test["risk"]]})
    layers += alt.Chart(point).mark_point(size=120, filled=True, color="black").encode(x="coverage:Q", y="risk:Q")
st.altair_chart(layers.properties(height=340), width="stretch")
