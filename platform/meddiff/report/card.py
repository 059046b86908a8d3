"""The model card: what the platform can answer about a model from its own provenance, organised by the reporting
items of CLAIM 2024 (Tejani et al., "Checklist for Artificial Intelligence in Medical Imaging (CLAIM): 2024 Update",
Radiology: Artificial Intelligence 6(4), 2024) and TRIPOD+AI (Collins et al., "TRIPOD+AI statement", BMJ 385,
e078378, 2024), and the list of items only the user can fill in.

    <out>/model_card.md     markdown, figures referenced by path
    <out>/model_card.html   one self-contained file: figures embedded as base64 PNG, inline CSS, nothing fetched

Everything is read through ``meddiff.results`` (meta.json: ``data``, ``checkpoint_metadata`` with the training config,
``score_config``, code version; the scored rows; explanation folders made from the run). A value provenance does not
carry is written "not recorded", never guessed. Item names are the checklists' topics, abbreviated; check them against
the published checklists before submission.

A section is a dict {"title", "markdown", "figures": {name: Path}, "tables": {name: frame}} (the report's subgroup
section, ``meddiff.report.subgroups``, and sections other jobs pass in, e.g. selective prediction); ``write_card``
embeds the ones it is given after its own.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from meddiff.provenance import code_version
from meddiff.report.markdown import md_table, num, pct, with_ci
from meddiff.results import explain_schema as X
from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.results.image import image_pixels
from meddiff.results.explanations import is_explanation, read_explain_meta, read_index
from meddiff.results.runs import ResultsSet
from meddiff.results.strata import expand_metadata, group_codes

NOT_RECORDED = "not recorded"
FAILURES = 6  # most confident errors shown per run

# (checklist item, what the user must write) for what provenance cannot answer
TO_FILL = [
    ("CLAIM 2024: background and clinical role; TRIPOD+AI: healthcare context and intended use",
     "Intended use: the clinical question, the decision the output supports, who acts on it."),
    ("CLAIM 2024: study goal and design; TRIPOD+AI: objectives",
     "Study goal (model creation, feasibility, ...) and design (retrospective / prospective)."),
    ("CLAIM 2024: eligibility criteria; TRIPOD+AI: participants (setting, eligibility, dates)",
     "Clinical setting, population, inclusion/exclusion criteria, where and when the data were collected."),
    ("CLAIM 2024: definition, rationale and source of the reference standard; annotator qualifications; "
     "inter-rater variability; TRIPOD+AI: outcome",
     "Reference standard (how each label was established, by whom, blinded or not, agreement between readers)."),
    ("CLAIM 2024: image acquisition protocol", "Scanners, protocols, sites and dates of image acquisition."),
    ("CLAIM 2024: de-identification methods", "How the images and metadata were de-identified."),
    ("CLAIM 2024: missing data; TRIPOD+AI: missing data",
     "How images or metadata that were missing or unreadable were handled (failed rows are counted in section 1)."),
    ("TRIPOD+AI: sample size", "How the number of images and patients was justified."),
    ("CLAIM 2024: external evaluation; TRIPOD+AI: evaluation in other settings",
     "Evaluation on data from another site or period (this card reports the internal split only)."),
    ("TRIPOD+AI: ethical approval; CLAIM 2024: ethics", "Ethics committee approval and consent / waiver."),
    ("CLAIM 2024 / TRIPOD+AI: funding, conflicts of interest, registration, protocol, data and code availability",
     "Funding, conflicts of interest, study registration and protocol, where data and code can be obtained."),
    ("CLAIM 2024: limitations and implications for practice; TRIPOD+AI: interpretation, limitations, usability",
     "Limitations (including every 'not recorded' and every suspected shortcut below) and clinical implications."),
]


def _tag(*items: str) -> str:
    return "*Checklist: " + " · ".join(items) + "*"


def _value(v: Any) -> str:
    if v is None or v == "" or v == {} or v == []:
        return NOT_RECORDED
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, sort_keys=True, default=str) + "`"
    return str(v)


def _config(run: ResultsSet) -> dict[str, Any]:
    return run.checkpoint.get("config") or {}


# --- the card's own sections ------------------------------------------------------------------------------------------


def data_section(runs: Sequence[ResultsSet]) -> dict[str, Any]:
    lines = [_tag("CLAIM 2024: data sources; selection of data subsets; flow of data; characteristics per partition",
                  "TRIPOD+AI: data sources; participants; flow of participants"), ""]
    for run in runs:
        data, cfg = run.meta.get("data") or {}, _config(run).get("data") or {}
        frame, ck = run.frame, run.checkpoint
        names = list(run.class_names) or [str(i) for i in range(run.num_classes)]
        counts = np.bincount(frame[S.LABEL].to_numpy().astype(int), minlength=len(names))
        codes = group_codes(frame)
        groups_per_class = [len(np.unique(codes[frame[S.LABEL].to_numpy() == c])) for c in range(len(names))]
        failed = run.total_rows - len(frame)
        lines += [f"**{run.name}**", "",
                  md_table(["field", "value"], [
                      ["data set", _value(data.get("name"))],
                      ["source (data.source, data.params)", f"{_value(cfg.get('source'))} {_value(cfg.get('params'))}"],
                      ["data fingerprint (scored split)", f"`{data['fingerprint'][:16]}…`" if data.get("fingerprint")
                       else NOT_RECORDED],
                      ["training data fingerprint", f"`{ck['data_fingerprint'][:16]}…`" if ck.get("data_fingerprint")
                       else NOT_RECORDED],
                      ["images: train / val (at training)",
                       f"{_value(ck.get('train_images'))} / {_value(ck.get('val_images'))}"],
                      [f"images scored ({run.split} split)",
                       f"{run.total_rows} rows, {len(frame)} scored with a label, {failed} failed or unlabelled"],
                      ["per class (scored): images (groups)",
                       ", ".join(f"{n} {int(c)} ({g})" for n, c, g in zip(names, counts, groups_per_class))],
                      ["groups (scored)", f"{int(codes.max()) + 1 if len(codes) else 0}"],
                  ]), ""]
        meta = expand_metadata(frame)
        if len(meta.columns):
            rows = []
            for col in meta.columns:
                vc = meta[col].fillna("(missing)").value_counts()
                rows.append([col, ", ".join(f"{k} {v}" for k, v in vc.head(8).items())
                             + (f", … ({len(vc)} values)" if len(vc) > 8 else "")])
            lines += ["Metadata of the scored images (images per value):", "", md_table(["column", "values"], rows), ""]
        else:
            lines += ["Metadata of the scored images: none recorded (no sex, age, view, site or batch columns).", ""]
    return {"title": "Data sources and counts", "markdown": "\n".join(lines), "figures": {}, "tables": {}}


def split_section(runs: Sequence[ResultsSet]) -> dict[str, Any]:
    lines = [_tag("CLAIM 2024: how data were assigned to partitions; level at which partitions are disjoint",
                  "TRIPOD+AI: data preparation; how data were used (partitioning)"), ""]
    rows = []
    for run in runs:
        data, cfg = run.meta.get("data") or {}, _config(run).get("data") or {}
        cv = cfg.get("cv_folds")
        official = (data.get("leakage") or {}).get("official_splits") if isinstance(data.get("leakage"), dict) else None
        made = (f"stratified (group) split {cfg.get('split_fractions')} with seed {cfg.get('split_seed')}")
        how = (f"{cv}-fold stratified group cross-validation, test = fold {cfg.get('cv_fold')}" if cv else
               "official splits of the source" if official is True else made if official is False else
               f"official splits of the source, else {made}" if cfg else NOT_RECORDED)
        rows.append([run.name, how, _value(cfg.get("balance")), _value(data.get("grouping")),
                     _value(data.get("metadata_columns"))])
    lines += [md_table(["run", "how splits were made", "balanced (undersampled)", "grouping (what a group is; "
                        "splits never divide one)", "metadata columns kept"], rows), ""]
    return {"title": "How the splits were made", "markdown": "\n".join(lines), "figures": {}, "tables": {}}


LEAK_CHECKS = {"groups": "groups in two splits", "exact_duplicates": "exact duplicates",
               "near_duplicates": "near duplicates"}


def _leak_row(name: str, check: dict[str, Any]) -> list[str]:
    """One check of ``meddiff.data.leakage`` as a table row: method, count across splits, images, up to 3 examples."""
    if "n_groups" in check:
        examples = [f"{g}: {', '.join(map(str, v))}" for g, v in list((check.get("examples") or {}).items())[:3]]
        return [name, f"{check['n_groups']} groups", _value(check.get("across_splits")), "–", "–",
                "; ".join(examples) or "–"]
    method = str(check.get("hash", ""))
    if "max_hamming" in check:
        method += f", Hamming <= {check['max_hamming']}, correlation >= {check.get('min_correlation')}"
    examples = [f"{e.get('a')} ~ {e.get('b')} ({'/'.join(e.get('splits', []))})" for e in (check.get("examples") or [])[:3]]
    return [name, method, f"{_value(check.get('pairs_across_splits'))} pair(s)", _value(check.get("images_involved")),
            _value(check.get("test_images_involved")), "; ".join(examples) or "–"]


def leakage_section(runs: Sequence[ResultsSet]) -> dict[str, Any]:
    lines = [_tag("CLAIM 2024: partitions disjoint at the patient level; TRIPOD+AI: data preparation"), ""]
    for run in runs:
        leak = (run.meta.get("data") or {}).get("leakage")
        if not leak:
            lines += [f"- **{run.name}**: leakage checks {NOT_RECORDED} (meta.json `data.leakage` is absent; re-score "
                      f"with a version that records them).", ""]
        elif isinstance(leak, dict) and any(isinstance(leak.get(k), dict) for k in LEAK_CHECKS):
            lines += [f"**{run.name}** (level {_value(leak.get('level'))}; splits "
                      f"{'official, from the source' if leak.get('official_splits') else 'made by meddiff'})", "",
                      md_table(["check", "method", "across splits", "images involved", "test images involved",
                                "examples"], [_leak_row(name, leak.get(key)) for key, name in LEAK_CHECKS.items()
                                              if isinstance(leak.get(key), dict)]), ""]
        elif isinstance(leak, dict):
            lines += [f"**{run.name}**", "", md_table(["check", "result"], [[k, _value(v)] for k, v in leak.items()]),
                      ""]
        else:
            lines += [f"- **{run.name}**: {_value(leak)}", ""]
    return {"title": "Leakage checks", "markdown": "\n".join(lines), "figures": {}, "tables": {}}


def model_section(runs: Sequence[ResultsSet], infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    lines = [_tag("CLAIM 2024: model description; software; initialisation; training details; selection of the "
                  "final model", "TRIPOD+AI: model type and building; model specification; code availability"), ""]
    rows = []
    for run in runs:
        cfg, ck, info = _config(run), run.checkpoint, infos.get(run.name, {})
        train = cfg.get("train") or {}
        params = info.get("params_m")
        rows.append([run.name, run.method, _value(info.get("backbone") or run.backbone)
                     + (f" ({params:.1f} M parameters)" if params else ""),
                     _value(ck.get("step")), _value(train.get("seed")),
                     f"batch {_value(train.get('batch_size'))}, lr {_value(train.get('lr'))}, augment "
                     f"{_value(train.get('augment'))}, EMA {_value(train.get('ema_beta'))}",
                     f"{_value(ck.get('image_size'))} px, {_value(ck.get('channels'))} ch",
                     f"`{_value(run.model_id)}`", _value(run.meta.get("code_version"))])
    lines += [md_table(["run", "method", "architecture", "training steps", "seed", "training settings", "input",
                        "model id (weights sha256)", "code version"], rows), "",
              "Scoring settings: " + "; ".join(
                  f"{r.name}: split {r.split}, "
                  + (f"rule {_value(r.rule)}, draws {_value(r.n_draws)}, " if r.votes else "one forward pass, ")
                  + f"seed {_value(r.seed)}" for r in runs) + ".", ""]
    return {"title": "Model and training", "markdown": "\n".join(lines), "figures": {}, "tables": {}}


def metrics_section(table1: pd.DataFrame, n_boot: int, names: dict[str, list[str]]) -> dict[str, Any]:
    lines = [_tag("CLAIM 2024: performance metrics; statistical measures of uncertainty; estimates of diagnostic "
                  "accuracy and their precision", "TRIPOD+AI: performance measures with confidence intervals"), "",
             f"Accuracy and AUC in %, F1 as a fraction, with 95 % percentile-bootstrap CIs over images ({n_boot} "
             f"resamples; the subgroup section gives CIs over groups). Sensitivity / specificity: positive = class "
             f"index 1.", ""]
    rows = [[r["run"], r["method"], r["images"], with_ci(r, "accuracy"), with_ci(r, "f1", percent=False),
             with_ci(r, "auc"), f"{pct(r.get('sensitivity'))} ({(names.get(r['run']) or ['', '1'])[1]})",
             pct(r.get("specificity")), pct(r.get("precision"))] for _, r in table1.iterrows()]
    lines.append(md_table(["run", "method (rule)", "images", "accuracy", "F1", "AUC", "sensitivity (positive class)",
                           "specificity", "PPV"], rows))
    return {"title": "Performance with confidence intervals", "markdown": "\n".join(lines) + "\n", "figures": {},
            "tables": {}}


def calibration_section(table1: pd.DataFrame, figures: dict[str, Path]) -> dict[str, Any]:
    lines = [_tag("TRIPOD+AI: performance measures (calibration)", "CLAIM 2024: performance metrics"), "",
             "ECE = expected calibration error of the top vote share (baselines: top softmax probability), 10 bins; "
             "AURC = area under the risk-coverage curve (lower is better).", "",
             md_table(["run", "rule", "ECE", "AURC", "accuracy on the 80 % most certain (%)"],
                      [[r["run"], r["rule"], num(r["ece"]), num(r["aurc"]), pct(r["acc@80"])]
                       for _, r in table1.iterrows()]), ""]
    figs = {k: figures[k] for k in ("reliability", "coverage") if k in figures}
    lines += [f"![{k}]({p.name})" for k, p in figs.items()]
    return {"title": "Calibration", "markdown": "\n".join(lines) + "\n", "figures": figs, "tables": {}}


def explanation_of(run: ResultsSet, search: Sequence[Path] = ()) -> Path | None:
    """An explanation folder (``meddiff explain``) made from ``run``: searched in ``search`` and in the folders
    next to the run and its parent; None when there is none."""
    target = run.path.resolve()
    places = [*search, run.path.parent, run.path.parent.parent]
    for place in places:
        if not place.is_dir():
            continue
        for cand in [place, *sorted(p for p in place.rglob("explain.json"))]:
            folder = cand.parent if cand.name == "explain.json" else cand
            if is_explanation(folder):
                try:
                    made_from = read_explain_meta(folder).get("results")
                except (ValueError, OSError):
                    continue
                if made_from and Path(made_from).resolve() == target:
                    return folder
    return None


def _failure_picture(run: ResultsSet, image_id: str, out_dir: Path) -> str:
    """The image's stored pixels written as a PNG next to the card (``meddiff.results.image.image_pixels``), as a
    markdown image; "not available: why" when the image cannot be located."""
    from PIL import Image

    try:
        pixels = image_pixels(run.meta, image_id)
    except ResultsError as exc:
        return f"not available: {exc}"
    path = out_dir / "failures" / (re.sub(r"[^A-Za-z0-9]+", "_", f"{run.name}_{image_id}") + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return f"![{image_id}]({path.relative_to(out_dir).as_posix()})"


def failure_section(runs: Sequence[ResultsSet], search: Sequence[Path] = (), out_dir: Path | None = None
                    ) -> dict[str, Any]:
    lines = [_tag("CLAIM 2024: failure analysis of incorrectly classified cases", "TRIPOD+AI: interpretation"), "",
             f"The {FAILURES} most confident errors of each run (lowest uncertainty first): the cases where the model "
             "is wrong and would not flag itself. Counterfactuals (the image re-generated under each class) are shown "
             "when an explanation folder of the run holds them.", ""]
    figures: dict[str, Path] = {}
    for run in runs:
        f = run.frame
        wrong = f[f[S.PRED] != f[S.LABEL]].copy()
        if wrong.empty:
            lines += [f"**{run.name}**: no misclassified image among {len(f)}.", ""]
            continue
        wrong["_top"] = [float(np.max(p)) for p in wrong[S.PROB]]
        wrong = wrong.sort_values([S.UNCERTAINTY, "_top", S.IMAGE_ID], ascending=[True, False, True]).head(FAILURES)
        explained = explanation_of(run, search)
        index = read_index(explained) if explained is not None else None
        rows, pictures, header = [], [], ["image"]
        for _, r in wrong.iterrows():
            group = r.get(S.GROUP)
            rows.append([f"`{r[S.IMAGE_ID]}`"] + ([_failure_picture(run, r[S.IMAGE_ID], out_dir)] if out_dir else [])
                        + [r[S.LABEL_NAME] or r[S.LABEL], r[S.PRED_NAME] or r[S.PRED], num(r[S.UNCERTAINTY]),
                           num(r["_top"]), group if group and group != r[S.IMAGE_ID] else "(the image)",
                           r.get(S.METADATA) or "{}"])
            if index is None:
                continue
            got = index[(index[X.IMAGE_ID] == r[S.IMAGE_ID]) & (index[X.STATUS] == X.STATUS_OK)].sort_values(X.CLASS)
            if got.empty:
                continue
            cells = [("input", explained / got.iloc[0][X.INPUT_PNG])]
            cells += [(f"as {c[X.CLASS_NAME]}", explained / c[X.RECON_PNG]) for _, c in got.iterrows()]
            cells += [(f"difference {c[X.CLASS_NAME]}", explained / c[X.DIFF_PNG]) for _, c in got.iterrows()]
            if not all(p.is_file() for _, p in cells):
                continue
            header = ["image"] + [alt for alt, _ in cells]
            for k, (alt, p) in enumerate(cells):
                figures[f"cf_{run.name}_{r[S.IMAGE_ID]}_{k}"] = p
            pictures.append([f"`{r[S.IMAGE_ID]}` (true {r[S.LABEL_NAME] or r[S.LABEL]}, predicted "
                             f"{r[S.PRED_NAME] or r[S.PRED]})"]
                            + [f"![{alt} {r[S.IMAGE_ID]}]({p})" for alt, p in cells])
        lines += [f"**{run.name}** ({len(f[f[S.PRED] != f[S.LABEL]])} errors among {len(f)} images)", "",
                  md_table(["image id"] + (["image (stored pixels)"] if out_dir else []) + [
                      "true", "predicted", "uncertainty", "top probability", "group", "metadata"], rows), ""]
        if explained is None:
            lines += ["No explanation folder of this run was found (run `meddiff explain --results "
                      f"{run.path}` to add counterfactuals).", ""]
        elif not pictures:
            lines += [f"The explanation folder `{explained}` holds none of these images.", ""]
        else:
            lines += [f"Counterfactuals from `{explained}`: the input, its reconstruction under each class, and "
                      "reconstruction − input:", "", md_table(header, [p for p in pictures if len(p) == len(header)]),
                      ""]
    return {"title": "Failure cases", "markdown": "\n".join(lines), "figures": figures, "tables": {}}


def todo_section() -> dict[str, Any]:
    lines = ["The platform cannot know these; the card is not complete until they are written. Each names its "
             "checklist item.", "", md_table(["checklist item", "to fill in"], TO_FILL), ""]
    return {"title": "To be filled in by the user", "markdown": "\n".join(lines), "figures": {}, "tables": {}}


# --- assembling -------------------------------------------------------------------------------------------------------


def card_markdown(runs: Sequence[ResultsSet], sections: Sequence[dict[str, Any]]) -> str:
    ids = ", ".join(f"`{r.model_id}`" for r in runs if r.model_id) or NOT_RECORDED
    out = [f"# Model card: {', '.join(r.name for r in runs)}", "",
           f"Model(s) {ids}. Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by {code_version()} from the provenance "
           "of the results sets (meta.json, scored rows, explanation folders). Organised by CLAIM 2024 (Tejani et "
           "al., Radiology: AI 2024) and TRIPOD+AI (Collins et al., BMJ 2024); every section names the checklist "
           f"items it answers. \"{NOT_RECORDED}\" means the provenance does not carry the value.", ""]
    out += ["**Contents**: " + " · ".join(f"{i + 1}. {s['title']}" for i, s in enumerate(sections)), ""]
    for i, s in enumerate(sections):
        body = re.sub(r"^### .*\n", "", s["markdown"], flags=re.M)  # the card numbers its own headings
        tag = [_tag(*s["checklist"]), ""] if s.get("checklist") else []
        out += [f"## {i + 1}. {s['title']}", "", *tag, body.strip(), ""]
    return "\n".join(out) + "\n"


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;padding:0 24px;
color:#1d2330;line-height:1.45;font-size:14px}
h1{font-size:26px;border-bottom:3px solid #2b6cb0;padding-bottom:6px}
h2{font-size:20px;margin-top:34px;border-bottom:1px solid #cbd5e0;padding-bottom:4px;color:#2b4c7e}
h3,h4{font-size:16px;margin-top:22px}
table{border-collapse:collapse;margin:10px 0 14px;font-size:12.5px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #cbd5e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#edf2f7} tr:nth-child(even) td{background:#f7fafc}
img{max-width:min(100%,560px);height:auto;margin:6px 6px 6px 0;border:1px solid #e2e8f0;vertical-align:top}
img.thumb{width:96px;image-rendering:pixelated}
em{color:#4a5568} code{background:#edf2f7;padding:1px 4px;border-radius:3px;font-size:12px}
p.missing{color:#b7791f}
"""


