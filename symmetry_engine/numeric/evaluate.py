"""Hold a training run (its log and checkpoints) against the laws: per group, per layer, per kind.

Why two predictions: the exact discrete laws (theory.md §5) should match a float64 run to rounding, so a
large error there means the log, the symmetry or the optimizer description is wrong; the paper's
continuous laws (§4) carry O(ηλ) and O(η²λ²n) modelling error, which is what a user wants quantified.
Errors are max over steps of |measured − predicted|, normalised per group by the max over steps of the
group's size — A = Σ|θ| for translation, M = Σ|θ|² (both slices for rescale) otherwise — so that a group
whose signed quantity passes through zero does not blow up the relative error.

The checkpoint cross-check recomputes the state quantities straight from each checkpoint's weights and
compares them with the log at that step: it catches a tracker that watched the wrong tensors or a log that
belongs to a different run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .checkpoint_index import verify_checkpoint
from .equilibrium import AngularUpdates, angular_updates
from .predict import OptimizerConfig, predict_continuous, predict_exact
from .runlog import STATE_COLUMNS, RunLog, RunLogError, read_run
from ..symmetry import KINDS, Symmetry

MEASURED = {"translation": "s", "scale": "N", "rescale": "N"}
NORM = {"translation": "A", "scale": "M", "rescale": "M"}
_TINY = 1e-300


@dataclass
class GroupResult:
    """One symmetry group: relative errors (max over steps) and final values."""

    index: int
    kind: str
    key: str
    layer: str
    channel: int | None
    err_exact: float
    err_continuous: float
    final_measured: float
    final_exact: float
    final_continuous: float
    norm: float
    breaking: float = 0.0   # drift the symmetry forbids (recorded P or Q), same normalization as the errors


@dataclass
class KindSeries:
    """``[T+1, G]`` trajectories of one kind (rows = log rows used for the comparison)."""

    measured: np.ndarray
    exact: np.ndarray
    continuous: np.ndarray
    norm: np.ndarray
    symmetries: list[Symmetry]


@dataclass
class CheckpointCheck:
    """Quantities from one checkpoint's weights against the log at that step (max relative error)."""

    path: str
    step: int
    errors: dict[str, float]
    note: str = ""


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate_run`; ``to_json()`` is what report.json and ``--json`` print."""

    run_dir: Path
    meta: dict[str, Any]
    steps: np.ndarray
    lrs: np.ndarray
    losses: np.ndarray
    series: dict[str, KindSeries]
    groups: list[GroupResult]
    summary: dict[str, dict[str, Any]]
    layers: list[dict[str, Any]]
    checkpoints: list[CheckpointCheck] = field(default_factory=list)
    prediction_errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    angular: AngularUpdates | None = None   # scale groups' angle per step vs the spherical-motion equilibrium

    @property
    def optimizer(self) -> dict[str, Any]:
        return dict(self.meta.get("optimizer") or {})

    @property
    def T(self) -> int:
        return int(self.lrs.shape[0])

    def to_json(self) -> dict[str, Any]:
        return _clean({
            "run_dir": str(self.run_dir),
            "format": self.meta.get("format"),
            "steps": self.T,
            "closed": bool(self.meta.get("closed")),
            "optimizer": self.optimizer,
            "dtype": self.meta.get("dtype"),
            "device": self.meta.get("device"),
            "model": self.meta.get("model"),
            "warnings": list(self.warnings),
            "prediction_errors": dict(self.prediction_errors),
            "summary": self.summary,
            "layers": self.layers,
            "groups": [dataclasses.asdict(g) for g in self.groups],
            "checkpoints": [dataclasses.asdict(c) for c in self.checkpoints],
            "angular_update": None if self.angular is None else {
                "predicted_final": float(self.angular.predicted[-1]),
                "measured_final_median": float(np.median(self.angular.angles[-max(1, self.T // 10):].mean(axis=0))),
                "tail_ratio_median": float(np.median(self.angular.tail_ratio())),
                "relaxation_steps": self.angular.relaxation_steps},
        })


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _stats_upto(log: RunLog, rows: int) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """The log cut to its first ``rows`` rows, the last one turned into a final-state row."""
    out = {}
    for kind, cols in log.stats.items():
        out[kind] = {}
        for col, arr in cols.items():
            a = arr[:rows].copy()
            if col not in STATE_COLUMNS:
                a[-1] = np.nan
            out[kind][col] = a
    return out, log.lrs[:rows - 1]


def _rows_to_compare(log: RunLog) -> int:
    if log.diverged_at is None:
        return log.T + 1
    row = log.diverged_at
    state_ok = all(np.isfinite(log.stats[k][c][row]).all() for k in log.stats for c in log.stats[k]
                   if c in STATE_COLUMNS)
    rows = row + 1 if state_ok else row
    if rows < 1:
        raise RunLogError(f"{log.run_dir}: training diverged at the first step; nothing to evaluate")
    return rows


def _summarise(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"max": float("nan"), "median": float("nan")}
    return {"max": float(np.max(v)), "median": float(np.median(v))}


def evaluate_run(run_dir: str | os.PathLike, checkpoints: bool = True) -> Evaluation:
    """Evaluate a run directory against the exact and continuous laws (and its checkpoints).

    Raises :class:`RunLogError` (one-line message) for unreadable logs or checkpoints. An optimizer the
    laws do not cover yields NaN predictions and a line in ``prediction_errors`` rather than an error,
    so the measured trajectories and checkpoint checks are still reported.
    """
    log = read_run(run_dir)
    rows = _rows_to_compare(log)
    stats, lrs = _stats_upto(log, rows)
    opt_meta = log.optimizer
    known = {f.name for f in dataclasses.fields(OptimizerConfig)}
    try:
        opt = OptimizerConfig(**{k: v for k, v in opt_meta.items() if k in known})
    except TypeError as exc:
        raise RunLogError(f"{log.run_dir}: optimizer entry in run.json is invalid ({exc})") from None
    series: dict[str, KindSeries] = {}
    groups: list[GroupResult] = []
    pred_errors: dict[str, str] = {}
    for kind in KINDS:
        if kind not in stats:
            continue
        st = stats[kind]
        measured, norm = st[MEASURED[kind]], np.max(np.abs(st[NORM[kind]]), axis=0)
        preds = {}
        for name, fn in (("exact", predict_exact), ("continuous", predict_continuous)):
            try:
                p = np.asarray(fn(kind, st, lrs, opt), dtype=float)
                if p.shape != measured.shape:
                    raise ValueError(f"prediction has shape {p.shape}, expected {measured.shape}")
            except (NotImplementedError, ValueError) as exc:
                pred_errors[f"{kind}/{name}"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                p = np.full_like(measured, np.nan)
            preds[name] = p
        syms = log.symmetries_of(kind)
        series[kind] = KindSeries(measured, preds["exact"], preds["continuous"], norm, syms)
        denom = np.maximum(norm, _TINY)
        err = {k: np.max(np.abs(measured - v), axis=0) / denom for k, v in preds.items()}
        breaking = symmetry_breaking(kind, st, lrs, opt) / denom
        for j, (gi, s) in enumerate(zip(log.groups[kind], syms)):
            groups.append(GroupResult(gi, kind, s.key, s.layer, s.channel, float(err["exact"][j]),
                                      float(err["continuous"][j]), float(measured[-1, j]),
                                      float(preds["exact"][-1, j]), float(preds["continuous"][-1, j]),
                                      float(norm[j]), float(breaking[j])))
    summary, layers = _summaries(groups)
    warns = list(log.warnings)
    if rows < log.T + 1:
        warns.append(f"compared steps 0..{int(log.steps[rows - 1])} only (the run diverged)")
    ev = Evaluation(run_dir=log.run_dir, meta=log.meta, steps=log.steps[:rows], lrs=lrs,
                    losses=log.losses[:rows - 1], series=series, groups=groups, summary=summary, layers=layers,
                    prediction_errors=pred_errors, warnings=warns)
    if "scale" in stats and opt.rule == "sgd" and not opt.nesterov and opt.weight_decay > 0 and len(lrs):
        ev.angular = angular_updates(stats["scale"]["N"], stats["scale"]["D"], lrs, opt.momentum, opt.dampening,
                                     opt.weight_decay)
    if checkpoints:
        ev.checkpoints = check_checkpoints(log)
    return ev


def symmetry_breaking(kind: str, stats: Mapping[str, np.ndarray], lrs: np.ndarray, opt: OptimizerConfig) -> np.ndarray:
    """Per group, the largest drift of the quantity that the gradient constraint forbids.

    Under an exact symmetry P = ⟨ĝ, 1_A⟩ (translation) and Q = ⟨ĝ, θ_A⟩ (scale, rescale) vanish; BN's ε and
    float32 round-off make them small but non-zero. Their cumulative effect on the quantity is
    max_n |Σ_{k<n} η_k X_k| / (1 − β(1 − d)) with X = P or 2Q (the heavy-ball filter's gain for a slow
    drive). The exact laws include it; the paper's continuous laws assume it is 0, so a continuous error of
    the same size as this measure is the symmetry breaking, not the modelling, showing.
    """
    col, factor = ("P", 1.0) if kind == "translation" else ("Q", 2.0)
    x = np.nan_to_num(np.asarray(stats[col], dtype=float)[: len(lrs)])
    drift = np.cumsum(factor * lrs[:, None] * x, axis=0)
    gain = 1.0 - opt.momentum * (1.0 - opt.dampening)
    return np.max(np.abs(drift), axis=0, initial=0.0) / max(gain, 1e-12)


def _summaries(groups: Sequence[GroupResult]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    summary: dict[str, dict[str, Any]] = {}
    by_layer: dict[tuple[str, str], list[GroupResult]] = {}
    for g in groups:
        by_layer.setdefault((g.kind, g.layer), []).append(g)
    for kind in KINDS:
        gs = [g for g in groups if g.kind == kind]
        if gs:
            summary[kind] = {"groups": len(gs), "exact": _summarise([g.err_exact for g in gs]),
                             "continuous": _summarise([g.err_continuous for g in gs]),
                             "breaking": _summarise([g.breaking for g in gs])}
    layers = [{"kind": k, "layer": l, "groups": len(gs), "exact": _summarise([g.err_exact for g in gs]),
               "continuous": _summarise([g.err_continuous for g in gs])}
              for (k, l), gs in by_layer.items()]
    return summary, layers


# -- checkpoints ------------------------------------------------------------------------------------------
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


def _load_checkpoint(path: Path) -> tuple[int | None, dict[str, np.ndarray]]:
    import torch  # only the checkpoint reader needs torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunLogError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(ck, Mapping):
        raise RunLogError(f"{path}: checkpoint is not a dict")
    state = ck.get("model", ck)
    if not isinstance(state, Mapping):
        raise RunLogError(f"{path}: checkpoint 'model' entry is not a state dict")
    arrays = {k: v.detach().to(torch.float64).numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    step = ck.get("step")
    return (int(step) if step is not None else None), arrays


def check_checkpoints(log: RunLog) -> list[CheckpointCheck]:
    """Compare ``checkpoints/step_*.pt`` weights with the logged state quantities at their steps."""
    files = sorted(Path(log.run_dir, "checkpoints").glob("step_*.pt"))
    out = []
    first = int(log.steps[0])
    for f in files:
        if (problem := verify_checkpoint(log.run_dir, f)) is not None:  # damaged, swapped or foreign: named, not loaded
            out.append(CheckpointCheck(str(f), int(re.sub(r"\D", "", f.stem) or -1), {}, problem)); continue  # noqa: E702
        step, state = _load_checkpoint(f)
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
            logged = log.stats[kind][main][row]
            errs[kind] = float(np.max(np.abs(vals[main] - logged) / np.maximum(vals[nrm], _TINY)))
        out.append(CheckpointCheck(str(f), step, errs))
    return out


__all__ = ["Evaluation", "GroupResult", "KindSeries", "CheckpointCheck", "evaluate_run", "check_checkpoints",
           "state_quantities"]
