"""Checkpoints read back: per-group state quantities straight from the weights.

Why: the checkpoint cross-check of a tracked run (does the log describe these weights?) and the
evaluation of checkpoints saved without the tracker both start from the same per-group sums.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .checkpoint_index import verify_checkpoint
from .runfile import RunLogError
from .runlog import RunLog
from ..symmetry import KINDS, Symmetry

_TINY = 1e-300


@dataclass
class CheckpointCheck:
    """Quantities from one checkpoint's weights against the log at that step (max relative error)."""

    path: str
    step: int
    errors: dict[str, float]
    note: str = ""


def state_quantities(state: Mapping[str, np.ndarray], symmetries: Sequence[Symmetry]) -> dict[str, dict[str, np.ndarray]]:
    """Per kind, the state columns (s, A or N, M) of every group computed from a weight dict.

    Per (parameter, axis) the per-index sums are computed once; members then index into them.
    """
    sums: dict[tuple[str, int | None, str], np.ndarray] = {}

    def per_index(name: str, axis: int | None, what: str) -> np.ndarray:
        key = (name, axis, what)
        if key not in sums:
            t = state[name]
            x = {"sum": t, "abs": np.abs(t), "sq": t * t}[what]
            sums[key] = np.array([x.sum()]) if axis is None else \
                x.sum(axis=tuple(d for d in range(t.ndim) if d != axis)) if t.ndim > 1 else x
        return sums[key]

    out: dict[str, dict[str, np.ndarray]] = {}
    for kind in KINDS:
        syms = [s for s in symmetries if s.kind == kind]
        if not syms:
            continue
        cols = ("s", "A") if kind == "translation" else ("N", "M")
        vals = {c: np.zeros(len(syms)) for c in cols}
        for j, s in enumerate(syms):
            for m in s.members:
                if m.param not in state:
                    raise KeyError(m.param)
                idx = [0] if m.axis is None else list(m.indices)
                if kind == "translation":
                    vals["s"][j] += m.sign * per_index(m.param, m.axis, "sum")[idx].sum()
                    vals["A"][j] += per_index(m.param, m.axis, "abs")[idx].sum()
                else:
                    sq = per_index(m.param, m.axis, "sq")[idx].sum()
                    vals["N"][j] += m.sign * sq
                    vals["M"][j] += sq
        out[kind] = vals
    return out


STATE_KEYS = ("model", "state_dict", "model_state_dict")


def load_checkpoint(path: Path) -> tuple[int | None, dict[str, np.ndarray], dict]:
    """(step or None, float64 weights, the whole loaded object) of a checkpoint file.

    A checkpoint is a state_dict, or a dict holding one under "model", "state_dict" or "model_state_dict";
    its step is a "step" key when there is one.
    """
    import torch  # only the checkpoint reader needs torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunLogError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(ck, Mapping):
        raise RunLogError(f"{path}: checkpoint is not a dict")
    key = next((k for k in STATE_KEYS if isinstance(ck.get(k), Mapping)), None)
    state = ck[key] if key else ck
    if key is None and any(k in ck for k in STATE_KEYS):
        raise RunLogError(f"{path}: checkpoint entry {next(k for k in STATE_KEYS if k in ck)!r} is not a state dict")
    arrays = {k: v.detach().to(torch.float64).numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not arrays:
        raise RunLogError(f"{path}: no tensors found (expected a state_dict, or one under {', '.join(STATE_KEYS)})")
    step = ck.get("step")
    return (int(step) if isinstance(step, (int, float)) else None), arrays, dict(ck)


def check_checkpoints(log: RunLog) -> list[CheckpointCheck]:
    """Compare ``checkpoints/step_*.pt`` weights with the logged state quantities at their steps."""
    files = sorted(Path(log.run_dir, "checkpoints").glob("step_*.pt"))
    out = []
    first = int(log.steps[0])
    for f in files:
        if (problem := verify_checkpoint(log.run_dir, f)) is not None:  # damaged, swapped or foreign: named, not loaded
            out.append(CheckpointCheck(str(f), int(re.sub(r"\D", "", f.stem) or -1), {}, problem))
            continue
        step, state, _ = load_checkpoint(f)
        if step is None:
            m = re.search(r"step_(\d+)", f.name)
            step = int(m.group(1)) if m else -1
        row = step - first
        if not 0 <= row < len(log.steps):
            out.append(CheckpointCheck(str(f), step, {}, f"step {step} is outside the log "
                                                         f"(steps {first}..{int(log.steps[-1])})"))
            continue
        try:
            q = state_quantities(state, log.symmetries)
        except KeyError as exc:
            raise RunLogError(f"{f}: checkpoint has no parameter {exc.args[0]!r} named by the run's symmetries") from None
        errs = {}
        for kind, vals in q.items():
            main, nrm = ("s", "A") if kind == "translation" else ("N", "M")
            logged = log.stats[kind].total(main, slice(row, row + 1))[0]
            errs[kind] = float(np.max(np.abs(vals[main] - logged) / np.maximum(vals[nrm], _TINY)))
        out.append(CheckpointCheck(str(f), step, errs))
    return out


