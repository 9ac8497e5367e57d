"""Hold a training run (its log and checkpoints) against the laws: per group, per layer, per kind.

Per group four numbers and a verdict (theory.md §5, numeric/verdicts.py):
* ``err_exact`` — the exact recurrence with the recorded breaking terms as inputs (the identity): it holds
  for any slice, so it checks the tracker and the optimizer description, and must sit at round-off;
* ``err_law`` — the symmetry's own prediction, breaking terms set to what the constraint says;
* ``err_continuous`` — the paper's continuous law (theory.md §4): its modelling error;
* ``breaking`` — max over steps of |⟨ĝ, ξ⟩| / (|ĝ| |ξ|), the measured violation of the gradient constraint.
Errors are max over steps of |measured − predicted|, normalised per group by the max over steps of the
group's size — A = Σ|θ| for translation, M = Σ|θ|² (both slices for rescale) otherwise — so a quantity
that passes through zero does not blow the relative error up. Groups whose members sit in several
optimizer classes get their laws per class (numeric/class_laws.py); ``optimizer_breaking`` says how far
the optimizer itself moves the quantity off the symmetric prediction.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import class_laws
from .checkpoints import CheckpointCheck, check_checkpoints
from .equilibrium import AngularUpdates, angular_updates
from .predict import LawUnavailable, quantity_column, scale_column
from .runlog import STATE_COLUMNS, RunLog, RunLogError, read_run
from .verdicts import VERDICTS, Thresholds, judge
from ..symmetry import KINDS, Symmetry

FORMAT = "nmech-evaluation/2"
_TINY = 1e-300
DEGENERATE_NOTE = ("Degenerate groups are counted apart and left out of every max/median: their gradient along "
                   "the symmetry and their conserved quantity are both round-off (e.g. zero-initialised biases "
                   "before batch norm), so their relative errors measure noise, not the law.")


@dataclass
class GroupResult:
    """One symmetry group: relative errors (max over steps), breaking, verdict and final values."""

    index: int
    kind: str
    key: str
    layer: str
    channel: int | None
    verdict: str
    cause: str | None
    err_exact: float
    err_law: float
    err_continuous: float
    breaking: float | None
    optimizer_breaking: float
    classes: list[int]
    final_measured: float
    final_exact: float
    final_law: float
    final_continuous: float
    norm: float
    err_approx: float | None = None


@dataclass
class KindSeries:
    """``[T+1, G]`` trajectories of one kind (rows = log rows used for the comparison)."""

    measured: np.ndarray
    exact: np.ndarray
    law: np.ndarray
    continuous: np.ndarray
    norm: np.ndarray
    symmetries: list[Symmetry]
    verdicts: list[str] = field(default_factory=list)


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
    thresholds: Thresholds
    classes: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[CheckpointCheck] = field(default_factory=list)
    prediction_errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    angular: AngularUpdates | None = None   # scale groups' angle per step vs the spherical-motion equilibrium
    source: str = "run"
    matrix: dict[str, Any] | None = None

    @property
    def optimizer(self) -> dict[str, Any]:
        return dict(self.meta.get("optimizer") or {})

    @property
    def T(self) -> int:
        return int(self.lrs.shape[0])

    @property
    def verdicts(self) -> dict[str, int]:
        return {v: sum(1 for g in self.groups if g.verdict == v) for v in VERDICTS}

    def _repr_html_(self) -> str:
        """Jupyter: verdict counts, the per-kind summary and the warnings (symmetry_engine/html_repr.py)."""
        from ..html_repr import evaluation_html

        return evaluation_html(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return _clean({
            "format": FORMAT,
            "source": self.source,
            "run_dir": str(self.run_dir),
            "steps": self.T,
            "closed": bool(self.meta.get("closed")),
            "optimizer": {**self.optimizer, "classes": self.classes},
            "dtype": self.meta.get("dtype"),
            "device": self.meta.get("device"),
            "model": self.meta.get("model"),
            "train": self.meta.get("train"),
            "thresholds": self.thresholds.to_json(),
            "warnings": list(self.warnings),
            "prediction_errors": dict(self.prediction_errors),
            "verdicts": self.verdicts,
            "summary": self.summary,
            "degenerate_note": DEGENERATE_NOTE,
            "layers": self.layers,
            "groups": [dataclasses.asdict(g) for g in self.groups],
            "checkpoints": [dataclasses.asdict(c) for c in self.checkpoints],
            "angular_update": None if self.angular is None else {
                "predicted_final": float(self.angular.predicted[-1]),
                "measured_final_median": float(np.median(self.angular.angles[-max(1, self.T // 10):].mean(axis=0))),
                "tail_ratio_median": float(np.median(self.angular.tail_ratio())),
                "relaxation_steps": self.angular.relaxation_steps},
            "matrix": self.matrix,
        })


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _rows_to_compare(log: RunLog) -> int:
    """Rows 0..rows−1 of the log are compared: all of them, or those before the run diverged."""
    if log.diverged_at is None:
        return log.T + 1
    row = log.diverged_at
    state_ok = all(np.isfinite(ks[c][row]).all() for ks in log.stats.values() for c in ks.columns
                   if c in STATE_COLUMNS)
    rows = row + 1 if state_ok else row
    if rows < 2:
        why = next((w for w in log.warnings if w.startswith("training diverged")), "training diverged")
        raise RunLogError(f"{log.run_dir}: {why}; no step can be compared with the laws")
    return rows


def _summarise(values: Sequence[float | None]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"max": float("nan"), "median": float("nan")}
    return {"max": float(np.max(v)), "median": float(np.median(v))}


def _group_entries(log: RunLog) -> np.ndarray:
    """Entries per group (|ξ|² of a translation group); from run.json, else from the members' indices."""
    sizes = log.meta.get("group_entries")
    if isinstance(sizes, list) and len(sizes) == len(log.symmetries):
        return np.asarray(sizes, dtype=float)
    return np.asarray([sum(len(m.indices) if m.axis is not None else 1 for m in s.members) for s in log.symmetries],
                      dtype=float)


