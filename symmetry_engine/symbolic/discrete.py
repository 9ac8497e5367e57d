"""Exact discrete-time laws: one optimizer step pushed through the group's form.

Method (theory.md §5 is the check, not the source).  The state of a group is the Gram data of the
state vectors (θ_n, v_n) under the family's form: N = B(θ,θ), W = B(θ,v), V = B(v,v) for scale /
rescale, s = ℓ(θ), m = ℓ(v) for translation.  One step of the rule is expanded with the bilinear
algebra; what appears besides the state are the inner products with ĝ_n: Q = B(ĝ,θ) = ⟨ĝ, ξ⟩ (the
gradient constraint makes it 0 under exact symmetry; it is kept so the laws stay exact when BN ε
breaks it), G = B(ĝ,ĝ) and R = B(ĝ,v).  R is never recorded: it is eliminated with the recorded step
statistic D = B(Δ,Δ), Δ = θ_{n+1} − θ_n.  States the quantity does not depend on are pruned, so the
law needs only what it must: (Q, G, η) for plain SGD, (Q, D, η) for heavy ball, (Q, G, D, η) for
Nesterov, (P, η) for translation.  The closed forms of theory.md (U-recurrence with its η_n/η_{n−1}
factor, the constant-η second-order recurrence) are then derived from this state form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .algebra import BilinearForm, LinearForm, Vec, ZERO, step_symbol
from .optimizers import BETA, DAMP, ETA, ETA_PREV, LAM, RuleSpec, sgd_step

STEP_NAMES = ("N", "W", "V", "U", "Q", "G", "D", "R", "s", "m", "P", "eta")


def sym(name: str, shift: int = 0) -> sp.Symbol:
    """Per-step statistic symbol (η carries the positivity assumption the optimizer uses)."""
    if name == "eta":
        return step_symbol("eta", shift, positive=True)
    return step_symbol(name, shift)


def latex(expr: sp.Basic) -> str:
    """LaTeX with Greek per-step names (η_{n−1} is a symbol named ``eta_{n-1}``)."""
    names = {sym("eta", j): rf"\eta_{{{lab}}}" for j, lab in ((-1, "n-1"), (1, "n+1"))}
    names[sp.Symbol("eta_0", positive=True)] = r"\eta_{0}"
    return sp.latex(expr, symbol_names=names)


def shift(expr: sp.Expr, by: int) -> sp.Expr:
    """Move every per-step symbol of ``expr`` from step n to step n + by."""
    return expr.xreplace({sym(k, 0): sym(k, by) for k in STEP_NAMES})


@dataclass(frozen=True)
class Recurrence:
    """A closed per-group recurrence: states at n+1 from states and recorded statistics at n."""

    quantity: str                       # "N" or "s"
    states: tuple[str, ...]             # e.g. ("N", "W"); the first is the quantity
    first: dict[str, sp.Expr]           # step 0 → 1 (PyTorch's undampened buffer fill)
    step: dict[str, sp.Expr]            # step n → n+1, n ≥ 1
    inputs: tuple[str, ...]             # recorded statistics the law needs (besides η_n)
    zero_states: tuple[str, ...] = ()   # states that start at 0 (they live in the momentum buffer)
    closed_forms: dict[str, sp.Eq] = field(default_factory=dict)

    def symbols(self) -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
        return tuple(sym(s) for s in self.states), tuple(sym(i) for i in self.inputs)


def _quadratic_form() -> BilinearForm:
    table = {("th", "th"): "N", ("th", "v"): "W", ("v", "v"): "V",
             ("g", "th"): "Q", ("g", "g"): "G", ("g", "v"): "R"}
    return BilinearForm("B", lambda a, b: sym(table[(a, b)]) if (a, b) in table else None)


def _linear_form() -> LinearForm:
    table = {"th": "s", "v": "m", "g": "P"}
    return LinearForm("l", lambda a: sym(table[a]) if a in table else None)


def _eliminate(expr: sp.Expr, target: sp.Symbol, d_expr: sp.Expr) -> sp.Expr:
    """Replace the part of ``expr`` carried by ``target`` by a multiple of the recorded D."""
    c_e = sp.expand(expr).coeff(target)
    if c_e == 0:
        return sp.expand(expr)
    c_d = sp.expand(d_expr).coeff(target)
    if c_d == 0:
        raise ValueError(f"{target} cannot be eliminated: D does not contain it")
    k = sp.cancel(c_e / c_d)
    rest_e, rest_d = sp.expand(expr).subs(target, 0), sp.expand(d_expr).subs(target, 0)
    return sp.expand(rest_e - k * rest_d + k * sym("D"))


def tidy(expr: sp.Expr) -> sp.Expr:
    """Collect a law on its statistics with factored coefficients (readable, same value)."""
    stats = [sym(k, j) for k in STEP_NAMES if k != "eta" for j in (0, -1)]
    return sp.collect(sp.expand(expr), [s for s in stats if expr.has(s)], sp.factor)


def _prune(step: dict[str, sp.Expr], root: str) -> list[str]:
    """States reachable from the quantity through the recurrence, in a stable order."""
    keep, todo = [root], [root]
    while todo:
        cur = todo.pop()
        for s in step:
            if s not in keep and step[cur].has(sym(s)):
                keep.append(s)
                todo.append(s)
    return [s for s in step if s in keep]


def _inputs(exprs: list[sp.Expr], candidates: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in candidates if any(e.has(sym(c)) for e in exprs))


def _quadratic_recurrence(spec: RuleSpec) -> Recurrence:
    B = _quadratic_form()
    th, v, g = Vec.of("th"), Vec.of("v"), Vec.of("g")
    th1, v1 = sgd_step(spec, th, v if spec.momentum else ZERO, g)
    d_expr = B(th1 - th, th1 - th)
    step = {"N": B(th1, th1)}
    if spec.momentum:
        step.update({"W": B(th1, v1), "V": B(v1, v1)})
    step = {k: _eliminate(e, sym("R"), d_expr) for k, e in step.items()}
    keep = _prune(step, "N")
    step = {k: step[k] for k in keep}
    inputs = _inputs(list(step.values()), ("Q", "G", "D"))

    f_th, f_v = sgd_step(spec, th, ZERO, g, damp=sp.Integer(0))
    first = {"N": B(f_th, f_th), "W": B(f_th, f_v), "V": B(f_v, f_v)}
    first = {k: first[k] for k in keep}
    if "G" not in inputs:  # keep one consistent set of recorded statistics
        f_d = B(f_th - th, f_th - th)
        first = {k: _eliminate(e, sym("G"), f_d) for k, e in first.items()}
    inputs = _inputs(list(step.values()) + list(first.values()), ("Q", "G", "D"))
    first, step = {k: tidy(e) for k, e in first.items()}, {k: tidy(e) for k, e in step.items()}
    rec = Recurrence("N", tuple(keep), first, step, inputs, tuple(k for k in keep if k != "N"))
    rec.closed_forms.update(_closed_forms(rec, spec, B))
    return rec


def _linear_recurrence(spec: RuleSpec) -> Recurrence:
    ell = _linear_form()
    th, v, g = Vec.of("th"), Vec.of("v"), Vec.of("g")
    th1, v1 = sgd_step(spec, th, v if spec.momentum else ZERO, g)
    step = {"s": ell(th1)}
    f_th, f_v = sgd_step(spec, th, ZERO, g, damp=sp.Integer(0))
    first = {"s": ell(f_th)}
    if spec.momentum:
        step["m"], first["m"] = ell(v1), ell(f_v)
    keep = _prune(step, "s")
    step, first = {k: step[k] for k in keep}, {k: first[k] for k in keep}
    rec = Recurrence("s", tuple(keep), first, step, ("P",), tuple(k for k in keep if k != "s"))
    rec.closed_forms["law"] = sp.Eq(sym("s", 1), step["s"])
    if spec.momentum:
        # Write the buffer recurrence in theory.md's u-notation: u_{n+1} = ℓ(v_{n+1}).
        u = sp.Function("u")
        n = sp.Symbol("n", integer=True)
        rec.closed_forms["buffer"] = sp.Eq(u(n + 1), step["m"].subs(sym("m"), u(n)))
        rec.closed_forms["buffer_first"] = sp.Eq(u(1), at_zero(first["m"]))
        rec.closed_forms["law_u"] = sp.Eq(sym("s", 1), sym("s") - ETA * u(n + 1))
    return rec


def at_zero(expr: sp.Expr) -> sp.Expr:
    """Write a step-n expression at n = 0 (X_n → X_0), for the first-step laws."""
    return expr.xreplace({sym(k): sp.Symbol(f"{k}_0", positive=(k == "eta") or None) for k in STEP_NAMES})


def _closed_forms(rec: Recurrence, spec: RuleSpec, B: BilinearForm) -> dict[str, sp.Eq]:
    """theory.md's presentations, derived from the state form."""
    out: dict[str, sp.Eq] = {}
    # Algebra identity: expand B(θ + Δ, θ + Δ) with U = B(θ, Δ), D = B(Δ, Δ).
    tab = {("th", "th"): "N", ("d", "th"): "U", ("d", "d"): "D"}
    Bu = BilinearForm("B", lambda a, b: sym(tab[(a, b)]) if (a, b) in tab else None)
    plus = Vec.of("th") + Vec.of("d")
    out["identity"] = sp.Eq(sym("N", 1), Bu(plus, plus))
    if rec.states == ("N",):
        out["law"] = sp.Eq(sym("N", 1), sp.collect(rec.step["N"], [sym("N"), sym("Q"), sym("G")],
                                                       sp.factor))
        return out
    if rec.states != ("N", "W"):
        return out  # Nesterov: the state form (N, W, V) is the law; no two-term U-form exists.
    # U_n = B(θ_n, Δ_n) in state form: (N_{n+1} − N_n − D_n)/2 by the identity.
    u_state = sp.expand((rec.step["N"] - sym("N") - sym("D")) / 2)
    u_first = sp.expand((rec.first["N"] - sym("N") - sym("D")) / 2)
    w_prev = sym("W", -1)
    solved = sp.solve(sp.Eq(sym("U", -1), shift(u_state, -1)), w_prev)
    if len(solved) != 1:
        return out
    w_n = shift(rec.step["W"], -1).subs(w_prev, solved[0])
    u_rec = sp.expand(u_state.subs(sym("W"), w_n))
    extra = u_rec.free_symbols - {sym("U", -1), sym("D", -1), sym("N"), sym("Q"), ETA, ETA_PREV,
                                  LAM, BETA, DAMP}
    if extra:
        return out  # e.g. decoupled decay: U_n also needs N_{n-1}; the state form is the law
    out["U_first"] = sp.Eq(sp.Symbol("U_0"), sp.factor(at_zero(u_first)))
    out["U"] = sp.Eq(sym("U"), sp.collect(u_rec, [BETA * ETA / ETA_PREV, ETA], sp.factor))
    out["U_raw"] = sp.Eq(sym("U"), u_rec)
    # Constant η, eliminate U with the identity: a two-step recurrence for N alone.
    eta = sp.Symbol("eta", positive=True)
    u_prev = (sym("N") - sym("N", -1) - sym("D", -1)) / 2
    n_next = sym("N") + 2 * u_rec.subs(sym("U", -1), u_prev) + sym("D")
    n_next = sp.expand(n_next.subs({ETA: eta, ETA_PREV: eta}))
    out["second_order"] = sp.Eq(sym("N", 1), sp.collect(n_next, [sym("N"), sym("N", -1), sym("D"),
                                                                sym("D", -1), sym("Q")], sp.factor))
    a = n_next.coeff(sym("N"))
    z = sp.Symbol("z")
    out["characteristic"] = sp.Eq(z**2 - a * z - n_next.coeff(sym("N", -1)), 0)
    out["discriminant"] = sp.Eq(sp.Symbol("Delta"), sp.expand(a**2 + 4 * n_next.coeff(sym("N", -1))))
    return out


