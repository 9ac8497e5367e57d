"""Checkpoints saved without the tracker: which files they are, their steps, their fit to a model.

Why a module of its own: checkpoint-only evaluation (numeric/checkpoint_eval.py) takes any directory a
researcher's own loop wrote, so every rule about what counts as a checkpoint is stated here once, and
every way it can be wrong ends in one line naming the file.

Rules (docs/run_format.md, "Checkpoint-only evaluation"):

* **Files.** Regular files ending in ``.pt``, ``.pth``, ``.ckpt``, ``.bin`` or ``.tar`` are checkpoints;
  anything else (``run.json``, ``notes.txt``, ``step_10.pt.tmp``, sub-directories) is skipped with one
  warning naming it, and hidden files are ignored. A checkpoint file that cannot be loaded or holds no
  state dict is an error, never skipped: a damaged checkpoint would silently shorten the comparison.
* **Contents.** A state dict, or a dict holding one under ``"model"``, ``"state_dict"`` or
  ``"model_state_dict"`` (numeric/checkpoints.py); keys prefixed ``module.`` (DataParallel) or
  ``_orig_mod.`` (torch.compile) or ``model.`` (a Lightning module) are accepted when every key has the
  prefix and none matches the model as it is.
* **Step.** A ``"step"`` (or ``"global_step"``) integer in the dict wins. Otherwise the file name: the
  integer right after ``step`` or ``iter`` (``epoch_3_step_1200.pt`` → 1200, ``step=50.ckpt``,
  ``iter500.pth``); else the only integer in the name (``ckpt_500.pt`` → 500) unless it follows
  ``epoch``. Several unmarked integers, or an epoch only, is an error asking for a ``step`` key.
* **Optimizer state.** ``"optimizer"`` or ``"optimizer_state_dict"`` holding a ``torch.optim`` state
  dict: its integer parameter ids are mapped to the model's parameters in ``model.parameters()`` order
  (what ``SGD(model.parameters())`` numbers them by); when the counts or shapes disagree the buffers are
  not used, with a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .checkpoints import STATE_KEYS, load_checkpoint
from .runfile import RunLogError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict")
STEP_KEYS = ("step", "global_step")
KEY_PREFIXES = ("module.", "_orig_mod.")

_MARKED = re.compile(r"(?i)(?:step|iter(?:ation)?)s?[_\-=.]?(\d+)")
_EPOCH = re.compile(r"(?i)epochs?[_\-=.]?(\d+)")
_INT = re.compile(r"\d+")


class CheckpointError(RunLogError):
    """A checkpoint directory or file that cannot be evaluated; the message is one line."""


@dataclass
class CheckpointFile:
    """One loaded checkpoint: its step, float64 weights by state-dict key, and what else it holds."""

    path: Path
    step: int
    state: dict[str, np.ndarray]
    dtype: str | None                     # the floating dtype the weights were saved in
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    name_step: int | None = None          # the step the file name gives, when it gives one


def list_checkpoint_files(directory: str | Path) -> tuple[list[Path], list[str]]:
    """Candidate checkpoint files of ``directory`` (sorted by name) and warnings about skipped entries."""
    d = Path(directory)
    if not d.exists():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    if not d.is_dir():
        raise CheckpointError(f"{d} is not a directory (pass the directory that holds the checkpoints)")
    files, skipped = [], []
    for p in sorted(d.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES:
            files.append(p)
        else:
            skipped.append(p.name + ("/" if p.is_dir() else ""))
    if not files:
        what = f" (only {', '.join(skipped[:5])}{' …' if len(skipped) > 5 else ''})" if skipped else ""
        raise CheckpointError(f"{d} holds no checkpoint files ({'/'.join(CHECKPOINT_SUFFIXES)}){what}")
    warns = []
    if skipped:
        warns.append(f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of {d} that are not checkpoint "
                     f"files ({'/'.join(CHECKPOINT_SUFFIXES)}): {', '.join(skipped[:8])}{' …' if len(skipped) > 8 else ''}")
    return files, warns


def step_from_name(path: Path) -> int | None:
    """The step a file name gives (see the module rules); raises CheckpointError when it is ambiguous."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    marked = _MARKED.findall(stem)
    if len(set(marked)) == 1:
        return int(marked[0])
    if len(set(marked)) > 1:
        raise CheckpointError(f"{path}: ambiguous step in the file name (several: {', '.join(marked)}); "
                              "save a 'step' key in the checkpoint")
    numbers = _INT.findall(stem)
    epochs = _EPOCH.findall(stem)
    unmarked = list(numbers)
    for e in epochs:
        unmarked.remove(e)
    if len(unmarked) == 1:
        return int(unmarked[0])
    if not numbers:
        return None
    if not unmarked:
        raise CheckpointError(f"{path}: the file name gives an epoch, not a step; save a 'step' key in the "
                              "checkpoint or name it like epoch_3_step_1200.pt")
    raise CheckpointError(f"{path}: ambiguous step in the file name (integers {', '.join(numbers)}, none after "
                          "'step'); save a 'step' key in the checkpoint or name it like step_1200.pt")


