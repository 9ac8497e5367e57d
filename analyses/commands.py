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
    from analyses.report_cli import cmd_report as run

    return run(args)


def cmd_train(args: argparse.Namespace) -> int:
    from model_zoo.train_cli import run_train

    return int(run_train(args) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train VGG-16 with and without BN on digits, evaluate both against theory, write one report."""
    from analyses.demo_report import DemoRun, demo_document
    from analyses.report import evaluation_json, write_document, write_report
    from model_zoo.presets import preset
    from model_zoo.training import TrainConfig, train
    from symmetry_engine.numeric.evaluate import evaluate_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, title in (("digits-small", "VGG-16 with batch norm"), ("digits-small-nobn", "VGG-16 without batch norm")):
        fields = preset(name)
        fields["model_kwargs"]["width"] = args.width
        if args.steps is not None:
            fields["steps"] = args.steps
        cfg = TrainConfig(**fields, out=str(out / name))
        print(f"== {title}: {cfg.model} width {args.width}, {cfg.steps} steps, lr {cfg.lr}, momentum {cfg.momentum}, "
              f"weight decay {cfg.weight_decay} ==", flush=True)
        result = train(cfg)
        ev = evaluate_run(result.out_dir)
        report = write_report(ev, result.out_dir / "report")
        print(format_evaluation(ev), flush=True)
        runs.append(DemoRun(title, result.out_dir, report, evaluation_json(ev), result.test_accuracy))
    md = write_document(demo_document(runs, out), out, {"format": "nmech-demo-report/1",
                                                        "runs": [{"title": r.title, "run_dir": str(r.run_dir),
                                                                  "report": str(r.report)} for r in runs]})
    print(f"report: {md}")
    print(f"html report: {md.with_suffix('.html')}")
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
