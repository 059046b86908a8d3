"""meddiff dashboard: browse the results sets and explanations under one results root.

    meddiff dashboard --results runs              # the usual way (sets MEDDIFF_RESULTS_ROOT, starts Streamlit)
    MEDDIFF_RESULTS_ROOT=runs streamlit run dashboard/app.py

Pages (``views/``; URL paths /, /curves, /gallery, /explorer, /referral, /strata): runs overview (the Table 1
comparison), accuracy vs uncertainty threshold, counterfactual gallery, per-image explorer, referral threshold with a
guarantee, subgroups and shortcuts. The app reads results only through ``meddiff.results`` (which reads through the schema
modules) and only under the results root; the sidebar narrows it to a sub-folder and refuses paths outside it.
"""

from pathlib import Path

import streamlit as st

import meddiff_ui as ui

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="meddiff", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "overview.py", title="Runs overview", default=True, icon=":material/table_chart:"),
    st.Page(HERE / "views" / "curves.py", title="Uncertainty curves", url_path="curves", icon=":material/show_chart:"),
    st.Page(HERE / "views" / "gallery.py", title="Counterfactual gallery", url_path="gallery",
            icon=":material/photo_library:"),
    st.Page(HERE / "views" / "explorer.py", title="Image explorer", url_path="explorer", icon=":material/search:"),
    st.Page(HERE / "views" / "referral.py", title="Referral with a guarantee", url_path="referral",
            icon=":material/verified_user:"),
    st.Page(HERE / "views" / "strata.py", title="Subgroups and shortcuts", url_path="strata", icon=":material/groups:"),
]

page = st.navigation(PAGES)
ui.sidebar_scope()  # the results root and the sub-folder every page reads (stops with a message if refused)
page.run()