def render_html(markdown_text: str, base: Path, title: str) -> str:
    """``markdown_text`` as one self-contained HTML page: every ``<img>`` whose file exists (a path relative to
    ``base`` or absolute) is embedded as a base64 PNG data URI; an image that cannot be read becomes its alt text,
    so the page fetches nothing."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)

    def embed(match: re.Match) -> str:
        src, alt = html.unescape(match.group(1)), html.unescape(match.group(2))
        path = Path(src) if Path(src).is_absolute() else base / src
        if not path.is_file():
            return f"<em>[figure {html.escape(alt)} is missing: {html.escape(str(path))}]</em>"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        small = path.stat().st_size < 20_000 and ("/png/" in path.as_posix() or "/failures/" in path.as_posix())
        cls = ' class="thumb"' if small else ""
        return f'<img{cls} src="data:image/png;base64,{data}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'

    body = re.sub(r'<img src="([^"]*)" alt="([^"]*)"\s*/?>', embed, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}</body></html>\n")


def write_card(runs: Sequence[ResultsSet], infos: dict[str, dict[str, Any]], tables: dict[str, pd.DataFrame],
               figures: dict[str, Path], extra_sections: Sequence[dict[str, Any]], out_dir: str | Path,
               n_boot: int = 1000, explanations: Sequence[Path] = ()) -> dict[str, str]:
    """Write model_card.md and model_card.html into ``out_dir``: the card's own sections (data, splits, leakage,
    model, performance, calibration), then ``extra_sections`` (subgroups, selective prediction, ...), then the
    failure cases and the items the user must fill in. ``tables``/``figures``: the report's (Table 1, reliability
    and coverage figures). Returns {"md": path, "html": path}."""
    out = Path(out_dir)
    names = {r.name: list(r.class_names) or ["0", "1"] for r in runs}
    sections = [data_section(runs), split_section(runs), leakage_section(runs), model_section(runs, infos),
                metrics_section(tables["table1"], n_boot, names), calibration_section(tables["table1"], figures),
                *extra_sections, failure_section(runs, explanations, out), todo_section()]
    text = card_markdown(runs, sections)
    md = out / "model_card.md"
    md.write_text(text)
    page = out / "model_card.html"
    page.write_text(render_html(text, out, f"Model card: {', '.join(r.name for r in runs)}"))
    return {"md": str(md), "html": str(page)}
