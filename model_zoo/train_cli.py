"""Command-line front end of the training loop (``nmech train``): flags → :class:`TrainConfig` → run.

Flags left unset fall back to the preset (``--preset``), then to :class:`TrainConfig` defaults, so a
preset can be adjusted flag by flag. Every numeric flag is checked at parse time (analyses.argtypes).
Errors a user can fix (bad model spec, missing dataset, NaN loss, a locked or foreign run directory,
a full disk) print one line and return exit code 2; Ctrl-C returns 130 and SIGTERM 143, after the log
is flushed. Parsing imports no torch, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from typing import Any

from analyses.argtypes import (HelpFormatter, OneLineParser, add_threads_argument, apply_threads, int_list,
                               nonneg_float, nonneg_int, positive_float, positive_int, unit_interval,
                               unit_interval_open)

from .presets import PRESETS, preset
from .train_config import TrainConfig

DEFAULT_STEPS = 300
_D = TrainConfig()


def _kw(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = ast.literal_eval(v)
    except (ValueError, SyntaxError):
        value = v
    return k.strip(), value


def _default(value: Any) -> str:
    return f"(default: {value}, or the preset's)"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training flags to ``parser`` (defaults are None: unset flags defer to the preset, whose
    values win over the :class:`TrainConfig` defaults shown in the help)."""
    a = parser.add_argument
    a("model", nargs="?", default=None,
      help=f"model spec: zoo name, torchvision:NAME or package.module:callable {_default(_D.model)}")
    a("--preset", choices=sorted(PRESETS), metavar="NAME",
      help="named config: digits-small, digits-small-nobn, paper-vgg16[-bn]-wd…[-m…] (default: none)")
    a("--model-kw", "--model-arg", dest="model_kw", action="append", type=_kw, default=None, metavar="KEY=VALUE",
      help="model option (repeatable), e.g. width=0.125 (default: none)")
    a("--width", type=positive_float, help="width multiplier > 0 of zoo models (same as --model-kw width=W) "
                                           "(default: the model's own, or the preset's)")
    a("--input-shape", type=int_list(positive_int), metavar="C,H,W",
      help="one sample's shape (default: the dataset's)")
    a("--loss", choices=("cross_entropy", "mse"), help=f"training loss {_default(_D.loss)}")
    a("--dataset", help=f"digits (offline) | synthetic | tiny-imagenet | cifar10 | cifar100 {_default(_D.dataset)}")
    a("--data-path", help="directory of the dataset files, for tiny-imagenet and cifar (default: none)")
    a("--input-size", type=positive_int, help="image side: digits/synthetic any, tiny-imagenet 64, cifar 32 "
                                              "(default: the dataset's, or the preset's)")
    a("--batch-size", type=positive_int, help=f"minibatch size ≥ 1 {_default(_D.batch_size)}")
    a("--steps", type=positive_int, help=f"optimizer steps ≥ 1, wins over --epochs {_default(DEFAULT_STEPS)}")
    a("--epochs", type=positive_float, help="epochs > 0, used when --steps is not given (default: none)")
    a("--lr", type=positive_float, help=f"learning rate η > 0 {_default(_D.lr)}")
    a("--momentum", type=unit_interval_open, help=f"heavy-ball momentum β in [0, 1) {_default(_D.momentum)}")
    a("--dampening", type=unit_interval, help=f"momentum dampening in [0, 1] {_default(_D.dampening)}")
    a("--nesterov", action="store_true", default=None, help="Nesterov momentum (default: off, or the preset's)")
    a("--weight-decay", type=nonneg_float, help=f"coupled weight decay λ ≥ 0 {_default(_D.weight_decay)}")
    a("--schedule", choices=("constant", "step", "cosine"), help=f"learning-rate schedule {_default(_D.schedule)}")
    a("--lr-milestones", type=int_list(nonneg_int), metavar="S1,S2,…",
      help="steps where the step schedule multiplies η by --lr-gamma (default: none)")
    a("--lr-gamma", type=positive_float, help=f"factor > 0 of the step schedule {_default(_D.lr_gamma)}")
    a("--warmup-steps", type=nonneg_int, help=f"linear warmup length ≥ 0, any schedule {_default(_D.warmup_steps)}")
    a("--seed", type=nonneg_int, help=f"seed ≥ 0 of weights and batch order {_default(_D.seed)}")
    a("--deterministic", action="store_true", default=None,
      help="deterministic kernels: bit-exact resume (default: off, or the preset's)")
    a("--dtype", choices=("float32", "float64"), help=f"parameter dtype {_default(_D.dtype)}")
    a("--device", help=f"auto | cpu | cuda[:N] {_default(_D.device)}")
    a("--checkpoint-every", type=positive_int, metavar="N", help="a checkpoint every N ≥ 1 steps (default: none; "
                                                                  "the final step is always saved)")
    a("--checkpoint-steps", type=int_list(nonneg_int), metavar="S1,S2,…", help="checkpoints at these steps "
                                                                               "(default: none)")
    a("--checkpoint-log", type=positive_int, metavar="COUNT", help="COUNT ≥ 1 log-spaced checkpoints (default: "
                                                                    "none, or the preset's)")
    a("--out", help="run directory; re-running with the same --out resumes (default: runs/<preset or model>)")
    a("--overwrite", action="store_true", help="replace what --out holds (its logs, checkpoints and report) instead "
                                               "of refusing when it holds a run this command cannot resume")
    a("--no-track", dest="track", action="store_false", default=None,
      help="train without the symmetry tracker (default: tracked)")
    a("--no-progress", dest="progress", action="store_false", default=None,
      help="no progress bar (default: a bar on stderr)")
    a("--num-workers", type=nonneg_int, help=f"data-loader worker processes ≥ 0 {_default(_D.num_workers)}")
    a("--flush-every", type=positive_int, help=f"write the tracker's records every N ≥ 1 steps; a kill loses at "
                                               f"most N {_default(_D.flush_every)}")
    a("--tensorboard", metavar="DIR", help="write live TensorBoard scalars (per layer: quantity, laws, errors, "
                                           "breaking; loss, lr) into DIR while training (needs the tensorboard extra)")
    add_threads_argument(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = preset(args.preset) if getattr(args, "preset", None) else {}
    for name in fields - {"model_kwargs", "width"}:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    if getattr(args, "model_kw", None):
        values["model_kwargs"] = {**values.get("model_kwargs", {}), **dict(args.model_kw)}
    if getattr(args, "width", None) is not None:
        values["model_kwargs"] = {**values.get("model_kwargs", {}), "width": args.width}
    if "out" not in values:
        values["out"] = f"runs/{args.preset or values.get('model', 'train')}"
    if values.get("steps") is None and values.get("epochs") is None:
        values["steps"] = DEFAULT_STEPS
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    """Train as the parsed flags say; print a one-line summary (or a one-line error); return the exit code."""
    from symmetry_engine.numeric.runfile import RunLogError
    from symmetry_engine.numeric.runlock import Terminated

    from .datasets import DatasetError
    from .specs import SpecError
    from .train_files import list_checkpoints
    from .training import TrainingError, train

    cfg = None
    try:
        cfg = config_from_args(args)
        res = train(cfg, overwrite=bool(getattr(args, "overwrite", False)))
    except (SpecError, DatasetError, TrainingError, RunLogError, KeyError, ImportError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nmech train: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        term = isinstance(exc, Terminated)
        done = list_checkpoints(cfg.out) if cfg is not None else []
        print(f"nmech train: interrupted by {'SIGTERM' if term else 'Ctrl-C (SIGINT)'}; the log is flushed and the "
              f"same command resumes from step {done[-1] if done else 0}", file=sys.stderr)
        return 143 if term else 130
    acc = "n/a" if res.test_accuracy is None else f"{res.test_accuracy:.3f}"
    what = "already complete" if res.resumed_from >= res.steps else f"steps {res.resumed_from}→{res.steps}"
    print(f"{res.out_dir}: {what}, final loss {res.final_loss:.4f}, test accuracy {acc}, "
          f"{len(res.checkpoints)} checkpoints, {res.seconds:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="nmech train", description="train a model with the symmetry tracker on",
                           formatter_class=HelpFormatter)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    return run_train(args)


if __name__ == "__main__":
    raise SystemExit(main())
