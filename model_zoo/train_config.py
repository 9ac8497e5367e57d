"""What defines a training run: :class:`TrainConfig`, its learning-rate schedule and checkpoint policy.

Kept apart from the loop (training.py) and free of torch so that ``nmech train --help`` and parse-time
checks answer at once; :func:`check_config` refuses values outside their domain before any set-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from analyses.argtypes import check_value


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, inconsistent resume); the message is one line."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``steps`` wins over ``epochs``; one of them must be set.

    Checkpoint policy: ``checkpoint_every`` N steps, an explicit ``checkpoint_steps`` list, and/or
    ``checkpoint_log`` log-spaced steps; the final step is always checkpointed.
    """

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    loss: str = "cross_entropy"
    dataset: str = "digits"
    data_path: str | None = None
    input_size: int | None = None
    batch_size: int = 64
    steps: int | None = None
    epochs: float | None = None
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | step | cosine (each with optional linear warmup)
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    seed: int = 0
    deterministic: bool = False
    dtype: str = "float32"
    device: str = "auto"
    checkpoint_every: int | None = None
    checkpoint_steps: tuple[int, ...] = ()
    checkpoint_log: int | None = None
    out: str = "runs/train"
    track: bool = True
    eval_each_epoch: bool = True
    progress: bool = True
    num_workers: int = 0
    flush_every: int = 50
    tensorboard: str | None = None   # live TensorBoard scalars into this directory (the tracker's, optional extra)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("input_shape", "lr_milestones", "checkpoint_steps"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


#: the fields that fix a run's trajectory; a resumed run must agree on them (steps/epochs may grow)
TRAJECTORY_FIELDS = ("model", "model_kwargs", "input_shape", "loss", "dataset", "input_size", "batch_size", "lr",
                     "momentum", "dampening", "nesterov", "weight_decay", "schedule", "lr_milestones", "lr_gamma",
                     "warmup_steps", "seed", "dtype")

# field → domain (analyses.argtypes.DOMAINS); None values mean "not set" and are not checked
_DOMAINS = {"batch_size": "positive", "steps": "positive", "epochs": "positive", "lr": "positive",
            "momentum": "unit_open", "dampening": "unit_closed", "weight_decay": "nonneg", "lr_gamma": "positive",
            "warmup_steps": "nonneg", "seed": "nonneg", "checkpoint_every": "positive", "checkpoint_log": "positive",
            "num_workers": "nonneg", "flush_every": "positive", "input_size": "positive"}
_INTEGERS = {"batch_size", "steps", "warmup_steps", "seed", "checkpoint_every", "checkpoint_log", "num_workers",
             "flush_every", "input_size"}
_CHOICES = {"loss": ("cross_entropy", "mse"), "schedule": ("constant", "step", "cosine"),
            "dtype": ("float32", "float64")}


def check_config(cfg: TrainConfig) -> None:
    """Refuse, in one line, a configuration with a value outside its domain (η ≤ 0 or not finite,
    β ∉ [0, 1), dampening ∉ [0, 1], λ < 0, counts < 1, ...), before anything is set up or written."""
    problems = []
    for name, domain in _DOMAINS.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        if name in _INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name} must be an integer, got {value!r}")
            continue
        problem = check_value(value, domain)
        if problem:
            problems.append(f"{name} {problem}")
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
    for name in ("lr_milestones", "checkpoint_steps"):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in getattr(cfg, name) or ()):
            problems.append(f"{name} must be integers ≥ 0, got {getattr(cfg, name)!r}")
    if cfg.input_shape is not None and any(not isinstance(v, int) or v < 1 for v in cfg.input_shape):
        problems.append(f"input_shape must be integers ≥ 1, got {cfg.input_shape!r}")
    width = (cfg.model_kwargs or {}).get("width")
    if width is not None and check_value(width, "positive"):
        problems.append(f"width {check_value(width, 'positive')}")
    if cfg.nesterov and (cfg.momentum <= 0 or cfg.dampening != 0):
        problems.append("nesterov needs momentum > 0 and dampening 0")
    if cfg.steps is None and cfg.epochs is None:
        problems.append("set steps or epochs")
    if cfg.tensorboard is not None and not cfg.track:
        problems.append("tensorboard needs the tracker (drop --no-track): its scalars are the tracked statistics")
    if problems:
        raise TrainingError("; ".join(problems))


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate used by optimizer step ``step`` (0-based) — a pure function, so resume needs no state."""
    if cfg.schedule == "constant":
        lr = cfg.lr
    elif cfg.schedule == "step":
        lr = cfg.lr * cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if step >= m)
    elif cfg.schedule == "cosine":
        span = max(1, total - cfg.warmup_steps)
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, max(0, step - cfg.warmup_steps) / span)))
    else:
        raise TrainingError(f"unknown lr schedule {cfg.schedule!r}; choose constant, step or cosine")
    if cfg.warmup_steps and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def checkpoint_schedule(cfg: TrainConfig, total: int) -> list[int]:
    import numpy as np

    steps = {total}
    if cfg.checkpoint_every:
        steps.update(range(cfg.checkpoint_every, total + 1, cfg.checkpoint_every))
    steps.update(int(s) for s in cfg.checkpoint_steps if 0 <= int(s) <= total)
    if cfg.checkpoint_log:
        steps.update(int(round(v)) for v in np.logspace(0, math.log10(max(total, 1)), int(cfg.checkpoint_log)))
    return sorted(s for s in steps if s >= 0)


__all__ = ["TRAJECTORY_FIELDS", "TrainConfig", "TrainingError", "check_config", "checkpoint_schedule", "lr_at"]
