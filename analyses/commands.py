"""Implementations of ``nmech evaluate``, ``report``, ``train`` and ``demo`` (the parser lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _natural(text: str) -> list:
    """Sort key that puts features.3 before features.10."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _e(x) -> str:
    return "      —" if x is None or x != x else f"{x:.2e}"


def format_evaluation(ev) -> str:
    """The text a person reads after a run: verdicts, per kind, per layer, what is broken and why."""
    opt, th = ev.optimizer, ev.thresholds
    rule = "Adam" if opt.get("rule") == "adam" else str(opt.get("optimizer_class") or opt.get("rule", "?"))
    ckpt = getattr(ev, "source", "run") == "checkpoints"
    what = (f"checkpoints {ev.run_dir}: {len(ev.steps)} checkpoints, steps {int(ev.steps[0])}..{int(ev.steps[-1])} "
            f"({ev.T} optimizer steps)" if ckpt else f"run {ev.run_dir}: {ev.T} steps")
    lines = [f"{what}, dtype {ev.meta.get('dtype')}, {rule}, {len(ev.classes)} member class(es)"]
    for c in ev.classes:
        lr, mom = c["lr"], c["momentum"]
        span = lambda d: f"{d['first']:.3g}" if d["min"] == d["max"] else f"{d['min']:.3g}…{d['max']:.3g}"  # noqa: E731
        lines.append(f"  class {c['id']}: {c['label']}; lr {span(lr)}, momentum {span(mom)}, "
                     f"dampening {span(c['dampening'])}, weight decay {span(c['weight_decay'])}"
                     + (", Nesterov" if c["nesterov"] else "") + (", decoupled decay" if c["decoupled_weight_decay"] else "")
                     + f"; {len(c['params'])} parameter(s)")
    v = ev.verdicts
    lines.append(f"verdicts: holds {v['holds']}, approximate {v['approximate']}, broken {v['broken']}, "
                 f"degenerate {v['degenerate']}   (thresholds for {th.dtype}: law ≤ {th.law_holds:.1e}, "
                 f"breaking at round-off ≤ {th.breaking_roundoff:.1e}, ε-explained ≤ {th.breaking_eps_factor:g}·ε)")
    causes: dict[str, int] = {}
    for g in ev.groups:
        if g.verdict in ("approximate", "broken") and g.cause:
            causes[f"{g.verdict}: {g.cause}"] = causes.get(f"{g.verdict}: {g.cause}", 0) + 1
    for why, n in sorted(causes.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n} {why}")
    if ckpt:
        lines += ["relative error = max over checkpoints |measured − predicted| / max over checkpoints of the group's size;",
                  "exact = law = the symmetry's law forecast from the first checkpoint (translation: exact, no data); "
                  "APPROX = scale/rescale laws fed statistics estimated at the checkpoints (approximate); "
                  "breaking = max |<g, xi>| / (|g| |xi|) on sampled batches"]
    else:
        lines += ["relative error = max over steps |measured − predicted| / max over steps of the group's size;",
                  "exact = the recurrence with the recorded breaking (checks tracker + optimizer description); "
                  "law = the symmetry's prediction; breaking = max |<g, xi>| / (|g| |xi|)"]
    lines.append(f"{'kind':<12} {'groups':>6} {'degen.':>6} {'exact max':>10} {'law max':>10} {'law med':>10} "
                 f"{'contin. max':>11} {'breaking':>10} {'opt. brk':>10}"
                 + (f" {'APPROX max':>10} {'APPROX med':>10}" if ckpt else ""))
    for kind, s in ev.summary.items():
        approx = s.get("approx", {"max": None, "median": None})
        lines.append(f"{kind:<12} {s['groups']:>6} {s['verdicts']['degenerate']:>6} {_e(s['exact']['max']):>10} "
                     f"{_e(s['law']['max']):>10} {_e(s['law']['median']):>10} {_e(s['continuous']['max']):>11} "
                     f"{_e(s['breaking']['max']):>10} {_e(s['optimizer_breaking']['max']):>10}"
                     + (f" {_e(approx['max']):>10} {_e(approx['median']):>10}" if ckpt else ""))
    if v["degenerate"]:
        from symmetry_engine.numeric.evaluate import DEGENERATE_NOTE

        lines.append(DEGENERATE_NOTE)
    lines.append("")
    lines.append(f"{'kind':<12} {'layer':<28} {'groups':>6} {'hold':>5} {'appr':>5} {'brok':>5} {'degn':>5} "
                 f"{'law max':>10} {'contin. max':>11}" + (f" {'APPROX max':>10}" if ckpt else ""))
    for row in sorted(ev.layers, key=lambda r: (r["kind"], _natural(r["layer"]))):
        vv = row["verdicts"]
        lines.append(f"{row['kind']:<12} {row['layer']:<28} {row['groups']:>6} {vv['holds']:>5} {vv['approximate']:>5} "
                     f"{vv['broken']:>5} {vv['degenerate']:>5} {_e(row['law']['max']):>10} {_e(row['continuous']['max']):>11}"
                     + (f" {_e(row.get('approx', {}).get('max')):>10}" if ckpt else ""))
    broken = [g for g in ev.groups if g.verdict == "broken"]
    if broken:
        lines.append("")
        lines.append(f"broken ({len(broken)}): " + ("the measured breaking, or a law failing between checkpoints, says "
                                                   "this run has no such symmetry or the flags are not the training's"
                                                   if ckpt else "the measured breaking says this run has no such symmetry"))
        for g in broken[:10]:
            lines.append(f"  {g.key}: breaking {_e(g.breaking)}, law error {_e(g.err_law)} ({g.cause})")
        if len(broken) > 10:
            lines.append(f"  … and {len(broken) - 10} more (--json lists every group)")
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
    from analyses.checkpoint_args import check_mode, evaluate_from_args

    check_mode(args)
    if args.checkpoints:
        from analyses.cli import cached_analysis

        ev = evaluate_from_args(args, lambda a: cached_analysis(a, certify=False))
    else:
        from symmetry_engine.numeric.evaluate import evaluate_run

        ev = evaluate_run(args.run_dir, checkpoints=not args.no_checkpoints)
    if args.json:
        json.dump(ev.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_evaluation(ev))
    if getattr(args, "report", None):
        from analyses.report import write_report

        path = write_report(ev, args.report)
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    if getattr(args, "strict", False) and ev.verdicts["broken"]:
        print(f"nmech evaluate: {ev.verdicts['broken']} group(s) broken (--strict)", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analyses.report_cli import cmd_report as run

    return run(args)


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
        with _report_lock(result.out_dir, result.out_dir / "report"):
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
