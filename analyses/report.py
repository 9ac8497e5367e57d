"""Markdown + JSON report of an evaluated run (``report.md``, ``report.json`` and the figures).

The Markdown is for a person deciding whether a run obeys the theory: one summary table per kind, a
per-layer table, the optimizer the laws were evaluated for, the checkpoint cross-check, anything that
limits the comparison (crash, divergence, unsupported optimizer), and how to reproduce it. The JSON holds
the same numbers for programs (``Evaluation.to_json()`` plus the figure names).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from symmetry_engine.numeric.evaluate import Evaluation
from symmetry_engine.numeric.runfile import write_json_atomic

from .figures import write_figures

_ERR_DOC = ("Errors are max over steps of |measured − predicted| divided by the max over steps of the group's "
            "size (Σ|θ| over the slices for translation, Σ|θ|² over all slices for scale and rescale).")


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:.2e}" if x != 0 else "0"
    return str(x)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return lines


def render_markdown(ev: Evaluation, figures: Sequence[Path] = ()) -> str:
    """The text of report.md for ``ev`` (figures are linked by file name)."""
    meta, opt = ev.meta, ev.optimizer
    model = meta.get("model") or {}
    ckpt = getattr(ev, "source", "run") == "checkpoints"
    lines = [f"# {'Checkpoint evaluation' if ckpt else 'Run report'}: `{ev.run_dir}`", ""]
    lines.append(f"{ev.T} optimizer steps{'' if meta.get('closed') else ' (run not closed)'}, "
                 f"{sum(s['groups'] for s in ev.summary.values())} symmetry groups, dtype {meta.get('dtype')}, "
                 f"device {meta.get('device')}" + (f", model `{model.get('spec')}`" if model.get("spec") else "") + ".")
    lines.append("")
    if ev.warnings or ev.prediction_errors:
        lines += ["## Warnings", ""]
        lines += [f"- {w}" for w in ev.warnings]
        lines += [f"- prediction unavailable for {k}: {v}" for k, v in ev.prediction_errors.items()]
        lines.append("")
    lines += ["## Conservation laws per kind", "", _ERR_DOC, ""]
    lines += _table(["kind", "groups", "exact max", "exact median", "continuous max", "continuous median",
                     "breaking max"],
                    [(k, s["groups"], s["exact"]["max"], s["exact"]["median"], s["continuous"]["max"],
                      s["continuous"]["median"], s.get("breaking", {}).get("max")) for k, s in ev.summary.items()])
    if ckpt:
        lines += _approximate_section(ev)
    lines += ["", "The exact law is the discrete-time law of the optimizer's update rule (float64 runs match it to "
              "rounding); the continuous law is the paper's gradient-flow / modified-flow prediction. "
              "*Breaking* is the drift the symmetry forbids, from the recorded ⟨ĝ, ξ⟩ (BN's ε, float32 round-off), "
              "on the same scale: the exact law includes it, the continuous law assumes it is zero, so a continuous "
              "error no larger than it is symmetry breaking rather than modelling error.", ""]
    degenerate = [g for g in ev.groups if g.err_continuous == g.err_continuous and g.breaking >= 0.1 * g.err_continuous > 0]
    if degenerate:
        worst = max(degenerate, key=lambda g: g.err_continuous)
        lines += [f"{len(degenerate)} groups have a continuous error mostly explained by symmetry breaking "
                  f"(breaking ≥ 10% of it), e.g. `{worst.key}`: continuous error {worst.err_continuous:.2e}, breaking "
                  f"{worst.breaking:.2e}, group size {worst.norm:.2e} (a quantity that sits at round-off level "
                  "makes relative errors large).", ""]
    if ev.angular is not None:
        a = ev.angular
        k = max(1, ev.T // 10)
        lines += ["## Spherical motion of scale-invariant groups", "",
                  f"Angle turned per step by the scale groups, from the logged statistics: median over groups of the "
                  f"mean over the last {k} steps {float(np.median(a.angles[-k:].mean(axis=0))):.3e} rad; the "
                  f"equilibrium prediction √(2ηλ/(1+β)) there is {float(a.predicted[-k:].mean()):.3e} rad "
                  f"(median ratio {float(np.median(a.tail_ratio())):.2f}). The norms relax to equilibrium over "
                  f"~{a.relaxation_steps:.0f} steps, so a shorter run shows the approach, not the equilibrium.", ""]
    lines += ["## Per layer", ""]
    extra = ["err_approx max (approximate)"] if ckpt else []
    lines += _table(["kind", "layer", "groups", "exact max", "exact median", "continuous max", "continuous median"]
                    + extra,
                    [(r["kind"], f"`{r['layer']}`", r["groups"], r["exact"]["max"], r["exact"]["median"],
                      r["continuous"]["max"], r["continuous"]["median"])
                     + ((r.get("approx", {}).get("max"),) if ckpt else ()) for r in ev.layers])
    lines += ["", "## Optimizer", ""]
    lines += _table(["rule", "lr (initial)", "momentum", "dampening", "nesterov", "weight decay", "decoupled"],
                    [(opt.get("rule"), opt.get("lr"), opt.get("momentum"), opt.get("dampening"), opt.get("nesterov"),
                      opt.get("weight_decay"), opt.get("decoupled_weight_decay"))])
    if len(ev.lrs):
        lines += ["", f"Learning rate over the run: {float(ev.lrs.min()):.4g} … {float(ev.lrs.max()):.4g} "
                      "(the recorded per-step values are used)."]
    lines += ["", "## Checkpoint cross-check", ""]
    if ckpt:
        lines += ["Checkpoints evaluated (no run log: the quantities are measured in their weights).", ""]
        lines += _table(["checkpoint", "step", "momentum buffer", "replica loss"],
                        [(f"`{Path(c['path']).name}`", c["step"], c["buffer"], c["replica_loss"])
                         for c in getattr(ev, "estimation", {}).get("checkpoints", [])])
    elif ev.checkpoints:
        lines += ["Quantities recomputed from each checkpoint's weights against the log at that step "
                  "(max relative error over groups).", ""]
        kinds = list(ev.summary)
        lines += _table(["checkpoint", "step"] + kinds + ["note"],
                        [(f"`{Path(c.path).name}`", c.step, *[c.errors.get(k) for k in kinds], c.note or "")
                         for c in ev.checkpoints])
    else:
        lines.append("No checkpoints (`checkpoints/step_*.pt`) in the run directory.")
    if figures:
        lines += ["", "## Figures", ""]
        for f in figures:
            lines += [f"![{f.stem}]({f.name})", ""]
    if ckpt:
        lines += ["", "## Re-run", "", f"`nmech evaluate --checkpoints {ev.run_dir}` with the model, dataset and "
                  "optimizer flags of this evaluation (report.json: `model`, `optimizer`, `estimation`), or "
                  "`symmetry_engine.evaluate_checkpoints(...)` in Python.", ""]
        return "\n".join(lines)
    lines += ["", "## Re-run", "", "```sh", f"nmech evaluate {ev.run_dir}", "```", "", "or in Python:", "",
              "```python", "from symmetry_engine.numeric.evaluate import evaluate_run",
              "from analyses.report import write_report", f"ev = evaluate_run({str(ev.run_dir)!r})",
              f"write_report(ev, {str(Path(ev.run_dir) / 'report')!r})", "```", ""]
    return "\n".join(lines)


def _approximate_section(ev: Evaluation) -> list[str]:
    """Checkpoint-only evaluations: the scale/rescale errors are approximate, and say so in a table of their own."""
    rows = [(k, s["groups"], s.get("approx", {}).get("max"), s.get("approx", {}).get("median"))
            for k, s in ev.summary.items() if k != "translation"]
    if not rows:
        return []
    note = getattr(ev, "estimation", {}).get("note", "")
    return ["", "### Scale and rescale: APPROXIMATE (estimated from checkpoints)", "",
            f"{note[:1].upper()}{note[1:]}." if note else "", ""] + \
        _table(["kind", "groups", "err_approx max (approximate)", "err_approx median (approximate)"], rows)


def write_report(evaluation: Evaluation, out_dir: str | Path) -> Path:
    """Write report.md, report.json and the figures into ``out_dir``; returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(evaluation, out)
    data = evaluation.to_json()
    data["figures"] = [f.name for f in figures]
    write_json_atomic(out / "report.json", data)
    md = out / "report.md"
    md.write_text(render_markdown(evaluation, figures))
    return md


__all__ = ["write_report", "render_markdown"]
