"""Numeric laws over recorded per-group statistics (numpy/scipy), built from the symbolic engine.

* :func:`predict_exact` — the exact discrete law (theory.md §5) compiled by the engine, run as a
  free-running forecast from the first record using only the statistics the law needs.
* :func:`predict_continuous` — the paper's continuous dynamics (theory.md §4), with the ODE
  coefficients (decay, drive, γ, ω²) taken from the engine's projected modified flow.

Learning-rate schedules.  Exact laws use η_n per step (the engine derives them for any schedule).
Continuous laws use the time t_n = Σ_{k<n} h_k with h_k = η_k (plain SGD) or η_k(1 − d) (momentum);
the first-order law is a per-step recurrence with the local η_k; the oscillator's coefficients
γ(η), ω²(η) are frozen on each maximal run of constant η and the state (x, dx/dt) is carried across
the boundaries (exact for piecewise-constant schedules, a frozen-coefficient approximation for
smooth ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import sympy as sp

from ..symbolic import RuleSpec, compiled_recurrence, derive_laws
from ..symbolic.modified import H_STEP
from ..symbolic.optimizers import BETA, DAMP, LAM

KINDS = ("translation", "scale", "rescale")


class LawUnavailable(ValueError):
    """No law of the requested kind exists for this optimizer (e.g. Adam, or Nesterov continuous)."""


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer a run used (run.json ``optimizer``)."""

    rule: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False

    def rule_spec(self) -> RuleSpec:
        """The structure the engine derives laws for (momentum > 0 means a buffer exists)."""
        if self.rule == "sgd" and self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        return RuleSpec(self.rule, self.momentum > 0, self.nesterov, self.decoupled_weight_decay)

    def params(self) -> dict[str, float]:
        return {"lambda": float(self.weight_decay), "beta": float(self.momentum), "d": float(self.dampening)}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OptimizerConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


NESTEROV_MIN_MOMENTUM = 1e-280  # below it the Nesterov law's 1/β terms can overflow float64


def quantity_column(kind: str) -> str:
    """The run-log column holding the conserved quantity: ``s`` (translation) or ``N``."""
    _check_kind(kind)
    return "s" if kind == "translation" else "N"


def scale_column(kind: str) -> str:
    """The unsigned magnitude column used to normalize errors: ``A`` (translation) or ``M``."""
    _check_kind(kind)
    return "A" if kind == "translation" else "M"


def required_columns(kind: str, opt: OptimizerConfig) -> tuple[str, ...]:
    """Run-log columns the exact law reads (besides η), as derived by the engine."""
    laws = derive_laws(kind, opt.rule_spec())
    return tuple(c for c in laws.required_statistics if c != "eta")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown symmetry kind {kind!r}; known: {', '.join(KINDS)}")


def _prepare(kind: str, stats: Mapping[str, np.ndarray], lrs: np.ndarray) -> tuple[np.ndarray, int]:
    _check_kind(kind)
    lrs = np.asarray(lrs, dtype=np.float64).reshape(-1)
    col = quantity_column(kind)
    if col not in stats:
        raise KeyError(f"stats lack the {col!r} column")
    x = np.asarray(stats[col])
    if x.ndim != 2 or x.shape[0] < lrs.shape[0] + 1:
        raise ValueError(f"stats[{col!r}] must be [T+1, G] with T = len(lrs) = {lrs.shape[0]}")
    return lrs, x.shape[1]


def _closed_rule(kind: str, stats: Mapping[str, np.ndarray], lrs: np.ndarray, opt: OptimizerConfig,
                 why_not: str) -> tuple[np.ndarray, int, RuleSpec]:
    """Checked inputs and the rule's structure; ``why_not`` says what is missing for a non-linear rule."""
    lrs, G = _prepare(kind, stats, lrs)
    spec = opt.rule_spec()
    if not spec.closed:
        raise LawUnavailable(f"{spec.describe()}: {why_not}")
    return lrs, G, spec


