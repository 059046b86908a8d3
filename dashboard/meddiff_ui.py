"""Streamlit glue shared by the pages: the results root and sub-folder from the sidebar, and cached reads.

Every read goes through ``meddiff.results`` (schema-checked, and refused outside the results root); the caches are
keyed by the files' names, sizes and mtimes, so new shards of a running job show up on the next rerun.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from meddiff.errors import ResultsError
from meddiff.results.explanations import read_index
from meddiff.results.gallery import ExplanationInfo, explanation_info
from meddiff.results.root import OutsideRootError, ResultsRoot, signature
from meddiff.results.runs import ResultsSet, open_results

SCOPE_KEY = "folder"


def sidebar_scope() -> None:
    """Sidebar: the results root and a sub-folder to browse; a path outside the root is refused with a message."""
    try:
        root = ResultsRoot.from_env()
    except ResultsError as exc:
        st.error(str(exc))
        st.stop()
    if SCOPE_KEY not in st.session_state and "folder" in st.query_params:
        st.session_state[SCOPE_KEY] = st.query_params["folder"]
    with st.sidebar:
        st.markdown(f"**Results root**  \n`{root.path}`")
        text = st.text_input("Folder under the root", key=SCOPE_KEY, placeholder="(the whole root)",
                             help="A sub-folder of the results root, relative or absolute. The dashboard only reads "
                                  "under the root it was started with (meddiff dashboard --results DIR).")
    try:
        scope = root.resolve(text)
    except OutsideRootError as exc:
        st.sidebar.error("Refused: outside the results root.")
        st.error(str(exc))
        st.stop()
    if not scope.is_dir():
        st.error(f"{text!r} is not a folder under the results root {root.path}; clear the sidebar field to browse "
                 f"the whole root.")
        st.stop()
    st.session_state["_meddiff_root"] = str(root.path)
    st.session_state["_meddiff_scope"] = str(scope)


def context() -> tuple[ResultsRoot, Path]:
    """(root, folder being browsed) as set by ``sidebar_scope`` on this run."""
    return ResultsRoot(st.session_state["_meddiff_root"]), Path(st.session_state["_meddiff_scope"])


@st.cache_data(ttl=15, show_spinner=False)
def _run_paths(root: str, scope: str) -> list[str]:
    return [str(p) for p in ResultsRoot(root).find_runs(scope)]


@st.cache_data(ttl=15, show_spinner=False)
def _explanation_paths(root: str, scope: str) -> list[str]:
    return [str(p) for p in ResultsRoot(root).find_explanations(scope)]


def runs(root: ResultsRoot, scope: Path) -> list[ResultsSet]:
    """The results sets under the browsed folder; an unreadable meta.json is reported and skipped."""
    out = []
    for p in _run_paths(str(root.path), str(scope)):
        try:
            out.append(root.open_run(Path(p)))
        except (ValueError, OSError, ResultsError) as exc:
            st.warning(f"{p}: cannot read meta.json ({exc}); skipped")
    return out


def explanations(root: ResultsRoot, scope: Path) -> list[ExplanationInfo]:
    out = []
    for p in _explanation_paths(str(root.path), str(scope)):
        try:
            out.append(explanation_info(root, Path(p)))
        except (ValueError, OSError, KeyError, ResultsError) as exc:
            st.warning(f"{p}: cannot read explain.json ({exc}); skipped")
    return out


@st.cache_data(max_entries=32, show_spinner="Reading results ...")
def _load_run(path: str, files: tuple) -> pd.DataFrame:
    return open_results(Path(path)).rows


@st.cache_data(max_entries=16, show_spinner="Reading explanations ...")
def _load_explanations(path: str, files: tuple) -> pd.DataFrame:
    return read_index(Path(path))


def load_run(info: ResultsSet) -> pd.DataFrame | None:
    """A run's rows, cached; a run that fails its schema check is reported (not a traceback) and gives None."""
    try:
        return _load_run(str(info.path), signature(info.path))
    except (ValueError, OSError, ResultsError) as exc:
        st.error(f"{info.name}: cannot read this results set: {exc}")
        return None


def load_explanations(info: ExplanationInfo) -> pd.DataFrame | None:
    try:
        return _load_explanations(str(info.path), signature(info.path))
    except (ValueError, OSError, ResultsError) as exc:
        st.error(f"{info.name}: cannot read this explanation index: {exc}")
        return None


def no_runs_message(root: ResultsRoot, scope: Path) -> None:
    st.info(f"No results sets under `{scope}`. A results set is a folder of shard-*.parquet files plus meta.json "
            f"written by `meddiff score --checkpoint RUN --out {root.path}/<name>` (or `meddiff demo`, which writes "
            f"`runs/<preset>/results/test`).")


def runs_or_stop() -> tuple[ResultsRoot, Path, list[ResultsSet]]:
    """(root, browsed folder, its results sets) for a page that needs runs; with none, says how to make one and stops
    the page."""
    root, scope = context()
    infos = runs(root, scope)
    if not infos:
        no_runs_message(root, scope)
        st.stop()
    return root, scope, infos


def pick_run(key: str) -> tuple[ResultsRoot, ResultsSet, pd.DataFrame]:
    """(root, the run chosen in a "Run" select box, its rows) for a page about one run; the ``run`` query parameter
    preselects it (so a link opens the same run). Stops the page when there is no run or its rows cannot be read."""
    root, _, infos = runs_or_stop()
    by_name = {i.name: i for i in infos}
    names = list(by_name)
    wanted = st.query_params.get("run")
    info = by_name[st.selectbox("Run", names, index=names.index(wanted) if wanted in names else 0, key=key)]
    df = load_run(info)
    if df is None:
        st.stop()
    return root, info, df


def fmt(value, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value + 0.0:.{digits}f}"  # + 0.0: no "-0.000"