def evaluate_run(run_dir: str | os.PathLike, checkpoints: bool = True) -> Evaluation:
    """Evaluate a run directory against the exact and continuous laws (and its checkpoints).

    Raises :class:`RunLogError` (one-line message) for unreadable logs or checkpoints and for a run with no
    comparable step (diverged at once, non-finite learning rate). An optimizer the laws do not cover yields
    NaN predictions and a line in ``prediction_errors``, and is judged by the identity and the measured
    breaking only.
    """
    log = read_run(run_dir)
    rows = _rows_to_compare(log)
    T = rows - 1
    th = Thresholds.for_dtype(log.meta.get("dtype"), (log.meta.get("amp") or {}).get("autocast_dtype"))
    sched = class_laws.schedules(log, T)
    warns = list(log.warnings)
    warns += [f"tracker: {w}" for w in (log.meta.get("tracker") or {}).get("warnings", [])]
    warns += class_laws.partial_updates(log, T)
    if rows < log.T + 1:
        warns.append(f"compared steps 0..{int(log.steps[rows - 1])} only (the run diverged)")
    entries = _group_entries(log)
    gnorm = np.sqrt(np.maximum(np.asarray(log.grad_sq[:T], dtype=float), 0.0))
    series: dict[str, KindSeries] = {}
    groups: list[GroupResult] = []
    keep = series_rows(rows, max((ks.groups for ks in log.stats.values()), default=1))
    pred_errors: dict[str, str] = {}
    for kind in KINDS:
        if kind not in log.stats:
            continue
        ks = log.stats[kind]
        syms = log.symmetries_of(kind)
        res = _evaluate_kind(kind, ks, sched, T, rows, th, gnorm, entries[log.groups[kind]], syms, pred_errors, keep)
        series[kind] = res.series
        for j, (gi, s) in enumerate(zip(log.groups[kind], syms)):
            groups.append(res.group(j, gi, s, ks))
    summary, layers = _summaries(groups)
    main = next((s for s in sched if s.cls.trained), sched[0] if sched else None)
    lrs = main.lr if main is not None else np.zeros(T)
    ev = Evaluation(run_dir=log.run_dir, meta=log.meta, steps=log.steps[:rows][keep], lrs=lrs, losses=log.losses[:T],
                    series=series, groups=groups, summary=summary, layers=layers, thresholds=th,
                    classes=_class_summaries(sched), prediction_errors=pred_errors, warnings=warns)
    if keep.shape[0] == rows:
        ev.angular = _angular(log, sched, T, rows)
    else:
        ev.warnings.append(f"long run: trajectories kept at {keep.shape[0]} of {rows} rows for figures; the "
                           "spherical-motion (angular update) summary is skipped")
    from .matrix_evaluate import evaluate_matrix_run  # matrix symmetries have their own log (matrix.json/.bin)

    ev.matrix = evaluate_matrix_run(log.run_dir)
    if ev.matrix is not None:
        ev.warnings += [f"matrix: {w}" for w in ev.matrix.get("warnings", [])]
    if checkpoints:
        ev.checkpoints = check_checkpoints(log)
    return ev


