"""Optimizer rules as update expressions over abstract vectors.

A rule maps the state (θ_n, v_n) and the minibatch gradient ĝ_n to (θ_{n+1}, v_{n+1}) with scalar
coefficients η_n (per-step learning rate), λ (weight decay), β (momentum) and d (dampening).  The
structure (momentum buffer or not, Nesterov, coupled or decoupled decay) is fixed by a
:class:`RuleSpec`; the numbers stay symbolic so one derivation serves every setting of them, and the
laws are cached per structure.

PyTorch's ``torch.optim.SGD`` semantics are reproduced exactly: the first step fills the buffer with
the undampened direction (v_1 = d_0), later steps v_{n+1} = β v_n + (1 − d) d_n; with Nesterov the
step direction is d_n + β v_{n+1}.  Decoupled weight decay (SGDW/AdamW style) shrinks θ by (1 − η_n λ)
and leaves λ out of the buffer.  Adam is a rule the engine knows but for which no closed law exists:
its elementwise preconditioner does not commute with the group's inner products.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .algebra import ZERO, Vec, step_symbol

ETA = step_symbol("eta", 0, positive=True)
ETA_PREV = step_symbol("eta", -1, positive=True)
LAM = sp.Symbol("lambda", nonnegative=True)
BETA = sp.Symbol("beta", nonnegative=True)
DAMP = sp.Symbol("d", nonnegative=True)
PARAMS = (LAM, BETA, DAMP)
RULES = ("sgd", "adam")


@dataclass(frozen=True)
class RuleSpec:
    """The structure of an update rule; numeric hyper-parameters are symbols in the derivations."""

    rule: str = "sgd"
    momentum: bool = False
    nesterov: bool = False
    decoupled: bool = False

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown optimizer rule {self.rule!r}; known: {', '.join(RULES)}")
        if self.nesterov and not self.momentum:
            raise ValueError("Nesterov momentum requires a momentum > 0")

    @property
    def key(self) -> tuple[str, bool, bool, bool]:
        return (self.rule, self.momentum, self.nesterov, self.decoupled)

    @property
    def closed(self) -> bool:
        """Whether the rule is linear in (θ, v, ĝ) with scalar coefficients (closed laws exist)."""
        return self.rule == "sgd"

    def describe(self) -> str:
        if self.rule == "adam":
            return "Adam" + ("W (decoupled weight decay)" if self.decoupled else "")
        parts = ["SGD"]
        if self.momentum:
            parts.append("Nesterov momentum" if self.nesterov else "heavy-ball momentum (dampening d)")
        parts.append("decoupled weight decay" if self.decoupled else "coupled weight decay")
        return ", ".join(parts)


def sgd_step(spec: RuleSpec, theta: Vec, v: Vec, g: Vec, *, eta: sp.Expr = ETA,
             damp: sp.Expr = DAMP) -> tuple[Vec, Vec]:
    """One ``torch.optim.SGD`` step on abstract vectors; returns (θ_{n+1}, v_{n+1}).

    For the first step pass ``v = ZERO`` and ``damp = 0`` (PyTorch sets v_1 = d_0 undampened).
    Without momentum the returned buffer is ZERO.
    """
    if not spec.closed:
        raise ValueError(f"{spec.describe()}: not a linear update rule")
    direction = g if spec.decoupled else g + theta * LAM
    if spec.momentum:
        v_next = v * BETA + direction * (1 - damp)
        step = direction + v_next * BETA if spec.nesterov else v_next
    else:
        v_next = ZERO
        step = direction
    shrink = (1 - eta * LAM) if spec.decoupled else sp.Integer(1)
    return theta * shrink - step * eta, v_next


def adam_update_latex() -> str:
    """The Adam(W) update, for the report of why no closed law exists."""
    return (r"m_{n+1} = \beta_1 m_n + (1-\beta_1)\hat g_n,\; "
            r"s_{n+1} = \beta_2 s_n + (1-\beta_2)\hat g_n^{\odot 2},\; "
            r"\theta_{n+1} = \theta_n - \eta_n \frac{\hat m_{n+1}}{\sqrt{\hat s_{n+1}}+\epsilon}")