def derive_recurrence(quadratic: bool, spec: RuleSpec) -> Recurrence:
    """The exact law for a family with a quadratic (True) or linear (False) conserved quantity."""
    if not spec.closed:
        raise ValueError(f"{spec.describe()}: no closed discrete law (see bookkeeping_identity)")
    return _quadratic_recurrence(spec) if quadratic else _linear_recurrence(spec)


def bookkeeping_identity() -> dict[str, object]:
    """The exact identity that holds for any update (Adam included) and the terms that break the law."""
    tab = {("th", "th"): "N", ("d", "th"): "U", ("d", "d"): "D"}
    Bu = BilinearForm("B", lambda a, b: sym(tab[(a, b)]) if (a, b) in tab else None)
    plus = Vec.of("th") + Vec.of("d")
    return {
        "identity": sp.Eq(sym("N", 1), Bu(plus, plus)),
        "breaking_terms": {
            "U_n": "⟨θ_n, Δ_n⟩_A: the preconditioned step P_n m̂_n is not orthogonal to θ_A even though "
                   "⟨ĝ_n, θ_A⟩ = 0, because the diagonal preconditioner 1/(√ŝ+ε) does not commute with "
                   "the group's inner product; it is not a function of per-group statistics",
            "D_n": "|Δ_n|²_A: the squared step, recorded",
            "weight decay": "coupled λθ is preconditioned too; decoupled decay gives (1−η_nλ)² N_n exactly",
        },
    }
