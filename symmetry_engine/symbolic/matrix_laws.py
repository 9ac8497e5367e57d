"""Exact discrete laws for a GL(r) conserved matrix C = Σ_M X Xᵀ − Σ_{M⁻ᵀ} Y Yᵀ under SGD rules.

Why a matrix algebra: the state is r×r, and products do not commute, so the scalar forms of
``algebra.py`` cannot hold it.  The optimizer rule is still taken from ``optimizers.sgd_step`` (one
source of PyTorch semantics): it maps formal vectors θ, v, ĝ to formal vectors with scalar
coefficients.  A matrix symmetry acts on *members*: r-row views X_i = [r, rest_i] of parameter slices,
left-multiplied by M (act "M") or by M⁻ᵀ (act "M^-T"); a Linear pair is (W1, b1) with act M and W2ᵀ
with act M⁻ᵀ, an attention head (W_Q, b_Q | W_K, b_K) or (W_V, b_V | W_Oᵀ).  Each formal basis vector
is realized as one sympy matrix symbol per member (θ → (X_1, …, X_p), ĝ → (G_1, …, G_p), ...), and the
pairing P(a, b) = Σ_M a_i b_iᵀ − Σ_{M⁻ᵀ} b_j a_jᵀ is expanded by sympy's noncommutative algebra.  The
order in the M⁻ᵀ members is forced by the action (the constraint's coefficient of A is Σ G_X Xᵀ −
Σ Y G_Yᵀ, see ``matrix_members.py``), and P(b, a) = P(a, b)ᵀ.  Reading off the products checks that the
result closes on pairings (every member gives the same coefficient for P(x, y): the optimizer acts by
scalars) and names them: C = P(θ,θ), Q = P(ĝ,θ) (0 under the symmetry; kept, so the laws stay exact),
Qᵀ = P(θ,ĝ), Γ = P(ĝ,ĝ), U = P(θ,Δ), D = P(Δ,Δ) with Δ = θ_{n+1} − θ_n.  The derivation runs per act
signature (the tuple of acts); the tests check that every signature gives the same law.

Heavy ball: the buffer is eliminated by solving the previous update for v_n in terms of θ_n and
θ_{n−1} = θ_n − Δ_{n−1}; then U_n = P(θ_n, Δ_n) needs P(θ_n, Δ_{n−1}), which the same algebra
expands into U_{n−1} + D_{n−1}.  A law is a dict {matrix atom: scalar coefficient}; atoms are
matrix symbols or their transposes, so numeric evaluation is a weighted sum of stacked arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import sympy as sp

from .algebra import ZERO, Vec
from .optimizers import BETA, DAMP, ETA, ETA_PREV, LAM, RuleSpec, sgd_step

R = sp.Symbol("r", integer=True, positive=True)
MatLaw = dict[sp.MatrixExpr, sp.Expr]
PARAMS = (ETA, ETA_PREV, LAM, BETA, DAMP)


def stat(name: str, step: str = "n") -> sp.MatrixSymbol:
    """The r×r statistic ``name_{step}`` (C_n, Q_n, Gamma_n, U_{n-1}, ...)."""
    return sp.MatrixSymbol(f"{name}_{{{step}}}" if len(step) > 1 else f"{name}_{step}", R, R)


ACTS = ("M", "M^-T")
PAIR_ACTS = ("M", "M^-T")     # a Linear pair: [W1 | b1] acted on by M, W2ᵀ by M⁻ᵀ


def _check_acts(acts: tuple[str, ...]) -> None:
    if not acts or any(a not in ACTS for a in acts):
        raise ValueError(f"acts must be a non-empty tuple of {ACTS}, got {acts!r}")


def _member(name: str, i: int) -> sp.MatrixSymbol:
    """Basis vector ``name`` realized on member i: an r × k_i matrix (the member's [r, rest] view)."""
    return sp.MatrixSymbol(f"{name}#{i}", R, sp.Symbol(f"k{i}", integer=True, positive=True))


def pairing(u: Vec, w: Vec, acts: tuple[str, ...] = PAIR_ACTS) -> sp.MatrixExpr:
    """P(u, w) = Σ_{act M} u_i w_iᵀ − Σ_{act M⁻ᵀ} w_j u_jᵀ, each basis vector realized per member."""
    _check_acts(acts)

    def realize(v: Vec, i: int) -> sp.MatrixExpr:
        terms = [c * _member(n, i) for n, c in sorted(v.terms.items())]
        return sp.MatAdd(*terms).doit() if terms else sp.ZeroMatrix(R, _member("z", i).shape[1])

    total = []
    for i, act in enumerate(acts):
        ui, wi = realize(u, i), realize(w, i)
        total.append(ui * wi.T if act == "M" else -(wi * ui.T))
    return sp.expand(sp.MatAdd(*total).doit())


def _name(x: sp.MatrixExpr) -> tuple[str, int, bool]:
    """(basis name, member index, transposed) of a member factor such as th#0, g#2.T."""
    t = isinstance(x, sp.Transpose)
    name, idx = (x.arg if t else x).name.rsplit("#", 1)
    return name, int(idx), t


def _factors(term: sp.Expr) -> list[sp.Expr]:
    """The factors of a (possibly nested, unflattened) matrix product, scalars included."""
    if isinstance(term, sp.MatMul):
        return [f for a in term.args for f in _factors(a)]
    return [term]


def pair_coefficients(expr: sp.MatrixExpr, acts: tuple[str, ...] = PAIR_ACTS) -> dict[tuple[str, str], sp.Expr]:
    """Read P-coefficients off an expanded pairing; raise if it does not close on pairings.

    On an M member a term c·x_i y_iᵀ belongs to P(x, y) with coefficient c; on an M⁻ᵀ member it is
    the −w_j u_jᵀ part of P(y, x), so it contributes −c to P(y, x).  Every member must agree.
    """
    per_member: list[dict[tuple[str, str], sp.Expr]] = [{} for _ in acts]
    for term in expr.args if isinstance(expr, sp.MatAdd) else (expr,):
        if term == 0 or isinstance(term, sp.ZeroMatrix):
            continue
        args = _factors(term)
        coeff = sp.Mul(*[a for a in args if not getattr(a, "is_Matrix", False)])
        factors = [a for a in args if getattr(a, "is_Matrix", False)]
        if len(factors) != 2:
            raise ValueError(f"unexpected term {term} in a pairing")
        (a, i, ta), (b, j, tb) = _name(factors[0]), _name(factors[1])
        if i != j or (ta, tb) != (False, True):
            raise ValueError(f"term {term} is not of the form x_i y_i^T on one member")
        key, c = ((a, b), coeff) if acts[i] == "M" else ((b, a), -coeff)
        per_member[i][key] = per_member[i].get(key, 0) + c
    ref = per_member[0]
    for i, other in enumerate(per_member[1:], 1):
        for key in set(ref) | set(other):
            if sp.simplify(ref.get(key, 0) - other.get(key, 0)) != 0:
                raise ValueError(f"members 0 and {i} disagree on P{key}: the update does not act by scalars")
    return {k: sp.factor(v) for k, v in ref.items() if sp.simplify(v) != 0}


def name_pairs(coeffs: Mapping[tuple[str, str], sp.Expr],
               table: Mapping[tuple[str, str], sp.MatrixExpr | MatLaw]) -> MatLaw:
    """Replace P(a, b) by named statistics (P(b, a) = P(a, b)ᵀ); an entry may itself be a law."""
    out: MatLaw = {}
    for (a, b), c in coeffs.items():
        if (a, b) in table:
            val = table[(a, b)]
        elif (b, a) in table:
            val = transpose_law(as_law(table[(b, a)]))
        else:
            raise ValueError(f"P({a},{b}) is not a recorded statistic")
        for atom, k in as_law(val).items():
            out[atom] = sp.factor(out.get(atom, 0) + c * k)
    return {a: c for a, c in out.items() if c != 0}


def as_law(x: sp.MatrixExpr | MatLaw) -> MatLaw:
    return dict(x) if isinstance(x, dict) else {x: sp.Integer(1)}


def _symmetric(atom: sp.MatrixExpr) -> bool:
    base = atom.arg if isinstance(atom, sp.Transpose) else atom
    return base.name.split("_")[0] in ("C", "D", "Gamma")


def transpose_law(law: MatLaw) -> MatLaw:
    out: MatLaw = {}
    for atom, c in law.items():
        t = atom if _symmetric(atom) else (atom.arg if isinstance(atom, sp.Transpose) else atom.T)
        out[t] = out.get(t, 0) + c
    return out


def law_expr(law: MatLaw) -> sp.MatrixExpr:
    return sp.MatAdd(*[c * a for a, c in law.items()])


_LATEX_NAMES = {ETA_PREV: r"\eta_{n-1}", sp.Symbol("eta_0", positive=True): r"\eta_{0}"}


def at_first_step(law: MatLaw) -> MatLaw:
    """Write a step-n law at n = 0 (η_n → η_0, C_n → C_0, Q_n → Q_0) for display."""
    rename = {stat("C"): stat("C", "0"), stat("Q"): stat("Q", "0")}
    out: MatLaw = {}
    for atom, c in law.items():
        a = atom.xreplace(rename)
        out[a] = c.xreplace({ETA: sp.Symbol("eta_0", positive=True)})
    return out


def law_latex(lhs: sp.MatrixExpr, law: MatLaw) -> str:
    def term(a: sp.MatrixExpr, c: sp.Expr) -> str:
        body = sp.latex(a)
        return body if c == 1 else rf"\left({sp.latex(c, symbol_names=_LATEX_NAMES)}\right) {body}"
    return sp.latex(lhs) + " = " + " + ".join(term(a, c) for a, c in law.items())


def law_text(lhs: sp.MatrixExpr, law: MatLaw) -> str:
    return f"{lhs} = " + " + ".join(f"({c})*{a}" for a, c in law.items())


@dataclass(frozen=True)
class MatrixLaws:
    """Exact laws for C under one SGD rule; the statistics a tracker records are r×r matrices."""

    spec: RuleSpec
    identity: MatLaw                    # C_{n+1} = C_n + U_n + U_nᵀ + D_n
    law: MatLaw | None                  # plain SGD: C_{n+1} from C_n, Q_n, Γ_n
    u_first: MatLaw | None = None       # heavy ball: U_0
    u_step: MatLaw | None = None        # heavy ball: U_n from U_{n−1}, D_{n−1}, C_n, Q_n
    required: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)
    acts: tuple[str, ...] = PAIR_ACTS   # the member act signature the law was derived for

    def _sections(self, fmt) -> dict[str, str]:
        out = {"identity": fmt(stat("C", "n+1"), self.identity)}
        if self.law is not None:
            out["law"] = fmt(stat("C", "n+1"), self.law)
        if self.u_step is not None:
            out["U_first"] = fmt(stat("U", "0"), at_first_step(self.u_first))
            out["U"] = fmt(stat("U"), self.u_step)
        out["required_statistics"] = ", ".join(self.required)
        return out

    def latex(self) -> dict[str, str]:
        return self._sections(law_latex)

    def text(self) -> dict[str, str]:
        return {**self._sections(law_text), **self.notes}


