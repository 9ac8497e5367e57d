"""The sections of a run report, built once from the evaluation and rendered to Markdown and HTML.

Input: the evaluation object (``Evaluation``: per-kind series for the figures) and its JSON
(``Evaluation.to_json()``, format ``nmech-evaluation/2``: verdicts, summaries, optimizer classes, warnings).
Keys an older evaluation does not have (verdicts, law errors, member classes) leave their columns and
sections out rather than showing blanks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .figures import choose_panels, conservation_figure, network_order, save_figure
from .figures_run import (angular_figure, checkpoint_samples, figure1_layers, sample_param, tracker_samples,
                          trajectories_figure, training_figure)
from .natsort import natural_key, natsorted
from .report_doc import Bullets, Code, Document, Figure, Formula, Para, Section, Table
from .run_info import read_eval_log

VERDICTS = ("holds", "approximate", "broken", "degenerate")
ERR_DOC = ("Errors are the max over steps of |measured − predicted| divided by the max over steps of the group's "
           "size (Σ|θ| over the slices for translation, Σ|θ|² over all slices for scale and rescale).")
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
LAW_TEX = {"conserved_quantity": "conserved quantity (gradient flow)", "gradient_constraint": "gradient constraint",
           "exact_law": "exact discrete law of the optimizer", "time": "continuous time",
           "continuous_ode": "the paper's continuous dynamics", "continuous_solution": "its solution",
           "gamma": "damping", "omega2": "frequency"}


def _stats_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(header, dotted key) of the error statistics present in ``rows``."""
    cols = [("exact max", "exact.max"), ("exact median", "exact.median")]
    if any(r.get("law") for r in rows):
        cols += [("law max", "law.max"), ("law median", "law.median")]
    cols += [("continuous max", "continuous.max"), ("continuous median", "continuous.median")]
    if any(r.get("breaking") for r in rows):
        cols += [("breaking max", "breaking.max")]
    if any(_get(r, "approx.max") is not None for r in rows):
        # checkpoint evaluations: the scale/rescale laws fed estimates are the only errors of those kinds, so
        # their columns come first (a wide table scrolls; the key column must not be the hidden one)
        cols = [("approx max (approximate)", "approx.max"), ("approx median (approximate)", "approx.median")] + cols
    return cols


def is_checkpoint_evaluation(data: Mapping[str, Any]) -> bool:
    """The evaluation came from checkpoints saved without the tracker (``source == "checkpoints"``)."""
    return data.get("source") == "checkpoints"


def approximate_section(data: Mapping[str, Any]) -> Section | None:
    """Checkpoint evaluations: the scale/rescale errors are approximate, and say so in a section of their own."""
    summary = data.get("summary") or {}
    rows = [[k, s.get("groups"), _get(s, "approx.max"), _get(s, "approx.median")]
            for k, s in summary.items() if k != "translation"]
    if not rows:
        return None
    est = data.get("estimation") or {}
    note = str(est.get("note") or "")
    blocks: list[Any] = []
    if note:
        blocks.append(Para(f"{note[:1].upper()}{note[1:]}."))
    blocks.append(Table(["kind", "groups", "err_approx max (approximate)", "err_approx median (approximate)"], rows,
                        caption="err_approx: max over checkpoints of |measured − law fed estimated statistics| over the "
                                "group's size. It mixes the law's own error with the estimate's; a tracked run "
                                "(`nmech train` or `track(...)`) measures the laws exactly."))
    if summary.get("translation"):
        blocks.append(Para("Translation laws need no gradient statistics: they are forecast from the first checkpoint "
                           "and their errors (exact = law) are exact, not approximate."))
    return Section("Scale and rescale: APPROXIMATE (estimated from checkpoints)", blocks)


