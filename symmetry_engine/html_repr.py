"""HTML for Jupyter: ``Analysis._repr_html_`` (graph/analysis.py) and ``Evaluation._repr_html_``
(numeric/evaluate.py, also checkpoint evaluations) render through these, so ``nm.analyze(...)`` or
``nm.evaluate_run(...)`` as the last line of a notebook cell shows a table instead of a dataclass dump.

Both take the objects' JSON (``Analysis.to_json()``, ``Evaluation.to_json()``), so they work on saved
JSON as well, and both return a compact fragment (no figures: a notebook cell should render instantly).
The module imports only the standard library and ``symmetry_engine.symmetry`` (no torch, no plotting).
"""

from __future__ import annotations

import html
from typing import Any, Mapping

import math
import re

from symmetry_engine.symmetry import KINDS

VERDICT_CLASSES = {"holds": "v-holds", "approximate": "v-approx", "broken": "v-broken", "degenerate": "v-degen"}


def natural_key(text: Any) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text)) if p)


def fmt_value(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return "0" if x == 0 else f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"
    return str(x)


def layer_counts(analysis: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per module (parameter-name prefix, in network order): groups owned per kind (at the module of the
    first sign +1 member, as in the architecture report), rescale groups consumed, GL(r) pairs."""
    mod = lambda p: p.rsplit(".", 1)[0] if "." in p else p  # noqa: E731
    rows: dict[str, dict[str, int]] = {}
    empty = lambda: {**{k: 0 for k in KINDS}, "consumer": 0, "gl": 0}  # noqa: E731
    for p in analysis.get("parameters") or {}:
        rows.setdefault(mod(p), empty())
    for s in analysis.get("symmetries") or []:
        plus = [mod(m["param"]) for m in s["members"] if m.get("sign", 1) > 0] or [mod(s["members"][0]["param"])]
        rows.setdefault(plus[0], empty())[s["kind"]] += 1
        for m in dict.fromkeys(mod(m["param"]) for m in s["members"] if m.get("sign", 1) < 0):
            if m != plus[0]:
                rows.setdefault(m, empty())["consumer"] += 1
    for g in analysis.get("matrix_symmetries") or []:
        first = g.get("first_weight") or ((g.get("members") or [{}])[0].get("param")) or "?"
        rows.setdefault(mod(first), empty())["gl"] += 1
    return rows

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
    title = f" of {html.escape(str(model['spec']))}" if model.get("spec") else ""
    parts = [_STYLE, f'<div class="nmech"><b>Symmetries{title}</b> (loss {html.escape(str(analysis.get("loss")))}): '
             + ", ".join(f"{counts.get(k, 0)} {k}" for k in KINDS)
             + (f", {len(analysis['matrix_symmetries'])} GL(r)" if analysis.get("matrix_symmetries") else "")]
    rows = [[name, *[c[k] for k in KINDS], c["consumer"], c["gl"]]
            for name, c in sorted(layer_counts(analysis).items(), key=lambda kv: natural_key(kv[0]))]
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
    ckpt = d.get("source") == "checkpoints"
    if ckpt:
        parts.append(f"<div>from {len((d.get('estimation') or {}).get('checkpoints') or [])} checkpoints saved without "
                     "the tracker: scale/rescale errors are <b>approximate: estimated from checkpoints</b></div>")
    header = ["kind", "groups", "exact max", *(["law max", "law median"] if has_law else []), "continuous max",
              "continuous median", "breaking max", *(["approx max (approximate)"] if ckpt else [])]
    rows = []
    for k, s in summary.items():
        g = lambda key, stat: (s.get(key) or {}).get(stat)  # noqa: E731
        rows.append([k, s.get("groups"), g("exact", "max"), *([g("law", "max"), g("law", "median")] if has_law else []),
                     g("continuous", "max"), g("continuous", "median"), g("breaking", "max"),
                     *([g("approx", "max")] if ckpt else [])])
    parts.append(_table(header, rows))
    bad = sorted((x for x in d.get("groups") or [] if x.get("verdict") == "broken"), key=lambda x: natural_key(x["key"]))
    if bad:
        parts.append(_table(["broken group", "cause", "breaking"], [[x["key"], x.get("cause") or "", x.get("breaking")]
                                                                    for x in bad]))
    for w in list(d.get("warnings") or []) + [f"{k}: {m}" for k, m in (d.get("prediction_errors") or {}).items()]:
        parts.append(f"<div>warning: {html.escape(str(w))}</div>")
    return "".join(parts) + "</div>"


__all__ = ["analysis_html", "evaluation_html"]
