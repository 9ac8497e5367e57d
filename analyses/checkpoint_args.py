"""``nmech evaluate --checkpoints DIR``: the options, their checks, and the call they make.

Why apart from cli.py: checkpoint-only evaluation needs a model spec, a dataset and the optimizer's
description on top of ``evaluate``'s run options; keeping them here leaves cli.py the parser's shape.
The validators refuse what ``torch.optim.SGD`` would refuse or the laws do not describe (η ≤ 0 or not
finite, β ∉ [0, 1), d ∉ [0, 1], λ < 0, Nesterov without momentum or with dampening) in one line.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .argtypes import int_list, nonneg_float, nonneg_int, positive_float, positive_int, unit_interval, unit_interval_open

CHECKPOINT_ONLY = ("model", "dataset", "lr")


def add_checkpoint_arguments(p: argparse.ArgumentParser, parse_shape: Callable, parse_model_arg: Callable) -> None:
    """The ``--checkpoints`` options of ``nmech evaluate`` (``parse_*`` are cli.py's shared parsers)."""
    g = p.add_argument_group("checkpoints saved without the tracker (instead of RUN_DIR)")
    a = g.add_argument
    a("--checkpoints", metavar="DIR", help="directory of checkpoint files (.pt/.pth/.ckpt/.bin/.tar)")
    a("--model", metavar="SPEC", help="the trained model: zoo name, torchvision:NAME or package.module:callable")
    a("--width", type=positive_float, help="width multiplier of zoo models")
    a("--model-kw", "--model-arg", dest="model_arg", type=parse_model_arg, action="append", default=[],
      metavar="KEY=VALUE", help="extra keyword for the zoo builder (JSON values), repeatable")
    a("--input-shape", type=parse_shape, metavar="C,H,W", help="one sample's shape (default: the dataset's)")
    a("--num-classes", type=positive_int, help="classes of the head (default: the dataset's)")
    a("--loss", choices=("cross_entropy", "mse"), default="cross_entropy", help="the training loss")
    a("--dataset", metavar="NAME", help="the training data: digits, synthetic, tiny-imagenet, cifar10, cifar100")
    a("--data-dir", "--data-path", dest="data_dir", metavar="PATH", help="where the dataset's files are")
    a("--input-size", type=positive_int, help="image side of the dataset (as trained)")
    a("--batch-size", type=positive_int, default=64, help="the training batch size (default 64)")
    a("--batches", type=positive_int, default=16,
      help="replica steps (sampled minibatches) per checkpoint for the scale/rescale statistics (default 16)")
    a("--seed", type=nonneg_int, default=0, help="seed of the sampled minibatches")
    a("--lr", type=positive_float, help="learning rate (the schedule's peak)")
    a("--momentum", type=unit_interval_open, default=0.0, help="SGD momentum β of the training, in [0, 1)")
    a("--dampening", type=unit_interval, default=0.0, help="SGD dampening d of the training, in [0, 1]")
    a("--nesterov", action="store_true", help="the training used Nesterov momentum")
    a("--weight-decay", type=nonneg_float, default=0.0, help="SGD (coupled) weight decay λ of the training")
    a("--schedule", choices=("constant", "step", "cosine"), default="constant",
      help="the lr schedule the training used (as nmech train's)")
    a("--lr-milestones", type=int_list(nonneg_int), default=(), metavar="S1,S2,…", help="steps where --schedule step multiplies")
    a("--lr-gamma", type=positive_float, default=0.1, help="factor of --schedule step at each milestone")
    a("--warmup-steps", type=nonneg_int, default=0, help="linear warmup length (any schedule)")
    a("--total-steps", type=positive_int, help="the training's length (needed by --schedule cosine)")
    a("--dtype", choices=("float32", "float64", "bfloat16", "float16"),
      help="dtype of the training, for the round-off thresholds (default: the checkpoints')")
    a("--device", default="cpu", help="where gradients are recomputed (cpu, cuda, cuda:N)")
    a("--report", metavar="DIR", help="also write report.md, report.json and figures into DIR")


def check_mode(args: argparse.Namespace) -> None:
    """RUN_DIR or --checkpoints, with what each needs; raises ValueError in one line."""
    if args.checkpoints and args.run_dir:
        raise ValueError("give either RUN_DIR or --checkpoints DIR, not both")
    if not args.checkpoints:
        if not args.run_dir:
            raise ValueError("nothing to evaluate: give RUN_DIR (a tracked run) or --checkpoints DIR")
        given = [f"--{k.replace('_', '-')}" for k in CHECKPOINT_ONLY if getattr(args, k, None) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --checkpoints DIR")
        return
    missing = [f"--{k.replace('_', '-')}" for k in CHECKPOINT_ONLY if getattr(args, k, None) is None]
    if missing:
        raise ValueError(f"--checkpoints needs {', '.join(missing)} (the model, its training data and optimizer)")
    if args.nesterov and (args.momentum <= 0 or args.dampening != 0):
        raise ValueError("--nesterov needs --momentum > 0 and --dampening 0")
    if args.schedule == "cosine" and args.total_steps is None:
        raise ValueError("--schedule cosine needs --total-steps (the training's length, which the cosine spans)")
    if args.no_checkpoints:
        raise ValueError("--no-checkpoints applies to a RUN_DIR only")


def lr_schedule(args: argparse.Namespace) -> Callable[[int], float]:
    """The learning rate of every optimizer step, with ``nmech train``'s schedules (model_zoo.training.lr_at)."""
    from model_zoo.training import TrainConfig, lr_at

    cfg = TrainConfig(lr=args.lr, schedule=args.schedule, lr_milestones=tuple(args.lr_milestones),
                      lr_gamma=args.lr_gamma, warmup_steps=args.warmup_steps)
    total = int(args.total_steps or 0)
    return lambda step: lr_at(cfg, int(step), total)


def evaluate_from_args(args: argparse.Namespace, analysis: Callable[[argparse.Namespace], dict[str, Any]]):
    """Build the model and data the flags name and evaluate the checkpoints (``analysis`` gives the
    symmetries as ``nmech analyze --json`` does, from its cache when it can)."""
    from model_zoo import build_model
    from model_zoo.datasets import load_dataset
    from symmetry_engine.numeric.checkpoint_eval import evaluate_checkpoints
    from symmetry_engine.symmetry import symmetries_from_json

    data = load_dataset(args.dataset, args.data_dir, args.input_size)
    kwargs = dict(args.model_arg)
    if args.width is not None:
        kwargs["width"] = args.width
    args.num_classes = args.num_classes or data.num_classes
    args.input_shape = tuple(args.input_shape or data.input_shape)
    model, info = build_model(args.model, num_classes=args.num_classes, input_shape=args.input_shape, **kwargs)
    symmetries = symmetries_from_json(analysis(args)["symmetries"])
    return evaluate_checkpoints(args.checkpoints, model, data.train, lr=lr_schedule(args), momentum=args.momentum,
                                dampening=args.dampening, nesterov=args.nesterov, weight_decay=args.weight_decay,
                                loss=args.loss, batch_size=args.batch_size, batches=args.batches, seed=args.seed,
                                symmetries=symmetries, dtype=args.dtype, device=args.device,
                                model_info={**info.to_json(), "loss": args.loss, "dataset": args.dataset})
