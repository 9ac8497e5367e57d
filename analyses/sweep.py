"""Runs side by side: ``nmech report RUN1 RUN2 ...`` (e.g. λ ∈ {0, 1e-4, 5e-4, 1e-3}, or several β).

Like the rows of the paper's figures: one panel per symmetry kind, one line per run, labelled by the
hyperparameters that differ between the runs. Each panel follows the same group (same key) in every
run, so with a shared seed the curves start together and part as weight decay or momentum act; under
each panel the continuous law's residual shows how its modelling error grows with ηλ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from symmetry_engine.symmetry import KINDS  # noqa: E402

from .figures import (STYLE, TITLES, YLABEL, channel_label, group_norm, network_order, pick_groups, pick_layer,  # noqa: E402
                      predictions, residual, save_figure, verdicts_by_key)
from .report_doc import Document, Figure, Para, Section, Table  # noqa: E402
from .run_info import differing, hyperparameters, read_eval_log, run_label  # noqa: E402

VERDICTS = ("holds", "approximate", "broken", "degenerate")


def sweep_labels(datas: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The differing hyperparameters and one unique label per run (the directory name breaks ties)."""
    keys = differing(datas)
    labels = [run_label(d, keys, n) for d, n in zip(datas, names)]
    if len(set(labels)) < len(labels):
        labels = [f"{l} ({n})" if l != n else n for l, n in zip(labels, names)]
    return keys, labels