def _get(r: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        r = r.get(part) if isinstance(r, Mapping) else None
    return r


def verdict_section(data: Mapping[str, Any]) -> Section | None:
    counts = data.get("verdicts")
    if not counts:
        return None
    total = sum(int(counts.get(v, 0)) for v in VERDICTS)
    blocks: list[Any] = [Para(f"{total} symmetry groups: " + ", ".join(f"**{counts.get(v, 0)} {v}**" for v in VERDICTS)
                              + ". A group **holds** when its measured breaking ⟨ĝ, ξ⟩ is at round-off and the law "
                              "predicts it; **approximate** when a known cause (a normalizer's ε, the dtype's round-off) "
                              "breaks it slightly; **broken** when the breaking is far above what round-off and ε explain "
                              "(there is no such symmetry in this run); **degenerate** when gradient and quantity both "
                              "sit at round-off (e.g. zero-initialised biases before batch norm).")]
    rows = [[k, s.get("groups"), *[(s.get("verdicts") or {}).get(v, 0) for v in VERDICTS]]
            for k, s in (data.get("summary") or {}).items()]
    if rows:
        blocks.append(Table(["kind", "groups", *VERDICTS], rows))
    if data.get("degenerate_note"):
        blocks.append(Para(str(data["degenerate_note"])))
    bad = [g for g in data.get("groups") or [] if g.get("verdict") in ("broken", "approximate")]
    estimated = [g for g in bad if g.get("verdict") == "approximate" and g.get("cause") == "estimated from checkpoints"]
    if estimated:   # checkpoint evaluations: approximate by construction, summarised in their own section
        bad = [g for g in bad if g not in estimated]
        blocks.append(Para(f"{len(estimated)} scale/rescale groups are approximate only because their laws are fed "
                           "statistics estimated from checkpoints (see \"Scale and rescale: APPROXIMATE\" below); "
                           + (f"the {len(bad)} other groups that do not simply hold are listed here." if bad else
                              "no other group fails to hold.")))
    if bad:
        bad = sorted(bad, key=lambda g: (g["verdict"] != "broken", -(g.get("breaking") or 0.0)))
        shown = bad[:25]
        approx = any(g.get("err_approx") is not None for g in shown)
        blocks.append(Table(["group", "verdict", "cause", "breaking", "law error", "exact error",
                             *(["approx error (estimated)"] if approx else [])],
                            [[f"`{g['key']}`", g["verdict"], g.get("cause") or "", g.get("breaking"), g.get("err_law"),
                              g.get("err_exact"), *([g.get("err_approx")] if approx else [])] for g in shown],
                            caption=f"Groups that do not simply hold ({len(shown)} of {len(bad)} shown, broken first)."))
    th = data.get("thresholds")
    if th:
        blocks.append(Table(["threshold", "value"], [[f"`{k}`", v] for k, v in th.items()],
                            caption="Thresholds the verdicts use, derived from the run's dtype (docs/run_format.md)."))
    return Section("Verdicts", blocks)


def warnings_section(data: Mapping[str, Any], extra: Sequence[str] = ()) -> Section | None:
    items = [str(w) for w in data.get("warnings") or []]
    items += [f"prediction unavailable for {k}: {v}" for k, v in (data.get("prediction_errors") or {}).items()]
    items += list(extra)
    if not data.get("closed", True):
        items.insert(0, "the run log was not closed (crash, or training still running): its last record is used "
                        "as the final state")
    return Section("Warnings", [Bullets(items)]) if items else None


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _range(d: Any) -> str:
    """A hyperparameter over the run: ``0.1`` when constant, else ``first → last (range min … max)``."""
    if not isinstance(d, Mapping):
        return "" if d is None else _num(d)
    lo, hi, first, last = d.get("min"), d.get("max"), d.get("first"), d.get("last")
    if lo is None or hi is None or lo == hi:
        return _num(first if first is not None else lo)
    return f"{_num(first)} → {_num(last)} (range {_num(lo)} … {_num(hi)})"


def config_section(data: Mapping[str, Any], lrs: np.ndarray) -> Section:
    model, train, opt = data.get("model") or {}, data.get("train") or {}, data.get("optimizer") or {}
    rows: list[list[Any]] = []
    if model:
        kw = ", ".join(f"{k}={v}" for k, v in (model.get("kwargs") or {}).items())
        rows.append(["model", f"`{model.get('spec') or model.get('name') or '?'}`" + (f" ({kw})" if kw else "")])
        for k, label in (("input_shape", "input shape (one sample)"), ("num_classes", "classes"), ("loss", "loss")):
            if model.get(k) is not None:
                rows.append([label, model[k]])
    for k, label in (("dataset", "dataset"), ("input_size", "input size"), ("batch_size", "batch size"),
                     ("steps", "steps"), ("epochs", "epochs"), ("seed", "seed"), ("schedule", "lr schedule"),
                     ("warmup_steps", "warmup steps"), ("deterministic", "deterministic")):
        if train.get(k) not in (None, [], ""):
            rows.append([label, train[k]])
    rows += [["dtype", data.get("dtype")], ["device", data.get("device")], ["optimizer steps evaluated", data.get("steps")]]
    est = data.get("estimation") or {}
    if is_checkpoint_evaluation(data):
        rows += [["checkpoints", len(est.get("checkpoints") or [])],
                 ["replica steps per checkpoint", est.get("replica_steps")],
                 ["replica batch size", est.get("batch_size")], ["replica seed", est.get("seed")]]
    blocks: list[Any] = [Table(["setting", "value"], rows, numeric=False)]
    if is_checkpoint_evaluation(data):
        blocks.append(Para("Checkpoints saved without the tracker: the optimizer is the one the command's flags describe "
                           "(not read from a run), and the scale/rescale statistics come from short training replicas "
                           "at each checkpoint on sampled minibatches."))
    elif not train:
        blocks.append(Para("The run was not written by `nmech train`: data, batch size and seed are not recorded."))
    rule = str(opt.get("rule", "?"))
    decay = "decoupled" if opt.get("decoupled_weight_decay") else "coupled"
    blocks.append(Para(f"Optimizer **{rule}**: lr {opt.get('lr')}, momentum {opt.get('momentum')}, dampening "
                       f"{opt.get('dampening')}, Nesterov {'yes' if opt.get('nesterov') else 'no'}, weight decay {opt.get('weight_decay')} "
                       f"({decay})." + (f" Learning rate over the run (recorded per step): {float(np.min(lrs)):.4g} … "
                                        f"{float(np.max(lrs)):.4g}." if len(lrs) else "")))
    classes = opt.get("classes") or []
    if classes:
        blocks.append(Table(
            ["class", "param group", "frozen", "parameters", "lr", "momentum", "dampening", "weight decay", "Nesterov",
             "decoupled"],
            [[f"`{c.get('id')}` {c.get('label') or ''}".strip(), c.get("param_group"), bool(c.get("frozen")),
              len(c.get("params") or []), _range(c.get("lr")), _range(c.get("momentum")), _range(c.get("dampening")),
              _range(c.get("weight_decay")), bool(c.get("nesterov")), bool(c.get("decoupled_weight_decay"))]
             for c in natsorted(classes, key=lambda c: str(c.get("id")))], numeric=False,
            caption="Member classes: parameters the optimizer treats alike (same hyperparameters at every step). A "
                    "symmetry group whose members fall into several classes is broken by the optimizer itself; the "
                    "report lists that as optimizer-induced breaking."))
    return Section("Configuration", blocks)


def summary_section(data: Mapping[str, Any]) -> Section:
    summary = data.get("summary") or {}
    rows = list(summary.values())
    cols = _stats_columns(rows)
    table = Table(["kind", "groups", *[h for h, _ in cols]],
                  [[k, s.get("groups"), *[_get(s, key) for _, key in cols]] for k, s in summary.items()])
    blocks: list[Any] = [Para(ERR_DOC), table,
                         Para("The **exact** column is the discrete-time recurrence of the optimizer with the recorded "
                              "breaking terms as inputs: it checks the tracker and the optimizer description and sits "
                              "at round-off on a sound run. The **law** is the symmetry's own prediction (breaking set "
                              "to zero); the **continuous** law is the paper's gradient-flow / modified-flow prediction. "
                              "**Breaking** is the drift the symmetry forbids, from the recorded ⟨ĝ, ξ⟩, on the same "
                              "scale." + (" Statistics leave degenerate groups out." if data.get("verdicts") else ""))]
    return Section("Conservation laws per kind", blocks)


def laws_section(kinds: Sequence[str], opt_meta: Mapping[str, Any]) -> Section | None:
    """Conserved quantity, constraint, exact and continuous law of each kind, for the run's optimizer."""
    from symmetry_engine.numeric.predict import OptimizerConfig
    from symmetry_engine.symbolic import derive_laws

    try:
        opt = OptimizerConfig.from_json(opt_meta)
        spec = opt.rule_spec()
    except (TypeError, ValueError):
        return None
    blocks: list[Any] = [Para(f"Derived by the symbolic engine for {spec.describe()} (η_n the step's learning rate, "
                              "λ weight decay, β momentum, d dampening; N_n, Q_n, D_n, P_n, s_n the recorded "
                              "statistics of docs/run_format.md).")]
    for kind in kinds:
        try:
            tex = derive_laws(kind, spec).latex()
        except (NotImplementedError, ValueError) as exc:
            blocks.append(Para(f"{kind}: no law ({exc})."))
            continue
        for key, label in LAW_TEX.items():
            if key in tex:
                blocks.append(Formula(f"{kind} — {label}", tex[key]))
    return Section("The laws evaluated", blocks)


def _fig5_caption(panels: Sequence[Any]) -> str:
    """What each line style is, for the predictions the panels actually draw (no style described that is not there)."""
    where = "; ".join(f"{p.kind}: layer `{p.layer}`, {len(p.keys)} groups"
                      + (f" ({p.left_out_degenerate} degenerate left out)" if p.left_out_degenerate else "")
                      for p in panels)
    roles = {r for p in panels for r in p.roles}
    styles = []
    if "law" in roles:
        styles.append("dashed: the symmetry's law (breaking set to zero)")
        if "exact" in roles:
            styles.append("dash-dot in the residuals: the exact identity with the recorded breaking")
    elif "exact" in roles:
        styles.append("dashed/dash-dot: the exact discrete law")
    if "continuous" in roles:
        styles.append("dotted: the paper's continuous law")
    if "approx" in roles:
        styles.append("dash-dot with circles: the law fed statistics estimated from checkpoints (approximate)")
    return (f"The paper's Figure 5 for this run ({where}). Top: the conserved quantity of each group, measured (thick "
            f"translucent line, one colour per group) with its predictions in the same colour — {'; '.join(styles)}. "
            "Where the lines coincide the laws hold to plotting accuracy. Bottom: "
            "|measured − predicted| divided by the group's size, on a log scale, one line per group and prediction; "
            "the thin horizontal grey line is the dtype's unit round-off (residuals that are exactly 0 cannot be drawn on a log "
            "axis and are left out). A law at round-off is exact; the continuous "
            "law's residual grows with ηλ and the number of steps. Choose the layer with `--layer`.")


def figure_sections(ev: Any, data: Mapping[str, Any], out: Path, layers: Sequence[str], channels: int,
                    evals: Sequence[Mapping[str, Any]]) -> list[Section]:
    sections = []
    steps = np.asarray(ev.steps)
    ckpt = is_checkpoint_evaluation(data)
    if ckpt:
        cks = (data.get("estimation") or {}).get("checkpoints") or []
        fig = training_figure(np.array([c["step"] for c in cks], dtype=float),
                              np.array([c.get("replica_loss", np.nan) for c in cks], dtype=float), ev.lrs, evals,
                              lr_steps=int(steps[0]) + np.arange(len(ev.lrs)),
                              loss_label="replica loss at checkpoints\n(approximate: estimated from checkpoints)")
    else:
        fig = training_figure(steps[: len(ev.losses)], ev.losses, ev.lrs, evals)
    if fig is not None:
        last = next((r for r in reversed(evals) if r.get("test_accuracy") is not None), None)
        text = ("Left: the minibatch loss recorded at every step (faint) and its moving average (on runs long enough for one); test loss at each "
                "evaluation pass (eval.jsonl) as dots. Middle: test accuracy. Right: the learning rate the optimizer "
                "used at each step (the laws use these per-step values).")
        if ckpt:
            text = ("Left: the mean minibatch loss of the short training replica run from each checkpoint (approximate: "
                    "estimated from checkpoints; no loss was recorded during training). Right: the learning rate of "
                    "every step between the first and the last checkpoint, from the schedule the flags give (the laws "
                    "use these per-step values).")
        elif not np.isfinite(np.asarray(ev.losses, float)).any():
            text += " The minibatch loss was not recorded (`tracker.record_loss` not called)."
        if last is not None:
            text += f" Final test accuracy {float(last['test_accuracy']):.3f} at step {int(float(last['step']))}."
        sections.append(Section("Training", [Figure(save_figure(fig, out / "training.png"), "Training curves", text)]))
    unit = (data.get("thresholds") or {}).get("unit_roundoff") or UNIT_ROUNDOFF.get(str(data.get("dtype")))
    ck_files = [c["path"] for c in (data.get("estimation") or {}).get("checkpoints") or []] if ckpt else None
    params = network_order(ck_files[0] if ck_files else None) if ckpt else network_order(ev.run_dir)
    panels = choose_panels(ev, data, layers, channels, params)
    fig = conservation_figure(ev, panels, unit)
    if fig is not None:
        caption = _fig5_caption(panels)
        if ckpt:
            caption += (f" Points are the {len(steps)} checkpoints (no per-step record). Scale/rescale predictions are "
                        "approximate: estimated from checkpoints (their laws are fed replica statistics, interpolated "
                        "between checkpoints); translation laws are exact forecasts from the first checkpoint.")
        sections.append(Section("Conservation laws, measured against theory (Figure 5)", [
            Figure(save_figure(fig, out / "conservation.png"), "Figure 5: conserved quantities and residuals",
                   caption)]))
    kind = "scale" if "scale" in ev.series else "rescale" if "rescale" in ev.series else None
    if kind is not None:
        ser = ev.series[kind]
        f1_layers = figure1_layers(ser, data, params=params)
        params = {l: sample_param([s for s in ser.symmetries if s.layer == l]) for l in f1_layers}
        samples = {} if ckpt else tracker_samples(ev.run_dir, f1_layers)
        if not samples:
            samples = checkpoint_samples(ev.run_dir, params, files=ck_files)
        fig = trajectories_figure(ev, kind, f1_layers, samples, data)
        if fig is not None:
            q = "squared norm |θ_c|²" if kind == "scale" else "difference of squared norms |θ_A1|² − |θ_A2|²"
            first = next(iter(samples.values()), None)
            if first is not None and first.source == "tracker":
                top = (f"Top: {len(first.indices)} fixed entries of each layer's parameter, recorded by the tracker "
                       f"at every step (samples.bin, {len(first.steps)} steps) — individual parameters move with the "
                       "minibatch noise from step to step. ")
            elif first is not None:
                top = (f"Top: {len(first.indices)} fixed entries of each layer's weight at the run's "
                       f"{len(first.steps)} checkpoints (the run has no per-step sample: tracked with samples=0, or "
                       "evaluated from checkpoints) — individual parameters wander with the minibatch noise. ")
            else:
                top = ("Individual entries need a per-step sample (`track(..., samples=16)`, the default) or at least "
                       "three checkpoints; this run has neither. ")
            sections.append(Section("Parameters against per-channel quantities (Figure 1)", [
                Figure(save_figure(fig, out / "trajectories.png"), "Figure 1: noisy parameters, smooth quantities",
                       top + f"Bottom: every non-degenerate channel's {q} ({kind} symmetry) of the same layers, "
                       + ("at the checkpoints" if ckpt else "at every step") + ": these move smoothly because the symmetry ties them to a conservation law "
                       "that only weight decay, momentum and the finite learning rate break. Values are plotted as "
                       "they are (not divided by the initial value).")]))
    if getattr(ev, "angular", None) is not None:
        a = ev.angular
        k = max(1, ev.T // 10)
        ratio = float(np.median(a.tail_ratio()))
        fig = angular_figure(a)
        sections.append(Section("Spherical motion of scale-invariant groups", [
            Para(f"Angle turned per step by the scale groups, from the logged statistics: median over groups of the "
                 f"mean over the last {k} steps {float(np.median(a.angles[-k:].mean(axis=0))):.3e} rad; the "
                 f"equilibrium prediction √(2ηλ/(1+β)) there is {float(a.predicted[-k:].mean()):.3e} rad (median "
                 f"ratio {ratio:.2f}). The norms relax to equilibrium over ~{a.relaxation_steps:.0f} steps, so a "
                 "shorter run shows the approach, not the equilibrium."),
            Figure(save_figure(fig, out / "angular_update.png", dpi=120), "Spherical motion",
                   "Angle each scale-invariant group (a layer followed by batch norm) turns per step: the band holds "
                   "10–90% of the groups, the solid line their median, the dashed line the rotational equilibrium "
                   "√(2ηλ/(1+β)) at each step's learning rate (log scale).")]))
    return sections


def layers_section(data: Mapping[str, Any]) -> Section:
    rows = sorted(data.get("layers") or [], key=lambda r: (r["kind"], natural_key(r["layer"])))
    cols = _stats_columns(rows)
    has_v = any(r.get("verdicts") for r in rows)
    header = ["kind", "layer", "groups", *(["verdicts"] if has_v else []), *[h for h, _ in cols]]
    body = []
    for r in rows:
        v = r.get("verdicts") or {}
        vtext = ", ".join(f"{n} {k}" for k, n in v.items() if n) if has_v else None
        body.append([r["kind"], f"`{r['layer']}`", r["groups"], *([vtext] if has_v else []),
                     *[_get(r, key) for _, key in cols]])
    return Section("Per layer", [Table(header, body, caption="Layers in natural order of their names (features.3 before features.10).")])


def checkpoint_section(data: Mapping[str, Any]) -> Section:
    if is_checkpoint_evaluation(data):
        est = (data.get("estimation") or {}).get("checkpoints") or []
        return Section("Checkpoints evaluated", [
            Para("No run log: the quantities are measured in each checkpoint's weights; the momentum buffer column says "
                 "where the laws' buffer came from (saved optimizer state, fresh at step 0, or a burn-in replica)."),
            Table(["checkpoint", "step", "momentum buffer", "replica loss"],
                  [[f"`{Path(c['path']).name}`", c.get("step"), c.get("buffer"), c.get("replica_loss")]
                   for c in sorted(est, key=lambda c: int(c.get("step") or 0))])])
    cks = data.get("checkpoints") or []
    if not cks:
        return Section("Checkpoint cross-check", [Para("No checkpoints (`checkpoints/step_*.pt`) in the run directory.")])
    kinds = list(data.get("summary") or {})
    return Section("Checkpoint cross-check", [
        Para("Quantities recomputed from each checkpoint's weights against the log at that step (max relative "
             "error over groups); round-off level means the log and the weights belong together."),
        Table(["checkpoint", "step", *kinds, "note"],
              [[f"`{Path(c['path']).name}`", c.get("step"), *[(c.get("errors") or {}).get(k) for k in kinds],
                c.get("note") or ""] for c in natsorted(cks, key=lambda c: Path(c["path"]).name)])])


def rerun_section(run_dir: str, checkpoints: bool = False) -> Section:
    if checkpoints:
        return Section("Re-run", [Para(f"`nmech evaluate --checkpoints {run_dir}` with the model, dataset and optimizer "
                                       "flags of this evaluation (report.json: `model`, `optimizer`, `estimation`), or "
                                       "`symmetry_engine.evaluate_checkpoints(...)` in Python.")])
    return Section("Re-run", [Code(f"nmech evaluate {run_dir}\nnmech report {run_dir}"), Para("or in Python:"),
                              Code("from symmetry_engine.numeric.evaluate import evaluate_run\n"
                                   "from analyses.report import write_report\n"
                                   f"ev = evaluate_run({run_dir!r})\nwrite_report(ev, {str(Path(run_dir) / 'report')!r})",
                                   "python")])


def run_document(ev: Any, data: Mapping[str, Any], out: Path, layers: Sequence[str] = (), channels: int = 4
                 ) -> Document:
    """The whole run report; figures are written into ``out`` as it goes."""
    evals, eval_notes = read_eval_log(ev.run_dir)
    model = data.get("model") or {}
    counts = data.get("verdicts") or {}
    n_groups = sum(int((s or {}).get("groups", 0)) for s in (data.get("summary") or {}).values())
    head = (f"{data.get('steps')} optimizer steps{'' if data.get('closed', True) else ' (run not closed)'}, "
            f"{n_groups} symmetry groups, dtype {data.get('dtype')}, device {data.get('device')}"
            + (f", model `{model.get('spec')}`" if model.get("spec") else "") + ".")
    if counts:
        head += " Verdicts: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS) + "."
    ckpt = is_checkpoint_evaluation(data)
    if ckpt:
        head += (f" Evaluated from {len((data.get('estimation') or {}).get('checkpoints') or [])} checkpoints saved "
                 "without the tracker: scale/rescale results are approximate (estimated from checkpoints).")
    doc = Document(f"{'Checkpoint evaluation' if ckpt else 'Run report'}: `{ev.run_dir}`", [Para(head)])
    for s in (verdict_section(data), warnings_section(data, eval_notes), approximate_section(data) if ckpt else None):
        if s is not None:
            doc.sections.append(s)
    doc.sections.append(config_section(data, np.asarray(ev.lrs)))
    doc.sections.append(summary_section(data))
    doc.sections += figure_sections(ev, data, out, layers, channels, evals)
    laws = laws_section(list(data.get("summary") or {}), data.get("optimizer") or {})
    if laws is not None:
        doc.sections.append(laws)
    doc.sections += [layers_section(data), checkpoint_section(data), rerun_section(str(ev.run_dir), ckpt)]
    return doc


__all__ = ["run_document", "verdict_section", "config_section", "summary_section", "laws_section", "layers_section"]
