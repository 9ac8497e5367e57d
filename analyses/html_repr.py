"""HTML for Jupyter: ``_repr_html_`` of the analysis and evaluation objects call these.

Both take the objects' JSON (``Analysis.to_json()``, ``Evaluation.to_json()``), so they work on saved
JSON as well, and both return a compact fragment (no figures: a notebook cell should render instantly).
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from symmetry_engine.symmetry import KINDS

from .arch_report import layer_table
from .natsort import natural_key, natsorted
from .report_doc import fmt_value
from .report_html import VERDICT_CLASSES

_STYLE = ("<style>.nmech table{border-collapse:collapse;font-size:12px}.nmech th,.nmech td{border:1px solid #d6dae3;"
          "padding:2px 6px;text-align:left}.nmech td.num{text-align:right}.nmech th{background:#eef0f5}"
          ".nmech .v-holds{background:#dff3e4}.nmech .v-approx{background:#fff1cc}.nmech .v-broken{background:#fbd9d7}"
          ".nmech .v-degen{background:#eceef2}</style>")
MAX_ROWS = 40


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        text = fmt_value(v)
        cls = VERDICT_CLASSES.get(text) or ("num" if isinstance(v, (int, float)) and not isinstance(v, bool) else "")
        return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    extra = len(rows) - MAX_ROWS
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows[:MAX_ROWS])
    more = f'<tr><td colspan="{len(header)}">… {extra} more rows</td></tr>' if extra > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}{more}</tbody></table>"


def analysis_html(analysis: Mapping[str, Any]) -> str:
    """Counts per kind and a per-layer table of an analysis JSON."""
    model = analysis.get("model") or {}
    counts = analysis.get("counts") or {}
    title = html.escape(str(model.get("spec") or "model"))
    parts = [_STYLE, f'<div class="nmech"><b>Symmetries of {title}</b> (loss {html.escape(str(analysis.get("loss")))}): '
             + ", ".join(f"{counts.get(k, 0)} {k}" for k in KINDS)
             + (f", {len(analysis['matrix_symmetries'])} GL(r)" if analysis.get("matrix_symmetries") else "")]
    rows = [[name, *[info.groups[k] for k in KINDS], sum(info.consumes_from.values()), len(info.gl)]
            for name, info in natsorted(layer_table(analysis).items(), key=lambda kv: kv[0])]
    parts.append(_table(["layer", *KINDS, "rescale (consumer)", "GL(r)"], rows))
    blocked = analysis.get("blocked") or {}
    if blocked:
        parts.append("<div>No scale/rescale symmetry: " + "; ".join(f"{html.escape(r)} ({n})" for r, n in blocked.items())
                     + "</div>")
    for w in analysis.get("warnings") or []:
        parts.append(f"<div>warning: {html.escape(str(w))}</div>")
    return "".join(parts) + "</div>"


def evaluation_html(evaluation: Mapping[str, Any]) -> str:
    """Verdict counts, the per-kind summary and the warnings of an evaluation JSON."""
    d = evaluation
    v = d.get("verdicts") or {}
    parts = [_STYLE, f'<div class="nmech"><b>Evaluation of {html.escape(str(d.get("run_dir")))}</b>: {d.get("steps")} steps, '
             f'dtype {html.escape(str(d.get("dtype")))}'
             + ("" if d.get("closed", True) else " (run not closed)")]
    if v:
        parts.append(" — " + ", ".join(f'<span class="{VERDICT_CLASSES[k]}">{v.get(k, 0)} {k}</span>'
                                        for k in VERDICT_CLASSES))
    summary = d.get("summary") or {}
    has_law = any(s.get("law") for s in summary.values())
    header = ["kind", "groups", "exact max", *(["law max", "law median"] if has_law else []), "continuous max",
              "continuous median", "breaking max"]
    rows = []
    for k, s in summary.items():
        g = lambda key, stat: (s.get(key) or {}).get(stat)  # noqa: E731
        rows.append([k, s.get("groups"), g("exact", "max"), *([g("law", "max"), g("law", "median")] if has_law else []),
                     g("continuous", "max"), g("continuous", "median"), g("breaking", "max")])
    parts.append(_table(header, rows))
    bad = sorted((x for x in d.get("groups") or [] if x.get("verdict") == "broken"), key=lambda x: natural_key(x["key"]))
    if bad:
        parts.append(_table(["broken group", "cause", "breaking"], [[x["key"], x.get("cause") or "", x.get("breaking")]
                                                                    for x in bad]))
    for w in list(d.get("warnings") or []) + [f"{k}: {m}" for k, m in (d.get("prediction_errors") or {}).items()]:
        parts.append(f"<div>warning: {html.escape(str(w))}</div>")
    return "".join(parts) + "</div>"


__all__ = ["analysis_html", "evaluation_html"]
