"""``nmech report``: one run, several runs side by side, or a model without a run.

``nmech report RUN`` evaluates the run and writes RUN/report/ (report.md, report.html, report.json,
figures); ``nmech report RUN1 RUN2 ...`` compares runs (a sweep); ``nmech report MODEL_SPEC`` analyses a
model and reports its symmetries and laws under the optimizer given by ``--lr``, ``--momentum``, ...
A target that is an existing directory is a run; anything else is read as a model spec.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from .argtypes import positive_float, positive_int


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import _parse_model_arg, _parse_shape, add_optimizer_arguments

    p.add_argument("targets", metavar="RUN_DIR|MODEL", nargs="+",
                   help="a run directory; several run directories (a sweep); or a model spec (no run)")
    p.add_argument("--out", default=None, help="report directory (default RUN_DIR/report; for a sweep the runs' "
                                                "parent/sweep_report; for a model runs/report-MODEL)")
    p.add_argument("--layer", action="append", default=[], metavar="NAME",
                   help="layer Figure 5 (and the sweep figure) shows, per kind that has groups there; repeatable")
    p.add_argument("--channels", type=positive_int, default=4, help="groups per Figure-5 panel (default 4)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write the run's per-layer quantities, laws and errors per step as TensorBoard scalars")
    g = p.add_argument_group("model reports (MODEL instead of a run)")
    g.add_argument("--input-shape", type=_parse_shape, default=None, metavar="C,H,W",
                   help="one sample, no batch axis; default: the model's own")
    g.add_argument("--loss", choices=("cross_entropy", "mse"), default="cross_entropy", help="the training loss")
    g.add_argument("--num-classes", type=positive_int, default=10, help="classes of zoo models' heads")
    g.add_argument("--width", type=positive_float, default=None, help="width multiplier for zoo models")
    g.add_argument("--model-kw", "--model-arg", dest="model_arg", type=_parse_model_arg, action="append", default=[],
                   metavar="KEY=VALUE", help="extra keyword for the zoo builder (JSON values), repeatable")
    g.add_argument("--no-cache", action="store_true", help="ignore the on-disk analysis cache")
    add_optimizer_arguments(g)


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "run.json").is_file()


def classify(targets: list[str]) -> str:
    """``"run"``, ``"sweep"`` or ``"model"``; raises ``CliError`` with one line for anything else."""
    from .cli import CliError

    paths = [Path(t) for t in targets]
    if len(targets) > 1:
        bad = [t for t, p in zip(targets, paths) if not _is_run(p)]
        if bad:
            raise CliError(f"{bad[0]} is not a run directory (no run.json); a sweep report takes run directories only")
        return "sweep"
    p = paths[0]
    if p.is_dir():
        if not _is_run(p):
            raise CliError(f"{targets[0]} is a directory without run.json: not a run directory")
        return "run"
    if p.exists() or ("/" in targets[0] and ":" not in targets[0]):
        raise CliError(f"{targets[0]}: no such run directory (a model spec is a zoo name, torchvision:NAME or "
                       "package.module:callable)")
    return "model"


def cmd_report(args: argparse.Namespace) -> int:
    from .cli import CliError

    if args.channels < 1:
        raise CliError("--channels must be at least 1")
    what = classify(args.targets)
    if args.tensorboard and what != "run":
        raise CliError("--tensorboard writes one run's scalars; name a single run directory")
    if what == "model":
        path = _model_report(args)
    else:
        from symmetry_engine.numeric.evaluate import evaluate_run

        evs = [evaluate_run(t) for t in args.targets]
        if what == "run":
            from .commands import _report_lock, format_evaluation
            from .report import write_report

            out = Path(args.out or Path(args.targets[0]) / "report")
            with _report_lock(args.targets[0], out):
                path = write_report(evs[0], out, args.layer, args.channels)
            print(format_evaluation(evs[0]))
            if args.tensorboard:
                from .tensorboard_log import write_evaluation

                n = write_evaluation(evs[0], args.tensorboard)
                print(f"tensorboard: {n} scalars in {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
        else:
            from .report import write_sweep_report

            out = args.out or Path(args.targets[0]).resolve().parent / "sweep_report"
            path = write_sweep_report(evs, out, args.layer)
    print(f"report: {path}")
    print(f"html report: {path.with_suffix('.html')}")
    return 0


def _model_report(args: argparse.Namespace) -> Path:
    from .cli import _optimizer_config, cached_analysis
    from .report import write_architecture_report

    ns = argparse.Namespace(**vars(args))
    ns.model = args.targets[0]
    analysis = cached_analysis(ns, certify=False)
    opt = _optimizer_config(args)
    opt.rule_spec()  # refuses an impossible optimizer (e.g. Nesterov without momentum) in one line
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ns.model).strip("_")
    return write_architecture_report(analysis, opt.to_json(), args.out or Path("runs") / f"report-{safe}")


__all__ = ["add_report_arguments", "cmd_report", "classify"]