def _buffer_in_terms_of_steps(spec: RuleSpec) -> Vec:
    """v_n as a Vec over {th (θ_n), dp (Δ_{n−1})}, solved from the previous update."""
    th_n, v_n = sgd_step(spec, Vec.of("thp"), Vec.of("vp"), Vec.of("gp"), eta=ETA_PREV)
    a, b = sp.symbols("a_v b_v")
    resid = v_n - th_n * a - Vec.of("thp") * b
    sol = sp.solve(list(resid.terms.values()), [a, b], dict=True)
    if len(sol) != 1:
        raise ValueError(f"{spec.describe()}: the buffer is not determined by (θ_n, θ_n−1); no U-form")
    a_s, b_s = sol[0][a], sol[0][b]
    return Vec.of("th") * (a_s + b_s) - Vec.of("dp") * b_s


@lru_cache(maxsize=None)
def derive_member_laws(spec: RuleSpec = RuleSpec(), acts: tuple[str, ...] = PAIR_ACTS) -> MatrixLaws:
    """Expand one step of ``spec`` through the member pairing of ``acts`` and name the statistics."""
    if not spec.closed or spec.nesterov:
        raise ValueError(f"{spec.describe()}: no matrix law derived (needs plain or heavy-ball SGD)")
    acts = tuple(acts)

    def coeffs(u: Vec, w: Vec) -> dict[tuple[str, str], sp.Expr]:
        return pair_coefficients(pairing(u, w, acts), acts)

    th, g, dl = Vec.of("th"), Vec.of("g"), Vec.of("d")
    ident_tab = {("th", "th"): stat("C"), ("th", "d"): stat("U"), ("d", "d"): stat("D")}
    identity = name_pairs(coeffs(th + dl, th + dl), ident_tab)
    base = {("th", "th"): stat("C"), ("g", "th"): stat("Q"), ("g", "g"): stat("Gamma")}
    if not spec.momentum:
        th1, _ = sgd_step(spec, th, ZERO, g)
        law = name_pairs(coeffs(th1, th1), base)
        return MatrixLaws(spec, identity, law, required=("Q", "Gamma", "eta"), acts=acts,
                          notes={"state": "C_0; Q and Gamma enter only through Q + Q^T and Gamma"})
    # P(θ_n, Δ_{n−1}) with θ_n = θ_{n−1} + Δ_{n−1}: derived, not assumed.
    prev = {("thp", "dp"): stat("U", "n-1"), ("dp", "dp"): stat("D", "n-1")}
    carried = name_pairs(coeffs(Vec.of("thp") + Vec.of("dp"), Vec.of("dp")), prev)
    th1, _ = sgd_step(spec, th, _buffer_in_terms_of_steps(spec), g)
    u_step = name_pairs(coeffs(th, th1 - th), {**base, ("th", "dp"): carried})
    f_th1, _ = sgd_step(spec, th, ZERO, g, damp=sp.Integer(0))
    u_first = name_pairs(coeffs(th, f_th1 - th), base)
    return MatrixLaws(spec, identity, None, u_first, u_step, required=("Q", "D", "eta"), acts=acts,
                      notes={"state": "C_0 and U (starts from U_0); C needs only U + U^T, so the "
                                      "symmetric part of Q suffices"})


