"""Command-line front end of the training loop (``nmech train``): flags → :class:`TrainConfig` → run.

Flags left unset fall back to the preset (``--preset``), then to :class:`TrainConfig` defaults, so a
preset can be adjusted flag by flag. Errors a user can fix (bad model spec, missing dataset, NaN loss)
print one line and return a non-zero exit code.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from typing import Any

from .datasets import DatasetError
from .presets import PRESETS, preset
from .specs import SpecError
from .training import TrainConfig, TrainingError, train


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace(",", " ").split())


def _kw(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = ast.literal_eval(v)
    except (ValueError, SyntaxError):
        value = v
    return k.strip(), value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training flags to ``parser`` (defaults are None: unset flags defer to the preset)."""
    a = parser.add_argument
    a("model", nargs="?", default=None, help="model spec: zoo name, torchvision:NAME or package.module:callable")
    a("--preset", choices=sorted(PRESETS), metavar="NAME", help="named config: digits-small, paper-vgg16[-bn]-wd…")
    a("--model-kw", "--model-arg", dest="model_kw", action="append", type=_kw, default=None, metavar="KEY=VALUE",
      help="model option (repeatable), e.g. width=0.125")
    a("--width", type=float, help="width multiplier of zoo models (same as --model-kw width=W)")
    a("--input-shape", type=_ints, help="one sample's shape C,H,W (default: the dataset's)")
    a("--loss", choices=("cross_entropy", "mse"))
    a("--dataset", help="digits (default, offline) | synthetic | tiny-imagenet | cifar10 | cifar100")
    a("--data-path", help="directory of the dataset files (tiny-imagenet, cifar)")
    a("--input-size", type=int, help="image side (digits/synthetic: any; tiny-imagenet 64; cifar 32)")
    a("--batch-size", type=int)
    a("--steps", type=int, help="optimizer steps (wins over --epochs)")
    a("--epochs", type=float)
    a("--lr", type=float)
    a("--momentum", type=float)
    a("--dampening", type=float)
    a("--nesterov", action="store_true", default=None)
    a("--weight-decay", type=float)
    a("--schedule", choices=("constant", "step", "cosine"))
    a("--lr-milestones", type=_ints, help="steps where the step schedule multiplies by --lr-gamma")
    a("--lr-gamma", type=float)
    a("--warmup-steps", type=int, help="linear warmup length (any schedule)")
    a("--seed", type=int)
    a("--deterministic", action="store_true", default=None, help="deterministic kernels (bit-exact resume)")
    a("--dtype", choices=("float32", "float64"))
    a("--device", help="auto (default) | cpu | cuda[:N]")
    a("--checkpoint-every", type=int, metavar="N")
    a("--checkpoint-steps", type=_ints, metavar="S1,S2,…")
    a("--checkpoint-log", type=int, metavar="COUNT", help="COUNT log-spaced checkpoints")
    a("--out", help="run directory (re-running with the same --out resumes)")
    a("--no-track", dest="track", action="store_false", default=None, help="train without the symmetry tracker")
    a("--no-progress", dest="progress", action="store_false", default=None)
    a("--num-workers", type=int)
    a("--flush-every", type=int)


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
        values["steps"] = 300
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    """Train as the parsed flags say; print a one-line summary (or a one-line error); return the exit code."""
    try:
        cfg = config_from_args(args)
        res = train(cfg)
    except (SpecError, DatasetError, TrainingError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nmech train: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    acc = "n/a" if res.test_accuracy is None else f"{res.test_accuracy:.3f}"
    what = "already complete" if res.resumed_from >= res.steps else f"steps {res.resumed_from}→{res.steps}"
    print(f"{res.out_dir}: {what}, final loss {res.final_loss:.4f}, test accuracy {acc}, "
          f"{len(res.checkpoints)} checkpoints, {res.seconds:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nmech train", description="train a model with the symmetry tracker on")
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