def common_group(evs: Sequence[Any], datas: Sequence[Mapping[str, Any]], kind: str, layers: Sequence[str]) -> str | None:
    """A group key of ``kind`` present in every run and degenerate in none: in the requested layer, else the
    first run's default layer; the middle one of that layer's usable groups."""
    sers = [ev.series.get(kind) for ev in evs]
    if any(s is None for s in sers):
        return None
    degenerate = set().union(*({k for k, v in verdicts_by_key(d).items() if v == "degenerate"} for d in datas))
    shared = set.intersection(*({s.key for s in ser.symmetries} for ser in sers)) - degenerate
    if not shared:
        return None
    first = sers[0]
    have = {s.layer for s in first.symmetries if s.key in shared}
    layer = next((l for l in layers if l in have), None) or pick_layer(
        kind, [s for s in first.symmetries if s.key in shared], params=network_order(evs[0].run_dir))
    idx = [j for j in pick_groups(first, layer, 10**9, degenerate) if first.symmetries[j].key in shared]
    return first.symmetries[idx[len(idx) // 2]].key if idx else None


def sweep_figure(evs: Sequence[Any], datas: Sequence[Mapping[str, Any]], labels: Sequence[str],
                 layers: Sequence[str] = ()) -> tuple[MplFigure | None, dict[str, str]]:
    """One column per kind: top the quantity of one shared group per run (measured solid, continuous law
    dotted), bottom |measured − continuous| / norm (and the law's or exact residual, dashed)."""
    keys = {k: common_group(evs, datas, k, layers) for k in KINDS}
    keys = {k: v for k, v in keys.items() if v is not None}
    if not keys:
        return None, {}
    fig, axes = plt.subplots(2, len(keys), figsize=(5.0 * len(keys), 6.2), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [2.0, 1.2]})
    for col, (kind, key) in enumerate(keys.items()):
        top, bottom = axes[0, col], axes[1, col]
        for r, (ev, label) in enumerate(zip(evs, labels)):
            ser = ev.series[kind]
            j = next(i for i, s in enumerate(ser.symmetries) if s.key == key)
            preds = predictions(ser)
            colour, steps = f"C{r}", np.asarray(ev.steps)
            top.plot(steps, ser.measured[:, j], color=colour, gid=f"sweep|{kind}|measured|{r}", label=label,
                     **{**STYLE["measured"], "alpha": 0.55})
            top.plot(steps, preds["continuous"][:, j], color=colour, gid=f"sweep|{kind}|continuous|{r}",
                     **STYLE["continuous"])
            norm = group_norm(ser)[j]
            bottom.plot(steps, residual(ser.measured[:, j], preds["continuous"][:, j], norm), color=colour,
                        gid=f"sweep|{kind}|residual-continuous|{r}", lw=1.2, ls=":")
            other = "law" if "law" in preds else "exact"
            bottom.plot(steps, residual(ser.measured[:, j], preds[other][:, j], norm), color=colour,
                        gid=f"sweep|{kind}|residual-{other}|{r}", lw=0.9, ls="--", alpha=0.8)
        sym = next(s for s in evs[0].series[kind].symmetries if s.key == key)
        top.set_title(f"{TITLES[kind]}\nlayer {sym.layer}, {channel_label(sym, kind)} (the same group in every run)",
                      fontsize=9)
        top.set_ylabel(YLABEL[kind])
        top.legend(fontsize=7, loc="best")
        bottom.set_yscale("log")
        bottom.set_xlabel("step")
        bottom.set_ylabel("|measured − predicted| / norm", fontsize=8)
        bottom.grid(True, which="major", axis="y", lw=0.4, alpha=0.5)
    handles = [plt.Line2D([], [], color="0.3", **STYLE["measured"]), plt.Line2D([], [], color="0.3", lw=1.2, ls=":"),
               plt.Line2D([], [], color="0.3", lw=0.9, ls="--")]
    fig.legend(handles, ["measured", "continuous law (paper) and its residual", "residual of the exact/symmetry law"],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig, keys


def _final_accuracy(run_dir: Any) -> float | None:
    rows, _ = read_eval_log(run_dir)
    acc = [r.get("test_accuracy") for r in rows if r.get("test_accuracy") is not None]
    return float(acc[-1]) if acc else None


def sweep_document(evs: Sequence[Any], datas: Sequence[Mapping[str, Any]], out: Path, layers: Sequence[str] = ()
                   ) -> tuple[Document, dict[str, Any]]:
    """The sweep report — which hyperparameters differ, a table per run, the side-by-side figure — and
    ``{"labels", "differing", "groups_shown"}`` for the JSON."""
    names = [Path(ev.run_dir).name for ev in evs]
    keys, labels = sweep_labels(datas, names)
    diff = ", ".join(f"`{k}`" for k in keys) if keys else "nothing in the recorded configurations"
    doc = Document(f"Sweep report: {len(evs)} runs", [Para(
        f"Runs compared: {', '.join(f'`{ev.run_dir}`' for ev in evs)}. What differs between them: {diff}.")])
    kinds = [k for k in KINDS if any(k in (d.get("summary") or {}) for d in datas)]
    header = ["run", "label", "steps", "test accuracy"]
    has_v = any(d.get("verdicts") for d in datas)
    if has_v:
        header += ["verdicts (holds/approx./broken/degen.)"]
    law_key = "law" if any((d.get("summary") or {}).get(k, {}).get("law") for d in datas for k in kinds) else "exact"
    for k in kinds:
        header += [f"{k} {law_key} max", f"{k} continuous median", f"{k} continuous max"]
    rows = []
    for ev, d, label in zip(evs, datas, labels):
        row: list[Any] = [f"`{Path(ev.run_dir).name}`", label, d.get("steps"), _final_accuracy(ev.run_dir)]
        if has_v:
            v = d.get("verdicts") or {}
            row.append("/".join(str(v.get(x, 0)) for x in VERDICTS))
        for k in kinds:
            s = (d.get("summary") or {}).get(k) or {}
            row += [(s.get(law_key) or {}).get("max"), (s.get("continuous") or {}).get("median"),
                    (s.get("continuous") or {}).get("max")]
        rows.append(row)
    doc.sections.append(Section("Runs", [Table(header, rows, caption=(
        "Per run and kind: the largest error of the exact law (or the symmetry's law, when the evaluation has one) "
        "and the median and largest error of the paper's continuous law, over the run's non-degenerate groups."))]))
    hp = [hyperparameters(d) for d in datas]
    if keys:
        doc.sections[-1].blocks.append(Table(["run", *keys], [[lab, *[h.get(k) for k in keys]] for lab, h in
                                                              zip(labels, hp)], numeric=False,
                                             caption="The hyperparameters that differ between the runs."))
    fig, shown = sweep_figure(evs, datas, labels, layers)
    if fig is not None:
        where = "; ".join(f"{k}: group `{v}`" for k, v in shown.items())
        doc.sections.append(Section("Conserved quantities across the runs", [Figure(
            save_figure(fig, out / "sweep.png"), "Runs side by side",
            f"One column per symmetry kind, following the same group in every run ({where}); one colour per run, "
            "labelled by the hyperparameters that differ. Top: the measured quantity (thick) and the paper's continuous "
            "law (dotted). Bottom, log scale: |measured − continuous| / norm (dotted) and the exact or symmetry law's "
            "residual (dashed); the continuous law's error grows with ηλ, the exact law's stays at round-off (a residual "
            "that is exactly 0, like the continuous translation law at λ = 0, cannot be drawn on a log axis). "
            "Choose the layer with `--layer`.")]))
    else:
        doc.sections.append(Section("Conserved quantities across the runs", [Para(
            "The runs share no symmetry group (different architectures), so there is no common quantity to plot; "
            "compare their single-run reports instead.")]))
    return doc, {"labels": labels, "differing": keys, "groups_shown": shown}


__all__ = ["sweep_document", "sweep_figure", "sweep_labels", "common_group"]
