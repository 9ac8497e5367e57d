"""Implementations of ``nmech evaluate``, ``report``, ``train`` and ``demo`` (the parser lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def format_evaluation(ev) -> str:
    """The text a person reads after a run: per kind, then per layer, max/median relative errors."""
    opt = ev.optimizer
    rule = str(opt.get("rule", "?")).upper() if opt.get("rule") != "adam" else "Adam"
    decay = "decoupled weight_decay" if opt.get("decoupled_weight_decay") else "weight_decay"
    lines = [f"run {ev.run_dir}: {ev.T} steps, dtype {ev.meta.get('dtype')}, "
             f"{rule} lr={opt.get('lr')} momentum={opt.get('momentum')} dampening={opt.get('dampening')} "
             f"nesterov={opt.get('nesterov')} {decay}={opt.get('weight_decay')}",
             "relative error = max over steps |measured − predicted| / max over steps of the group's size",
             "breaking = drift the symmetry forbids (from the recorded <g, xi>), on the same scale",
             f"{'kind':<12} {'groups':>7} {'exact max':>11} {'exact med':>11} {'contin. max':>12} {'contin. med':>12}"
             f" {'breaking max':>13}"]
    for kind, s in ev.summary.items():
        lines.append(f"{kind:<12} {s['groups']:>7} {s['exact']['max']:>11.2e} {s['exact']['median']:>11.2e} "
                     f"{s['continuous']['max']:>12.2e} {s['continuous']['median']:>12.2e} {s['breaking']['max']:>13.2e}")
    lines.append("")
    lines.append(f"{'kind':<12} {'layer':<28} {'groups':>7} {'exact max':>11} {'contin. max':>12}")
    for row in sorted(ev.layers, key=lambda r: (r["kind"], [int(t) if t.isdigit() else t for t in r["layer"].split(".")])):
        lines.append(f"{row['kind']:<12} {row['layer']:<28} {row['groups']:>7} {row['exact']['max']:>11.2e} "
                     f"{row['continuous']['max']:>12.2e}")
    for c in ev.checkpoints:
        worst = max(c.errors.values(), default=float("nan"))
        lines.append(f"checkpoint {Path(c.path).name} (step {c.step}): max relative difference from the log {worst:.1e}"
                     + (f" — {c.note}" if c.note else ""))
    for key, msg in ev.prediction_errors.items():
        lines.append(f"no prediction for {key}: {msg}")
    for w in ev.warnings:
        lines.append("warning: " + w)
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from symmetry_engine.numeric.evaluate import evaluate_run

    ev = evaluate_run(args.run_dir, checkpoints=not args.no_checkpoints)
    if args.json:
        json.dump(ev.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_evaluation(ev))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analyses.report import write_report
    from symmetry_engine.numeric.evaluate import evaluate_run

    out = Path(args.out or Path(args.run_dir) / "report")
    with _report_lock(args.run_dir, out):
        ev = evaluate_run(args.run_dir)
        path = write_report(ev, out)
    print(format_evaluation(ev))
    print(f"report: {path}")
    return 0


def _report_lock(run_dir, out: Path):
    """The run directory's write lock while a report is written into it (a trainer writing the same run
    makes this refuse in one line); a report written elsewhere only reads the run and takes no lock."""
    import contextlib

    from symmetry_engine.numeric.runlock import RunLock

    run_dir = Path(run_dir)
    inside = run_dir.is_dir() and out.resolve().is_relative_to(run_dir.resolve())
    return RunLock(run_dir, "nmech report") if inside else contextlib.nullcontext()


def cmd_train(args: argparse.Namespace) -> int:
    from model_zoo.train_cli import run_train

    return int(run_train(args) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train VGG-16 with and without BN on digits, evaluate both against theory, write one report."""
    from analyses.report import write_report
    from model_zoo.presets import preset
    from model_zoo.training import TrainConfig, train
    from symmetry_engine.numeric.evaluate import evaluate_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, sections = [], []
    for name, title in (("digits-small", "VGG-16 with batch norm"), ("digits-small-nobn", "VGG-16 without batch norm")):
        fields = preset(name)
        fields["model_kwargs"]["width"] = args.width
        if args.steps is not None:
            fields["steps"] = args.steps
        cfg = TrainConfig(**fields, out=str(out / name))
        print(f"== {title}: {cfg.model} width {args.width}, {cfg.steps} steps, lr {cfg.lr}, momentum {cfg.momentum}, "
              f"weight decay {cfg.weight_decay} ==", flush=True)
        result = train(cfg)
        with _report_lock(result.out_dir, result.out_dir / "report"):
            ev = evaluate_run(result.out_dir)
            report = write_report(ev, result.out_dir / "report")
        print(format_evaluation(ev), flush=True)
        for kind, s in ev.summary.items():
            rows.append(f"| {title} | {kind} | {s['groups']} | {s['exact']['max']:.2e} | {s['continuous']['max']:.2e} "
                        f"| {s['breaking']['max']:.2e} |")
        acc = "n/a" if result.test_accuracy is None else f"{result.test_accuracy:.3f}"
        sections.append(f"## {title}\n\nRun `{result.out_dir}`; test accuracy {acc}; "
                        f"[full report]({report.relative_to(out)})\n\n"
                        f"![conservation laws]({(report.parent / 'conservation.png').relative_to(out)})\n")
    md = out / "report.md"
    md.write_text("\n".join([
        "# neural-mechanics demo: VGG-16 on digits, measured against theory", "",
        "Each symmetry group's conserved quantity (column sums, squared channel norms, differences of squared norms)",
        "is measured every step and compared with the exact discrete law of PyTorch's SGD (forecast from step 0)",
        "and with the paper's continuous law. Errors: max over steps, relative to the group's size.", "",
        "| run | kind | groups | exact law, max rel. error | continuous law, max rel. error | symmetry breaking, max |",
        "|---|---|---|---|---|---|", *rows, "",
        "*Symmetry breaking* is the drift the symmetry forbids, measured from the recorded ⟨ĝ, ξ⟩ (BN's ε, float32 "
        "round-off) on the same scale. The exact law includes it. The continuous law assumes it is zero, so where "
        "breaking is as large as the continuous error (the zero-initialised biases before BN, whose quantity is "
        "round-off), that error is the symmetry breaking showing, not the paper's modelling.", "", *sections, "Re-run: `make demo` (or `nmech demo --out DIR --steps N --width W`).", ""]))
    print(f"report: {md}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """The paper's Figure 3 (conserved-quantity geometries) and Figure 4 (GD and heavy ball against
    gradient flow and the modified dynamics), with Figure 4's measured distances printed."""
    from analyses.paper_figures import figure3, figure4

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"figure 3: {figure3(out / 'figure3_geometries.png')}")
    figure4(out / "figure4_modified_dynamics.png")  # prints the mean distances it measured
    print(f"figure 4: {out / 'figure4_modified_dynamics.png'}")
    return 0