@dataclass
class _KindResult:
    series: KindSeries
    err: dict[str, np.ndarray]
    breaking: np.ndarray
    opt_breaking: np.ndarray
    verdicts: list
    final: dict[str, np.ndarray]
    norm: np.ndarray

    def group(self, j: int, gi: int, s: Symmetry, ks) -> GroupResult:
        v = self.verdicts[j]
        b = self.breaking[j]
        classes = sorted({int(c) for c in ks.slot_class[ks.slot_group == j]})
        return GroupResult(gi, s.kind, s.key, s.layer, s.channel, v.verdict, v.cause, float(self.err["exact"][j]),
                           float(self.err["law"][j]), float(self.err["continuous"][j]),
                           None if not np.isfinite(b) else float(b), float(self.opt_breaking[j]), classes,
                           float(self.final["measured"][j]), float(self.final["exact"][j]), float(self.final["law"][j]),
                           float(self.final["continuous"][j]), float(self.norm[j]))


#: Rows of statistics held at once per kind (chunks of steps × slots): bounds the evaluation's memory.
CHUNK_VALUES = int(os.environ.get("NMECH_EVAL_CHUNK_VALUES", str(4_000_000)))
#: Up to this many trajectory values per kind are kept for figures; longer runs keep evenly spaced rows.
SERIES_VALUES = int(os.environ.get("NMECH_EVAL_SERIES_VALUES", str(20_000_000)))