def derive_matrix_laws(spec: RuleSpec = RuleSpec()) -> MatrixLaws:
    """The laws of a Linear pair (acts M on [W1 | b1], M⁻ᵀ on W2ᵀ); see :func:`derive_member_laws`."""
    return derive_member_laws(spec, PAIR_ACTS)


def _atom_key(atom: sp.MatrixExpr) -> tuple[str, bool]:
    base = atom.arg if isinstance(atom, sp.Transpose) else atom
    name = base.name.replace("{", "").replace("}", "")
    return name.rsplit("_", 1)[0] + ("_prev" if name.endswith("n-1") else ""), isinstance(atom, sp.Transpose)


def compile_law(law: MatLaw) -> Callable[..., np.ndarray]:
    """lambdify a law into f(arrays, eta, eta_prev, lam, beta, d) vectorized over stacked matrices.

    ``arrays`` maps statistic names (C, Q, Gamma, U, D, U_prev, D_prev) to arrays [..., r, r]; the
    step-size arguments may be arrays broadcasting against the leading axes.
    """
    parts = [(_atom_key(a), sp.lambdify(PARAMS, c, modules="numpy")) for a, c in law.items()]

    def f(arrays: Mapping[str, np.ndarray], eta, eta_prev=1.0, lam=0.0, beta=0.0, d=0.0) -> np.ndarray:
        total = 0.0
        for (name, transposed), fn in parts:
            x = np.asarray(arrays[name], dtype=np.float64)
            coef = np.asarray(fn(eta, eta_prev, lam, beta, d), dtype=np.float64)
            total = total + coef[..., None, None] * (np.swapaxes(x, -1, -2) if transposed else x)
        return np.asarray(total)
    return f


