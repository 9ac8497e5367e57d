"""Exact discrete laws for the GL(r) conserved matrix C = W1a W1aᵀ − W2ᵀ W2 under SGD rules.

Why a matrix algebra: the state is r×r, and products do not commute, so the scalar forms of
``algebra.py`` cannot hold it.  The optimizer rule is still taken from ``optimizers.sgd_step`` (one
source of PyTorch semantics): it maps formal vectors θ, v, ĝ to formal vectors with scalar
coefficients.  Each formal basis vector is realized as a *pair* of sympy matrix symbols, one per layer
(θ → (W1, W2), ĝ → (G1, G2), ...), and the pairing P(a, b) = a1 b1ᵀ − b2ᵀ a2 is expanded by sympy's
noncommutative matrix algebra.  The order in the second layer is forced by the action: M acts on W1
from the left and on W2 from the right, so the constraint pairs G1 W1ᵀ with W2ᵀ G2 (not G2ᵀ W2), and
P(b, a) = P(a, b)ᵀ.  Reading off the products checks that the result closes on pairings (the
layer-1 coefficient of x1 y1ᵀ equals minus the layer-2 coefficient of y2ᵀ x2) and names them:
C = P(θ,θ), Q = P(ĝ,θ) = G1 W1ᵀ − W2ᵀ G2 (0 under the symmetry; kept, so the laws stay exact),
Qᵀ = P(θ,ĝ), Γ = P(ĝ,ĝ) = G1 G1ᵀ − G2ᵀ G2, U = P(θ,Δ) = W1 Δ1ᵀ − Δ2ᵀ W2, D = P(Δ,Δ) with
Δ = θ_{n+1} − θ_n.

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

R, MDIM, KDIM = sp.symbols("r m k", integer=True, positive=True)
MatLaw = dict[sp.MatrixExpr, sp.Expr]
PARAMS = (ETA, ETA_PREV, LAM, BETA, DAMP)


def stat(name: str, step: str = "n") -> sp.MatrixSymbol:
    """The r×r statistic ``name_{step}`` (C_n, Q_n, Gamma_n, U_{n-1}, ...)."""
    return sp.MatrixSymbol(f"{name}_{{{step}}}" if len(step) > 1 else f"{name}_{step}", R, R)


def _layers(name: str) -> tuple[sp.MatrixSymbol, sp.MatrixSymbol]:
    return sp.MatrixSymbol(f"{name}1", R, MDIM), sp.MatrixSymbol(f"{name}2", KDIM, R)


def pairing(u: Vec, w: Vec) -> sp.MatrixExpr:
    """P(u, w) = u1 w1ᵀ − w2ᵀ u2 with each basis vector realized as its two layer matrices."""
    def realize(v: Vec, layer: int) -> sp.MatrixExpr:
        terms = [c * _layers(n)[layer] for n, c in sorted(v.terms.items())]
        return sp.MatAdd(*terms).doit() if terms else sp.ZeroMatrix(*_layers("z")[layer].shape)
    u1, u2, w1, w2 = realize(u, 0), realize(u, 1), realize(w, 0), realize(w, 1)
    return sp.expand((u1 * w1.T - w2.T * u2).doit())


def _name(x: sp.MatrixExpr) -> tuple[str, bool]:
    """(basis name, transposed) of a layer matrix factor such as W1, G2.T."""
    t = isinstance(x, sp.Transpose)
    return (x.arg if t else x).name, t


def pair_coefficients(expr: sp.MatrixExpr) -> dict[tuple[str, str], sp.Expr]:
    """Read P-coefficients off an expanded pairing; raise if it does not close on pairings."""
    c1: dict[tuple[str, str], sp.Expr] = {}
    c2: dict[tuple[str, str], sp.Expr] = {}
    for term in sp.Add.make_args(expr) if not isinstance(expr, sp.MatAdd) else expr.args:
        if term == 0 or isinstance(term, sp.ZeroMatrix):
            continue
        coeff, mats = term.as_coeff_mmul()
        factors = mats.args if isinstance(mats, sp.MatMul) else (mats,)
        if len(factors) != 2:
            raise ValueError(f"unexpected term {term} in a pairing")
        (a, ta), (b, tb) = _name(factors[0]), _name(factors[1])
        if a.endswith("1") and b.endswith("1") and (ta, tb) == (False, True):
            c1[(a[:-1], b[:-1])] = c1.get((a[:-1], b[:-1]), 0) + coeff
        elif a.endswith("2") and b.endswith("2") and (ta, tb) == (True, False):
            c2[(b[:-1], a[:-1])] = c2.get((b[:-1], a[:-1]), 0) - coeff  # y2ᵀ x2 belongs to P(x, y)
        else:
            raise ValueError(f"term {term} is not of the form x1 y1^T or x2^T y2")
    for key in set(c1) | set(c2):
        if sp.simplify(c1.get(key, 0) - c2.get(key, 0)) != 0:
            raise ValueError(f"layers disagree on P{key}: the update does not act by scalars")
    return {k: sp.factor(v) for k, v in c1.items() if sp.simplify(v) != 0}


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
def derive_matrix_laws(spec: RuleSpec = RuleSpec()) -> MatrixLaws:
    """Expand one step of ``spec`` through the pairing and name the statistics."""
    if not spec.closed or spec.nesterov:
        raise ValueError(f"{spec.describe()}: no matrix law derived (needs plain or heavy-ball SGD)")
    th, g, dl = Vec.of("th"), Vec.of("g"), Vec.of("d")
    ident_tab = {("th", "th"): stat("C"), ("th", "d"): stat("U"), ("d", "d"): stat("D")}
    identity = name_pairs(pair_coefficients(pairing(th + dl, th + dl)), ident_tab)
    base = {("th", "th"): stat("C"), ("g", "th"): stat("Q"), ("g", "g"): stat("Gamma")}
    if not spec.momentum:
        th1, _ = sgd_step(spec, th, ZERO, g)
        law = name_pairs(pair_coefficients(pairing(th1, th1)), base)
        return MatrixLaws(spec, identity, law, required=("Q", "Gamma", "eta"),
                          notes={"state": "C_0; Q and Gamma enter only through Q + Q^T and Gamma"})
    # P(θ_n, Δ_{n−1}) with θ_n = θ_{n−1} + Δ_{n−1}: derived, not assumed.
    prev = {("thp", "dp"): stat("U", "n-1"), ("dp", "dp"): stat("D", "n-1")}
    carried = name_pairs(pair_coefficients(pairing(Vec.of("thp") + Vec.of("dp"), Vec.of("dp"))), prev)
    th1, _ = sgd_step(spec, th, _buffer_in_terms_of_steps(spec), g)
    u_step = name_pairs(pair_coefficients(pairing(th, th1 - th)), {**base, ("th", "dp"): carried})
    f_th1, _ = sgd_step(spec, th, ZERO, g, damp=sp.Integer(0))
    u_first = name_pairs(pair_coefficients(pairing(th, f_th1 - th)), base)
    return MatrixLaws(spec, identity, None, u_first, u_step, required=("Q", "D", "eta"),
                      notes={"state": "C_0 and U (starts from U_0); C needs only U + U^T, so the "
                                      "symmetric part of Q suffices"})


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
                    lam: float = 0.0, beta: float = 0.0, d: float = 0.0) -> np.ndarray:
    """Free-running forecast of C: C_0 [..., r, r], stats[name] [T, ..., r, r], lrs [T] → [T+1, ..., r, r]."""
    laws = derive_matrix_laws(spec)
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