def _step_key(raw: Mapping[str, Any], path: Path) -> int | None:
    for key in STEP_KEYS:
        if key in raw:
            v = raw[key]
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
                raise CheckpointError(f"{path}: {key!r} is {v!r}, not a non-negative integer")
            return int(v)
    return None


def _strip_prefix(state: dict[str, np.ndarray], model_keys: set[str]) -> dict[str, np.ndarray]:
    if set(state) & model_keys:
        return state
    for prefix in KEY_PREFIXES + ("model.",):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _saved_dtype(raw: Mapping[str, Any]) -> str | None:
    key = next((k for k in STATE_KEYS if isinstance(raw.get(k), Mapping)), None)
    state = raw[key] if key else raw
    for v in state.values():
        if getattr(v, "is_floating_point", lambda: False)():
            return str(v.dtype).replace("torch.", "")
    return None


def load_checkpoint_file(path: Path) -> CheckpointFile:
    """Load one checkpoint and resolve its step (errors are one line naming the file)."""
    _, state, raw = load_checkpoint(path)
    step = _step_key(raw, path)
    named = step_from_name(path)
    if step is None:
        step = named
    if step is None:
        raise CheckpointError(f"{path}: no step: the checkpoint has no 'step' key and its file name no integer "
                              "(name it like step_1200.pt)")
    return CheckpointFile(path, step, state, _saved_dtype(raw), raw, named)


def _names(keys: Sequence[str], limit: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def fit_to_model(ck: CheckpointFile, params: Mapping[str, tuple[int, ...]], buffers: Mapping[str, tuple[int, ...]],
                 model_name: str) -> list[str]:
    """Rename ``ck.state`` to the model's keys and check it fits; returns warnings (missing buffers).

    Missing parameters, keys the model does not have, and shape differences are errors: the checkpoint
    belongs to another model (or another width)."""
    model_keys = set(params) | set(buffers)
    ck.state = _strip_prefix(ck.state, model_keys)
    missing = [k for k in params if k not in ck.state]
    extra = [k for k in ck.state if k not in model_keys]
    if missing or extra:
        parts = ([f"missing {len(missing)} parameter(s): {_names(missing)}"] if missing else []) + \
                ([f"{len(extra)} key(s) the model does not have: {_names(extra)}"] if extra else [])
        raise CheckpointError(f"{ck.path}: does not fit {model_name} ({'; '.join(parts)}): checkpoints of another model?")
    for k, shape in {**params, **buffers}.items():
        if k in ck.state and tuple(ck.state[k].shape) != tuple(shape):
            raise CheckpointError(f"{ck.path}: {k} has shape {list(ck.state[k].shape)} in the checkpoint but "
                                  f"{list(shape)} in {model_name} (another width or model?)")
    gone = [k for k in buffers if k not in ck.state]
    return [f"{ck.path.name}: no buffers {_names(gone)}; the model's own values are used (train-mode batch norm "
            "does not read them)"] if gone else []


@dataclass
class OptimizerState:
    """What a checkpoint's ``torch.optim`` state says: momentum buffers by parameter name, hyper-parameters."""

    buffers: dict[str, np.ndarray] | None
    groups: list[dict[str, Any]]
    warning: str | None = None


def optimizer_state(ck: CheckpointFile, param_names: Sequence[str], shapes: Mapping[str, tuple[int, ...]]) -> OptimizerState | None:
    """The checkpoint's optimizer state mapped to parameter names (None when it has none)."""
    key = next((k for k in OPTIMIZER_KEYS if isinstance(ck.raw.get(k), Mapping)), None)
    if key is None:
        return None
    opt = ck.raw[key]
    groups = [dict(g) for g in opt.get("param_groups") or [] if isinstance(g, Mapping)]
    state = opt.get("state") or {}
    order = [i for g in groups for i in (g.get("params") or [])]
    info = [{k: v for k, v in g.items() if k != "params"} for g in groups]
    if len(order) != len(param_names):
        return OptimizerState(None, info, f"{ck.path.name}: the optimizer state covers {len(order)} parameters, the "
                              f"model has {len(param_names)}; its momentum buffers are not used")
    buffers: dict[str, np.ndarray] = {}
    empty = []
    for pid, name in zip(order, param_names):
        entry = state.get(pid) if isinstance(state, Mapping) else None
        buf = entry.get("momentum_buffer") if isinstance(entry, Mapping) else None
        if buf is None:
            empty.append(name)
            continue
        arr = buf.detach().double().cpu().numpy()
        if tuple(arr.shape) != tuple(shapes[name]):
            return OptimizerState(None, info, f"{ck.path.name}: optimizer parameter {pid} has shape {list(arr.shape)}, "
                                  f"model parameter {name} {list(shapes[name])} (param groups not in model order?); "
                                  "its momentum buffers are not used")
        buffers[name] = arr
    if not buffers:
        return OptimizerState(None, info)
    warning = None
    if empty:
        warning = (f"{ck.path.name}: no momentum buffer for {_names(empty)}; taken as zero")
        for name in empty:
            buffers[name] = np.zeros(shapes[name])
    return OptimizerState(buffers, info, warning)
