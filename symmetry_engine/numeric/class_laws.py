"""The laws for groups whose members sit in several optimizer classes (theory.md §7), numerically.

Each class runs the exact recurrence the engine derived for its own rule, with its own per-step
hyper-parameters (so schedules, OneCycle's momentum, frozen classes and late-filled momentum buffers are
all the same mechanism); the group's quantity is the sum over its slots. Three versions differ only in
the breaking terms they feed in (P for translation, Q otherwise):

* ``identity`` — the recorded terms: holds for any slice, checks the tracker and the optimizer description;
* ``law`` — the symmetry's own prediction: the constraint Σ_c Q_c = 0 eliminates one class's term (the
  reference class); with one class the term is 0, with several the others stay in, multiplied by
  coefficient differences — the optimizer-induced breaking (symbolic/class_laws.py derives it);
* ``symmetric`` — every class's term 0. By linearity ``law − symmetric`` is exactly the sum over the
  non-eliminated classes of (their response − the eliminated class's response) to their own recorded
  term: the coefficient differences of theory.md §7 times Q_c, i.e. the optimizer-induced breaking.

The paper's continuous law is one optimizer's law: the group's dominant class's coefficients applied to
the group's totals (``forecast_continuous``); its error therefore includes the optimizer-induced breaking.

The eliminated class is one whose gradient is not computed (``requires_grad`` off: its term is unknown
and, having η = 0, it does not need one), else the class carrying most of the group's size at step 0.
The dominant class is the trained class carrying most of the size at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .classes import OptimizerClass
from .predict import (LawUnavailable, NESTEROV_MIN_MOMENTUM, continuous_coefficients, quantity_column,
                      scale_column)
from .runlog import KindStats, RunLog
from ..symbolic import RuleSpec, compiled_recurrence

MODES = ("identity", "law", "symmetric")


@dataclass(frozen=True)
class ClassSchedule:
    """One class's optimizer over the logged steps: per-step arrays [T] and the rule's structure."""

    cls: OptimizerClass
    lr: np.ndarray
    momentum: np.ndarray
    dampening: np.ndarray
    weight_decay: np.ndarray
    active: np.ndarray            # the optimizer touched the class at this step

    @property
    def closed(self) -> bool:
        return self.cls.rule == "sgd" or not self.cls.trained

    def spec(self) -> RuleSpec:
        """The rule structure the engine derives laws for (momentum anywhere in the run means a buffer)."""
        if not self.cls.trained:
            return RuleSpec()
        if self.cls.rule != "sgd":
            return RuleSpec("adam", decoupled=self.cls.decoupled_weight_decay)
        momentum = bool(np.any(self.momentum[self.active] > 0)) if self.active.any() else False
        return RuleSpec("sgd", momentum, self.cls.nesterov and momentum, self.cls.decoupled_weight_decay)

    def first_step(self) -> int | None:
        """The step whose update fills a fresh momentum buffer (None: the buffer existed, or never filled)."""
        if not self.cls.fresh_buffer or not self.active.any():
            return None
        return int(np.argmax(self.active))

    def params(self) -> dict[str, np.ndarray]:
        return {"lambda": self.weight_decay, "beta": self.momentum, "d": self.dampening}


def schedules(log: RunLog, T: int) -> list[ClassSchedule]:
    """Every class's schedule over the first ``T`` steps of a log."""
    out = []
    for c in log.classes:
        hp = {k: np.nan_to_num(np.asarray(v[:T, c.id], dtype=np.float64)) for k, v in log.hp.items()}
        active = (hp["updated"] > 0) & c.trained
        out.append(ClassSchedule(c, hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"], active))
    return out


def partial_updates(log: RunLog, T: int) -> list[str]:
    """Warnings for classes that were only partly updated at some step (some members had no gradient)."""
    out = []
    for c in log.classes:
        u = np.asarray(log.hp["updated"][:T, c.id])
        bad = np.flatnonzero((u > 0) & (u < 1))
        if bad.size:
            out.append(f"class {c.id} ({c.label}): only some of its parameters had a gradient at {bad.size} step(s) "
                       f"(first at step {int(bad[0])}); their laws there are not exact")
    return out


def reference_slots(kind: str, ks: KindStats, classes: Sequence[OptimizerClass]) -> np.ndarray:
    """Per group, the slot whose breaking term the constraint eliminates."""
    size = ks[scale_column(kind)][0]
    ref = np.empty(ks.groups, dtype=np.int64)
    bounds = np.append(ks.starts, ks.slot_group.shape[0])
    for g in range(ks.groups):
        sl = np.arange(bounds[g], bounds[g + 1])
        unobserved = [j for j in sl if not classes[ks.slot_class[j]].requires_grad]
        ref[g] = unobserved[0] if unobserved else sl[int(np.argmax(np.abs(size[sl])))]
    return ref


def _brk_chunk(x: np.ndarray, starts: np.ndarray, ref: np.ndarray | None, mode: str) -> np.ndarray:
    """Rows of the per-slot breaking term (P or Q) a mode feeds the recurrences."""
    if mode == "identity":
        return x
    if mode == "symmetric":
        return np.zeros_like(x)
    if mode != "law":
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    totals = np.add.reduceat(x, starts, axis=1) if x.shape[1] else x
    out = x.copy()
    out[:, ref] = x[:, ref] - totals  # Q_ref = −Σ_{c ≠ ref} Q_c, i.e. the group total is 0
    return out


def breaking_inputs(kind: str, ks: KindStats, classes: Sequence[OptimizerClass], T: int, mode: str) -> np.ndarray:
    """The per-slot breaking term (P or Q) a mode feeds the recurrences, [T, S]."""
    col = "P" if kind == "translation" else "Q"
    x = np.asarray(ks[col][:T], dtype=np.float64)
    return _brk_chunk(x, ks.starts, reference_slots(kind, ks, classes) if mode == "law" else None, mode)


class ExactForecast:
    """Per-slot exact forecasts of one kind in several modes, advanced over chunks of steps.

    Each class runs its own recurrence (per-step coefficients from its schedule) with its own state per
    mode, carried from chunk to chunk (numeric/scan.py), so a long log is read once, a chunk of rows at a
    time, whatever its length."""

    def __init__(self, kind: str, ks: KindStats, sched: Sequence[ClassSchedule], T: int,
                 modes: Sequence[str] = MODES) -> None:
        self.kind, self.ks, self.T, self.modes = kind, ks, T, tuple(modes)
        self.bcol = "P" if kind == "translation" else "Q"
        self.ref = reference_slots(kind, ks, [s.cls for s in sched]) if "law" in self.modes else None
        x0 = np.asarray(ks[quantity_column(kind)][0], dtype=np.float64)
        self.S = x0.shape[0]
        self.parts = []
        for s in sched:
            cols = np.flatnonzero(ks.slot_class == s.cls.id)
            if cols.size == 0:
                continue
            spec = s.spec()
            if not spec.closed:
                raise LawUnavailable(f"{spec.describe()}: no closed exact law; only the bookkeeping identity holds")
            if spec.nesterov and np.any(s.momentum[s.active] < NESTEROV_MIN_MOMENTUM):
                raise LawUnavailable("Nesterov momentum below 1e-280: its exact law divides by it")
            comp = compiled_recurrence(kind, spec)
            init = np.zeros((len(comp.states), cols.size))
            init[0] = x0[cols]
            for i, state in enumerate(comp.states[1:], start=1):
                if state in ks.initial and not s.cls.fresh_buffer:
                    init[i] = ks.initial[state][cols]
            coef = comp.coefficients(s.lr, s.params(), s.first_step(), s.active)
            self.parts.append((cols, comp, coef, {m: init.copy() for m in self.modes}))
        self.x0 = x0

    def advance(self, t0: int, t1: int) -> dict[str, np.ndarray]:
        """Forecast rows t0+1 … t1 (steps t0 … t1−1) in every mode: {mode: [t1 − t0, S]}."""
        from .scan import scan_affine

        L = t1 - t0
        names = {n for _, comp, _, _ in self.parts for n in comp.inputs}
        data = {n: np.asarray(self.ks[n][t0:t1], dtype=np.float64) for n in names}
        out = {m: np.empty((L, self.S)) for m in self.modes}
        for m in self.modes:
            brk = _brk_chunk(data[self.bcol], self.ks.starts, self.ref, m) if self.bcol in data else None
            for cols, comp, (A, C, c), state in self.parts:
                ins = [(brk if n == self.bcol else data[n])[:, cols] for n in comp.inputs]
                out[m][:, cols] = scan_affine(A[t0:t1], C[t0:t1], c[t0:t1], ins, state[m])
        return out


def forecast_exact(kind: str, ks: KindStats, sched: Sequence[ClassSchedule], T: int, mode: str) -> np.ndarray:
    """Per-slot exact forecast of the quantity, [T+1, S], free-running from row 0."""
    fc = ExactForecast(kind, ks, sched, T, (mode,))
    return np.vstack([fc.x0[None], fc.advance(0, T)[mode]])


class IdentityForecast:
    """The bookkeeping identity for any update rule, over chunks of steps: s_{n+1} = s_n + E_n,
    N_{n+1} = N_n + 2U_n + D_n (the log must hold the identity columns E / U)."""

    def __init__(self, kind: str, ks: KindStats) -> None:
        need = "E" if kind == "translation" else "U"
        if need not in ks:
            raise LawUnavailable(f"the log has no identity column {need} (it was written for SGD)")
        self.kind, self.ks = kind, ks
        self.x0 = np.asarray(ks[quantity_column(kind)][0], dtype=np.float64)
        self.x = self.x0.copy()

    def advance(self, t0: int, t1: int) -> np.ndarray:
        ks = self.ks
        if self.kind == "translation":
            inc = np.asarray(ks["E"][t0:t1], dtype=np.float64)
        else:
            inc = 2 * np.asarray(ks["U"][t0:t1], dtype=np.float64) + np.asarray(ks["D"][t0:t1], dtype=np.float64)
        out = self.x[None] + np.cumsum(inc, axis=0)
        if out.shape[0]:
            self.x = out[-1].copy()
        return out


def forecast_identity_any(kind: str, ks: KindStats, T: int) -> np.ndarray:
    """The bookkeeping identity for any update rule: s_{n+1} = s_n + E_n, N_{n+1} = N_n + 2U_n + D_n."""
    fc = IdentityForecast(kind, ks)
    return np.vstack([fc.x0[None], fc.advance(0, T)])


def dominant_classes(kind: str, ks: KindStats, sched: Sequence[ClassSchedule]) -> np.ndarray:
    """Per group, the trained class carrying most of its size at step 0 (any class if none is trained)."""
    size = np.abs(np.asarray(ks[scale_column(kind)][0], dtype=np.float64))
    weight = np.where([sched[c].cls.trained for c in ks.slot_class], size + 1.0, size - np.inf) \
        if ks.slot_class.size else size
    out = np.empty(ks.groups, dtype=np.int64)
    bounds = np.append(ks.starts, ks.slot_group.shape[0])
    for g in range(ks.groups):
        sl = np.arange(bounds[g], bounds[g + 1])
        out[g] = ks.slot_class[sl[int(np.argmax(weight[sl]))]]
    return out


def _totals(ks: KindStats, col: str, rows: slice) -> np.ndarray:
    x = np.asarray(ks[col][rows], dtype=np.float64)
    return np.add.reduceat(x, ks.starts, axis=1) if x.shape[1] else x


class ContinuousForecast:
    """The paper's continuous law per group, advanced over chunks of steps: the dominant class's
    coefficients (numeric/predict.py ``continuous_coefficients``) on the group totals."""

    def __init__(self, kind: str, ks: KindStats, sched: Sequence[ClassSchedule], T: int) -> None:
        self.kind, self.ks = kind, ks
        self.x0 = _totals(ks, quantity_column(kind), slice(0, 1))[0]
        dom = dominant_classes(kind, ks, sched)
        self.parts = []
        for cid in np.unique(dom):
            s = sched[int(cid)]
            cols = np.flatnonzero(dom == cid)
            if not s.cls.trained or not s.active[:T].any():
                self.parts.append((cols, None, None, None))
                continue
            spec = s.spec()
            if not spec.closed:
                raise LawUnavailable(f"{spec.describe()}: the update is not linear in the gradient; no continuous law")
            coef = continuous_coefficients(kind, spec, s.lr[:T], s.weight_decay[:T], s.momentum[:T],
                                           s.dampening[:T], s.active[:T])
            x = np.zeros((coef[0].shape[1], cols.size))
            x[0] = self.x0[cols]
            drive = None if kind == "translation" else ("D" if spec.momentum else "G")
            self.parts.append((cols, coef, x, drive))

    def advance(self, t0: int, t1: int) -> np.ndarray:
        """Rows t0+1 … t1 of the per-group forecast, [t1 − t0, G]."""
        from .scan import scan_affine

        L = t1 - t0
        out = np.empty((L, self.x0.shape[0]))
        totals: dict[str, np.ndarray] = {}
        for cols, coef, x, drive in self.parts:
            if coef is None:
                out[:, cols] = self.x0[cols]
                continue
            if drive is not None and drive not in totals:
                totals[drive] = _totals(self.ks, drive, slice(t0, t1))
            u = [totals[drive][:, cols]] if drive is not None else [np.zeros((L, cols.size))]
            A, C, c = coef
            out[:, cols] = scan_affine(A[t0:t1], C[t0:t1], c[t0:t1], u, x)
        return out


def forecast_continuous(kind: str, ks: KindStats, sched: Sequence[ClassSchedule], T: int) -> np.ndarray:
    """The paper's continuous law per group, [T+1, G]: the dominant class's coefficients on the totals."""
    fc = ContinuousForecast(kind, ks, sched, T)
    return np.vstack([fc.x0[None], fc.advance(0, T)])


def group_totals(ks: KindStats, per_slot: np.ndarray) -> np.ndarray:
    return np.add.reduceat(per_slot, ks.starts, axis=1) if per_slot.shape[1] else per_slot