def series_rows(rows: int, groups: int) -> np.ndarray:
    """The log rows whose trajectories are kept (all of them when they fit in SERIES_VALUES)."""
    if rows * max(1, groups) <= SERIES_VALUES:
        return np.arange(rows)
    keep = max(2, SERIES_VALUES // max(1, groups))
    return np.unique(np.linspace(0, rows - 1, keep).round().astype(np.int64))


def _evaluate_kind(kind: str, ks, sched, T: int, rows: int, th: Thresholds, gnorm: np.ndarray,
                   entries: np.ndarray, syms: Sequence[Symmetry], pred_errors: dict[str, str],
                   keep: np.ndarray) -> _KindResult:
    """One kind's errors, breaking and verdicts, streaming over chunks of steps with the laws' states carried
    (class_laws forecasts): the log is read once, a chunk of rows at a time."""
    qcol, scol, bcol = quantity_column(kind), scale_column(kind), "P" if kind == "translation" else "Q"
    G = ks.groups
    closed = all(s.closed for s in sched)
    exact = cont = None
    try:
        if closed:
            exact = class_laws.ExactForecast(kind, ks, sched, T)
        else:
            exact = class_laws.IdentityForecast(kind, ks)
            rule = sched[0].spec().describe() if sched else "this optimizer"
            pred_errors[f"{kind}/law"] = f"{rule}: no closed law (the identity and the breaking are checked)"
            pred_errors[f"{kind}/continuous"] = f"{rule}: the update is not linear in the gradient; no continuous law"
    except (LawUnavailable, ValueError, KeyError) as exc:
        pred_errors[f"{kind}/exact"] = " ".join(str(exc).split()) or type(exc).__name__
        exact = None
    if closed:
        try:
            cont = class_laws.ContinuousForecast(kind, ks, sched, T)
        except (LawUnavailable, ValueError, KeyError) as exc:
            pred_errors[f"{kind}/continuous"] = " ".join(str(exc).split()) or type(exc).__name__
    names = ("exact", "law", "symmetric", "continuous")
    m0 = ks.total(qcol, slice(0, 1))[0]
    norm = np.abs(ks.total(scol, slice(0, 1))[0])
    diff = {n: np.zeros(G) for n in names}
    for n in names:
        if (n == "continuous" and cont is None) or (n != "continuous" and exact is None) or \
                (not closed and n in ("law", "symmetric")):
            diff[n][:] = np.nan
    opt_b, drift = np.zeros(G), np.zeros(G)
    if closed and exact is None:  # no law to compare: the optimizer-induced breaking is unknown
        opt_b[:], drift[:] = np.nan, np.nan
    brk, exercised = np.zeros(G), np.zeros(G, dtype=bool)
    xi_t = np.sqrt(entries)[None, :] if kind == "translation" else None
    series = {n: np.empty((keep.shape[0], G)) for n in ("measured",) + names}
    series["measured"][0] = m0
    for n in names:
        series[n][0] = np.nan if np.isnan(diff[n][0] if G else 0.0) else m0
    final = {n: series[n][0].copy() for n in ("measured",) + names}
    step = max(1, CHUNK_VALUES // max(1, ks.slot_group.shape[0] * 4))
    for t0 in range(0, T, step):
        t1 = min(T, t0 + step)
        meas = ks.total(qcol, slice(t0 + 1, t1 + 1))
        norm = np.maximum(norm, np.max(np.abs(ks.total(scol, slice(t0 + 1, t1 + 1))), axis=0))
        preds: dict[str, np.ndarray] = {}
        if exact is not None:
            if closed:
                for mode, got in exact.advance(t0, t1).items():
                    preds["exact" if mode == "identity" else mode] = class_laws.group_totals(ks, got)
            else:
                preds["exact"] = class_laws.group_totals(ks, exact.advance(t0, t1))
        if cont is not None:
            preds["continuous"] = cont.advance(t0, t1)
        for n, v in preds.items():
            diff[n] = np.maximum(diff[n], np.max(np.abs(meas - v), axis=0))
        if closed and "law" in preds:
            opt_b = np.maximum(opt_b, np.max(np.abs(preds["law"] - preds["symmetric"]), axis=0))
            drift = np.maximum(drift, np.max(np.abs(preds["exact"] - preds["law"]), axis=0))
        elif not closed:
            opt_b = np.maximum(opt_b, np.max(np.abs(meas - m0[None]), axis=0))
        inner = np.abs(ks.total(bcol, slice(t0, t1)))
        exercised |= np.any(inner != 0, axis=0)
        xi = xi_t if xi_t is not None else np.sqrt(np.maximum(ks.total("M", slice(t0, t1)), 0.0))
        denom = gnorm[t0:t1, None] * xi
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(denom > 0, inner / np.where(denom > 0, denom, 1.0), 0.0)
        brk = np.maximum(brk, np.max(ratio, axis=0, initial=0.0))
        sel = np.flatnonzero((keep > t0) & (keep <= t1))
        for n in ("measured",) + names:
            v = meas if n == "measured" else preds.get(n)
            last = np.full(G, np.nan) if v is None else v[-1]
            final[n] = last
            if sel.size:
                series[n][sel] = np.nan if v is None else v[keep[sel] - t0 - 1]
    denom = np.maximum(norm, _TINY)
    err = {n: diff[n] / denom for n in names}
    opt_breaking = opt_b / denom
    if not closed:
        drift = np.zeros_like(norm)
    classes = [c.cls for c in sched]
    unobserved = np.zeros(G, dtype=bool)
    for j, c in zip(ks.slot_group, ks.slot_class):
        unobserved[j] |= not classes[c].requires_grad
    breaking = np.where(unobserved, np.nan, brk if T else np.zeros(G))
    verdicts = []
    for j, s in enumerate(syms):
        eps = float((s.extra or {}).get("eps", 0.0) or 0.0)
        e_law = float(err["law"][j]) if np.isfinite(err["law"][j]) else float("inf")
        verdicts.append(judge(th, err_law=e_law, breaking=float(breaking[j]) if np.isfinite(breaking[j]) else None,
                              eps=eps, size_max=float(norm[j]), breaking_drift=float(drift[j]), closed_law=closed,
                              exercised=bool(exercised[j])))
    ser = KindSeries(series["measured"], series["exact"], series["law"], series["continuous"], norm, list(syms),
                     [v.verdict for v in verdicts])
    return _KindResult(ser, err, breaking, opt_breaking, verdicts, final, norm)


def _class_summaries(sched) -> list[dict[str, Any]]:
    def span(x: np.ndarray) -> dict[str, float]:
        x = np.asarray(x, dtype=float)
        if x.size == 0:
            return {"first": float("nan"), "last": float("nan"), "min": float("nan"), "max": float("nan")}
        return {"first": float(x[0]), "last": float(x[-1]), "min": float(np.min(x)), "max": float(np.max(x))}

    out = []
    for s in sched:
        c = s.cls
        out.append({"id": c.id, "label": c.label, "param_group": c.param_group, "frozen": not c.trained,
                    "requires_grad": c.requires_grad, "fresh_buffer": c.fresh_buffer, "rule": c.rule,
                    "params": list(c.params), "lr": span(s.lr), "momentum": span(s.momentum),
                    "dampening": span(s.dampening), "weight_decay": span(s.weight_decay), "nesterov": c.nesterov,
                    "decoupled_weight_decay": c.decoupled_weight_decay,
                    "steps_updated": int(np.sum(s.active))})
    return out


def _angular(log: RunLog, sched, T: int, rows: int) -> AngularUpdates | None:
    """Spherical motion of the scale groups, when they all share one SGD class with constant β, d, λ > 0."""
    if "scale" not in log.stats or T == 0:
        return None
    ks = log.stats["scale"]
    ids = set(int(c) for c in ks.slot_class)
    if len(ids) != 1 or ks.slot_class.shape[0] != ks.groups:
        return None
    s = sched[ids.pop()]
    if s.cls.rule != "sgd" or s.cls.nesterov or not s.cls.trained:
        return None
    if any(np.ptp(x) > 0 for x in (s.momentum, s.dampening, s.weight_decay)) or s.weight_decay[0] <= 0:
        return None
    return angular_updates(ks.total("N", slice(0, rows)), ks.total("D", slice(0, T)), s.lr, float(s.momentum[0]),
                           float(s.dampening[0]), float(s.weight_decay[0]))


def _stats(gs: Sequence[GroupResult]) -> dict[str, Any]:
    counted = [g for g in gs if g.verdict != "degenerate"]
    return {"groups": len(gs), "verdicts": {v: sum(1 for g in gs if g.verdict == v) for v in VERDICTS},
            "exact": _summarise([g.err_exact for g in counted]), "law": _summarise([g.err_law for g in counted]),
            "continuous": _summarise([g.err_continuous for g in counted]),
            "breaking": _summarise([g.breaking for g in counted]),
            "optimizer_breaking": _summarise([g.optimizer_breaking for g in counted])}


def _summaries(groups: Sequence[GroupResult]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    summary = {k: _stats([g for g in groups if g.kind == k]) for k in KINDS if any(g.kind == k for g in groups)}
    by_layer: dict[tuple[str, str], list[GroupResult]] = {}
    for g in groups:
        by_layer.setdefault((g.kind, g.layer), []).append(g)
    layers = [{"kind": k, "layer": l, **_stats(gs)} for (k, l), gs in by_layer.items()]
    return summary, layers


__all__ = ["Evaluation", "GroupResult", "KindSeries", "CheckpointCheck", "evaluate_run", "check_checkpoints",
           "FORMAT", "DEGENERATE_NOTE"]