def predict_exact(kind: str, stats: Mapping[str, np.ndarray], lrs: np.ndarray,
                  opt: OptimizerConfig) -> np.ndarray:
    """Exact discrete law of one class with constant (λ, β, d), free-running from row 0: [T+1, G].

    Runs are evaluated per member class by numeric/class_laws.py; this is the one-class form."""
    lrs, G, spec = _closed_rule(kind, stats, lrs, opt, "no closed exact law; only N_(n+1) = N_n + 2U_n + D_n holds")
    if opt.nesterov and opt.momentum < NESTEROV_MIN_MOMENTUM:
        # the Nesterov state form eliminates an unrecorded inner product through D/β; it is accurate down to
        # β ~ 1e-200 (tested) but products with 1/β overflow float64 near the subnormal range
        raise LawUnavailable(f"Nesterov momentum {opt.momentum!r} is below {NESTEROV_MIN_MOMENTUM:g}: "
                             "its exact law divides by it (subnormal range)")
    comp = compiled_recurrence(kind, spec)
    T = lrs.shape[0]
    x0 = np.asarray(stats[quantity_column(kind)], dtype=np.float64)[0]
    init = np.zeros((len(comp.states), G))
    init[0] = x0
    missing = [c for c in comp.inputs if c not in stats]
    if missing:
        raise KeyError(f"stats lack columns {missing} needed by the exact {kind} law")
    inputs = {c: np.asarray(stats[c], dtype=np.float64)[:T] for c in comp.inputs}
    return comp.run(init, inputs, lrs, opt.params())


@lru_cache(maxsize=None)
def _continuous_coeffs(kind: str, spec: RuleSpec):
    """lambdified ODE coefficients of the engine's continuous law for (kind, rule)."""
    law = derive_laws(kind, spec).continuous
    if not law.closed:
        raise LawUnavailable(f"{spec.describe()}: {law.reason}")
    args = (H_STEP, LAM, BETA, DAMP)
    if law.order == 1:
        return 1, sp.lambdify(args, law.decay), sp.lambdify(args, law.drive_coeff)
    K = sp.Symbol("K")
    drive_per_k = sp.expand(law.drive).coeff(K)  # drive = c·|θ'|², |θ'|² ≈ D_n / h²
    return 2, sp.lambdify(args, law.gamma), sp.lambdify(args, law.omega2), sp.lambdify(args, drive_per_k)