def forecast_matrix(spec: RuleSpec, C0: np.ndarray, stats: Mapping[str, np.ndarray], lrs: np.ndarray,
                    lam: float = 0.0, beta: float = 0.0, d: float = 0.0,
                    acts: tuple[str, ...] = PAIR_ACTS) -> np.ndarray:
    """Free-running forecast of C: C_0 [..., r, r], stats[name] [T, ..., r, r] → [T+1, ..., r, r].

    ``lrs`` is [T] or [T, ...] (one η_n per stacked symmetry, broadcasting against C_0's leading axes).
    """
    laws = derive_member_laws(spec, tuple(acts))
    lrs = np.asarray(lrs, dtype=np.float64)
    T = lrs.shape[0]
    out = np.empty((T + 1,) + np.shape(C0))
    out[0] = C0
    if laws.law is not None:
        step = compile_law(laws.law)
        for n in range(T):
            out[n + 1] = step({"C": out[n], **{k: stats[k][n] for k in ("Q", "Gamma")}}, lrs[n], lam=lam)
        return out
    first, u_step, ident = compile_law(laws.u_first), compile_law(laws.u_step), compile_law(laws.identity)
    U = None
    for n in range(T):
        q, D = stats["Q"][n], stats["D"][n]
        if n == 0:
            U = first({"C": out[0], "Q": q}, lrs[0], lam=lam, beta=beta, d=d)
        else:
            U = u_step({"C": out[n], "Q": q, "U_prev": U, "D_prev": stats["D"][n - 1]}, lrs[n], lrs[n - 1],
                       lam, beta, d)
        out[n + 1] = ident({"C": out[n], "U": U, "D": D}, lrs[n])
    return out