def _zoh(gamma: np.ndarray, omega2: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact zero-order-hold discretization of x'' + 2γx' + ω²x = f over steps h: Φ [n, 2, 2], Γ [n, 2]."""
    import scipy.linalg  # lazy: keeps `nmech laws` (which never integrates) fast to start

    M = np.zeros((len(h), 3, 3))
    M[:, 0, 1], M[:, 1, 0], M[:, 1, 1], M[:, 1, 2] = 1.0, -omega2, -2.0 * gamma, 1.0
    E = scipy.linalg.expm(M * np.asarray(h)[:, None, None])
    return E[:, :2, :2], E[:, :2, 2]


def continuous_coefficients(kind: str, spec: RuleSpec, lrs: np.ndarray, lam: np.ndarray, beta: np.ndarray,
                            damp: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The continuous law as a per-step affine recurrence for numeric/scan.py: ``A [T, k, k]``, ``C [T, k, 1]``
    (the drive D or G per step; translation has none), ``c [T, k]``.

    First order (plain SGD): x' = −a x + b F with F held over the step: x ← e^{−ah} x + b φ F, φ = ∫_0^h e^{−as} ds
    (exact per step, no growth). Second order (momentum): the state (x, x') under the exact zero-order hold
    of x'' + 2γx' + ω²x = f, with γ, ω² frozen on every maximal run of constant (η, λ, β, d). Idle steps
    (class not updated) and h = 0 hold the state."""
    coeffs = _continuous_coeffs(kind, spec)
    lrs = np.asarray(lrs, dtype=np.float64)
    T = lrs.shape[0]
    k = coeffs[0]
    A = np.zeros((T, k, k))
    C = np.zeros((T, k, 1))
    c = np.zeros((T, k))
    A[:] = np.eye(k)
    p = (np.asarray(lam, dtype=np.float64), np.asarray(beta, dtype=np.float64), np.asarray(damp, dtype=np.float64))
    on = np.asarray(active, dtype=bool)
    if k == 1:
        h = lrs
        a = np.broadcast_to(np.asarray(coeffs[1](h, *p), dtype=np.float64), (T,))
        b = np.broadcast_to(np.asarray(coeffs[2](h, *p), dtype=np.float64), (T,))
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.where(a != 0, -np.expm1(-a * h) / np.where(a != 0, a, 1.0), h)
        A[on, 0, 0] = np.exp(-a * h)[on]
        C[on, 0, 0] = (b * phi)[on]
        return A, C, c
    _, gam_f, om_f, drive_f = coeffs
    key = np.stack([lrs, *p, on.astype(float)], 1)
    change = np.flatnonzero(np.any(key[1:] != key[:-1], axis=1)) + 1
    starts = np.concatenate([[0], change]).astype(int)
    stops = np.concatenate([change, [T]]).astype(int)
    h = lrs[starts] * (1.0 - p[2][starts])
    run = on[starts] & (h > 0)
    if run.any():
        hs, ps = h[run], tuple(x[starts[run]] for x in p)
        bc = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), hs.shape)  # noqa: E731
        Phi, Gam = _zoh(bc(gam_f(hs, *ps)), bc(om_f(hs, *ps)), hs)
        force = bc(drive_f(hs, *ps)) / hs ** 2
        seg = np.repeat(np.arange(len(starts)), stops - starts)  # segment of every step
        idx = np.full(len(starts), -1)
        idx[run] = np.arange(run.sum())
        j = idx[seg]
        m = j >= 0
        A[m] = Phi[j[m]]
        C[m, :, 0] = Gam[j[m]] * force[j[m]][:, None]
    return A, C, c


def predict_continuous(kind: str, stats: Mapping[str, np.ndarray], lrs: np.ndarray,
                       opt: OptimizerConfig) -> np.ndarray:
    """The paper's continuous dynamics (theory.md §4) for one class, [T+1, G]; see the module doc."""
    lrs, G, spec = _closed_rule(kind, stats, lrs, opt, "the update is not linear in the gradient; no continuous law")
    T = lrs.shape[0]
    x0 = np.asarray(stats[quantity_column(kind)], dtype=np.float64)[0]
    drive = None
    if kind != "translation":
        drive = np.asarray(stats["D" if spec.momentum else "G"], dtype=np.float64)[:T]
    full = lambda v: np.full(T, float(v))  # noqa: E731
    return continuous_for_class(kind, spec, x0, drive, lrs, full(opt.weight_decay), full(opt.momentum),
                                full(opt.dampening), np.ones(T, dtype=bool))


def continuous_for_class(kind: str, spec: RuleSpec, x0: np.ndarray, drive: np.ndarray | None, lrs: np.ndarray,
                         lam: np.ndarray, beta: np.ndarray, damp: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Continuous law with per-step hyper-parameters, [T+1, G]: coefficients frozen on every maximal run of
    constant (η, λ, β, d); the state is carried across; idle steps (class not updated) hold it."""
    from .scan import scan_affine

    if not spec.closed:
        raise LawUnavailable(f"{spec.describe()}: the update is not linear in the gradient; no continuous law")
    A, C, c = continuous_coefficients(kind, spec, lrs, lam, beta, damp, active)
    T, G = np.asarray(lrs).shape[0], x0.shape[0]
    out = np.empty((T + 1, G))
    out[0] = x0
    x = np.zeros((A.shape[1], G))
    x[0] = x0
    inputs = [np.asarray(drive)[:T]] if kind != "translation" else [np.zeros((T, G))]
    if T:
        scan_affine(A, C, c, inputs, x, out=out[1:])
    return out
