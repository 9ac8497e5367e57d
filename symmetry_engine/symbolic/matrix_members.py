"""Matrix symmetries in the member form: the continuous side, derived on explicit matrices.

A matrix symmetry acts on r-row views X_i ([r, k_i] slices of parameters) by X_i → M X_i (act "M") or
X_i → M⁻ᵀ X_i (act "M^-T"), M in GL(r) or in a subgroup exp(𝔤), 𝔤 = span(B_1, …, B_K).  A Linear pair
is ([W1 | b1] act M, W2ᵀ act M⁻ᵀ); an attention head's logits (W_Q, b_Q act M; W_K, b_K act M⁻ᵀ); its
value path (W_V, b_V act M; W_Oᵀ act M⁻ᵀ).  Nothing below knows which: the derivation runs on explicit
small matrices of symbols for a given act signature and column counts, with an undefined loss L of all
entries, and a Lie-algebra element A = Σ c_k B_k (B = all E_ij for GL(r)):

1. generator: ξ_A = d/dε ψ(I + εA) at ε = 0 — sympy differentiates (I + εA)⁻ᵀ itself;
2. gradient constraint: dL(ψ)/dε is linear in the c_k; their coefficients are the K constraints.
   For GL(r) they form the r×r matrix Q, checked to be Σ_M G_X Xᵀ − Σ_{M⁻ᵀ} Y G_Yᵀ (for a subgroup
   the constraints are ⟨B_k, Q⟩ = 0: Q ⊥ 𝔤);
3. conserved matrix: ⟨θ, ξ_A⟩ is linear in the c_k; for GL(r) the coefficient matrix is checked to be
   C = Σ_M X Xᵀ − Σ_{M⁻ᵀ} Y Yᵀ (subgroup: the K functions ⟨B_k, C⟩);
4. Theorem 1's condition ⟨θ, (∂_θ ξ_{B_k}) g⟩ and the gradient-flow rate d⟨B_k, C⟩/dt are reduced with
   the constraint (solved for as many gradient entries as it has independent equations);
5. which combinations Σ v_k ⟨B_k, C⟩ are conserved is *derived*: their reduced rates are evaluated at
   random rational points (exact) to get the linear conditions on v, and every vector of the resulting
   null space is then checked symbolically (its rate simplifies to 0).  The tests compare the result with
   𝔤 ∩ Sym(r) (for GL(r): all of C's upper triangle; for the rotary subgroup: the trace of each 2×2
   frequency block — the J directions give ⟨J, C⟩ ≡ 0, no law);
6. count: the rank of the Jacobian of the conserved functions at a random integer point (exact).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import sympy as sp

ACTS = ("M", "M^-T")
Basis = tuple[tuple[tuple[int, ...], ...], ...]


def gl_basis(r: int) -> tuple[sp.Matrix, ...]:
    """E_ij, i, j < r (row-major): the Lie algebra of GL(r)."""
    out = []
    for i in range(r):
        for j in range(r):
            e = sp.zeros(r, r)
            e[i, j] = 1
            out.append(e)
    return tuple(out)


def _symbol_matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}_{j}", real=True))


def _frob(a: sp.Matrix, b: sp.Matrix) -> sp.Expr:
    return sum((x * y for x, y in zip(a, b)), sp.Integer(0))


@dataclass(frozen=True)
class MemberFamilyDerivation:
    """What the engine derives for one act signature and column counts (explicit coordinates)."""

    r: int
    acts: tuple[str, ...]
    cols: tuple[int, ...]
    views: tuple[sp.Matrix, ...]                 # X_i, r × k_i symbols
    basis: tuple[sp.Matrix, ...]                 # B_k (E_ij for GL(r))
    generator: tuple[sp.Matrix, ...]             # ξ_A per member, A = Σ c_k B_k
    coefficients: tuple[sp.Symbol, ...]          # c_k
    gradient: tuple[sp.Matrix, ...]              # G_i = ∂L/∂X_i (Derivative objects)
    constraints: tuple[sp.Expr, ...]             # coefficient of c_k in dL(ψ)/dε
    quantities: tuple[sp.Expr, ...]              # coefficient of c_k in ⟨θ, ξ_A⟩
    theorem1: tuple[sp.Expr, ...]                # ⟨θ, (∂ξ_{B_k}) g⟩, reduced with the constraint
    rates: tuple[sp.Expr, ...]                   # d/dt quantity_k under θ' = −g, reduced
    conserved: tuple[sp.Matrix, ...]             # symmetric S (r × r): ⟨S, C⟩ conserved (derived)
    law_count: int
    invariant: bool                              # (M X)ᵀ(M⁻ᵀ Y) = Xᵀ Y for a generic M (one M and one M⁻ᵀ member)

    @property
    def full_group(self) -> bool:
        return len(self.basis) == self.r * self.r and all(b == e for b, e in zip(self.basis, gl_basis(self.r)))

    def standard_Q(self) -> sp.Matrix:
        """Σ_M G_X Xᵀ − Σ_{M⁻ᵀ} Y G_Yᵀ (what the constraint must be)."""
        return _signed_sum(self.acts, [(g, x) for g, x in zip(self.gradient, self.views)],
                           lambda g, x: g * x.T, lambda g, y: y * g.T)

    def standard_C(self) -> sp.Matrix:
        """Σ_M X Xᵀ − Σ_{M⁻ᵀ} Y Yᵀ."""
        return _signed_sum(self.acts, [(x, x) for x in self.views], lambda a, b: a * b.T, lambda a, b: a * b.T)

    @property
    def constraint_is_standard(self) -> bool:
        Q = self.standard_Q()
        return all(sp.expand(c - _frob(B, Q)) == 0 for c, B in zip(self.constraints, self.basis))

    @property
    def quantity_is_standard(self) -> bool:
        C = self.standard_C()
        return all(sp.expand(q - _frob(B, C)) == 0 for q, B in zip(self.quantities, self.basis))

    @property
    def theorem1_holds(self) -> tuple[bool, ...]:
        """Per basis element: whether Theorem 1's condition vanishes under the constraint."""
        return tuple(sp.simplify(t) == 0 for t in self.theorem1)

    def latex(self) -> dict[str, str]:
        """Dimension-free statements of what was derived, for reports."""
        sub = "" if self.full_group else r",\ \mathfrak{g} = \operatorname{span}\{B_k\}"
        out = {
            "action": r"X_i \mapsto M X_i\ (\text{act } M),\quad Y_j \mapsto M^{-\top} Y_j\ (\text{act } M^{-\top}),\quad "
                      + (r"M \in GL(r)" if self.full_group else r"M = e^{\sum_k c_k B_k}"),
            "generator": r"\xi_A = (A X_i,\; -A^\top Y_j),\; A \in " + (r"\mathfrak{gl}(r)" if self.full_group else r"\mathfrak{g}") + sub,
            "gradient_constraint": (r"Q = \sum_i G_{X_i} X_i^\top - \sum_j Y_j G_{Y_j}^\top = 0" if self.full_group
                                    else r"\langle B_k, Q\rangle = 0,\ Q = \sum_i G_{X_i} X_i^\top - \sum_j Y_j G_{Y_j}^\top"),
            "conserved_quantity": (r"C = \sum_i X_i X_i^\top - \sum_j Y_j Y_j^\top" if self.full_group
                                   else r"\langle S, C\rangle,\ S \in \mathfrak{g} \cap \mathrm{Sym}(r),\ C = \sum_i X_i X_i^\top - \sum_j Y_j Y_j^\top"),
            "law_count": rf"{self.law_count}\;(r = {self.r})",
        }
        return out

    def text(self) -> dict[str, str]:
        """The same statements in plain Unicode (``nmech laws`` text format)."""
        return {
            "action": "X_i → M X_i (act M), Y_j → M⁻ᵀ Y_j (act M⁻ᵀ), "
                      + ("M ∈ GL(r)" if self.full_group else "M = expm(Σ_k c_k B_k)"),
            "generator": "ξ_A = (A X_i, −Aᵀ Y_j)",
            "gradient_constraint": "Q = Σ_i G_Xi X_iᵀ − Σ_j Y_j G_Yjᵀ = 0" if self.full_group
                                   else "⟨B_k, Q⟩ = 0 for every basis element (Q ⊥ 𝔤)",
            "conserved_quantity": "C = Σ_i X_i X_iᵀ − Σ_j Y_j Y_jᵀ (symmetric r×r)" if self.full_group
                                  else "⟨S, C⟩ for S ∈ 𝔤 ∩ Sym(r)",
            "law_count": f"{self.law_count} independent laws (r={self.r}, columns {list(self.cols)})",
        }


def _signed_sum(acts, pairs, f_m, f_t) -> sp.Matrix:
    total = None
    for act, (a, b) in zip(acts, pairs):
        term = f_m(a, b) if act == "M" else -f_t(a, b)
        total = term if total is None else total + term
    return sp.expand(total)


def _coefficients(expr: sp.Expr, cs: Sequence[sp.Symbol]) -> tuple[sp.Expr, ...]:
    """Coefficients of the c_k in an expression linear in them (checked)."""
    expr = sp.expand(expr)
    out = tuple(expr.coeff(c) for c in cs)
    rest = sp.expand(expr - sum((o * c for o, c in zip(out, cs)), sp.Integer(0)))
    if rest != 0 or any(o.has(*cs) for o in out):
        raise RuntimeError("expression is not linear in the Lie-algebra coefficients")
    return out


def _random_point(symbols, rng: random.Random) -> dict:
    return {s: sp.Rational(rng.randint(-9, 9), rng.randint(1, 5)) for s in symbols}


def _rank_at(exprs: Sequence[sp.Expr], coords: Sequence[sp.Symbol], rng: random.Random) -> int:
    if not exprs:
        return 0
    jac = sp.Matrix(list(exprs)).jacobian(list(coords))
    return jac.subs({s: sp.Integer(rng.randint(-9, 9)) for s in coords}).rank()


@lru_cache(maxsize=None)
def derive_member_family(acts: tuple[str, ...], cols: tuple[int, ...], r: int = 2,
                         basis: Basis | None = None, seed: int = 0) -> MemberFamilyDerivation:
    """Derive generator, constraints, conserved functions and law count for one member signature.

    ``basis`` (integer r×r matrices as nested tuples) restricts to a subgroup; None is all of GL(r).
    """
    if len(acts) != len(cols) or not acts or any(a not in ACTS for a in acts):
        raise ValueError(f"acts must be a non-empty tuple of {ACTS}, one per member column count")
    rng = random.Random(seed)
    views = tuple(_symbol_matrix(f"x{i}", r, k) for i, k in enumerate(cols))
    B = gl_basis(r) if basis is None else tuple(sp.Matrix(b) for b in basis)
    if any(b.shape != (r, r) for b in B):
        raise ValueError(f"basis elements must be {r}x{r}")
    cs = tuple(sp.Symbol(f"c_{k}", real=True) for k in range(len(B)))
    A = sum((c * b for c, b in zip(cs, B)), sp.zeros(r, r))
    eps = sp.Symbol("epsilon", real=True)
    M = sp.eye(r) + eps * A
    Minv_T = M.inv(method="LU").T
    psi = [M * X if act == "M" else Minv_T * X for act, X in zip(acts, views)]
    generator = tuple(p.diff(eps).subs(eps, 0).applyfunc(sp.simplify) for p in psi)

    coords = [x for X in views for x in X]
    L = sp.Function("L")
    loss = L(*coords)
    grads = tuple(X.applyfunc(lambda x: loss.diff(x)) for X in views)
    rate = sp.diff(L(*[e for p in psi for e in p]), eps).subs(eps, 0).doit()
    constraints = _coefficients(rate, cs)
    quantities = _coefficients(sum((_frob(X, xi) for X, xi in zip(views, generator)), sp.Integer(0)), cs)

    # Replace the Derivative objects by plain symbols and solve the constraint for a generic pivot set.
    g_all = [d for G in grads for d in G]
    gsym = {d: sp.Symbol(f"g_{i}") for i, d in enumerate(g_all)}
    back = {v: d for d, v in gsym.items()}
    eqs = [sp.expand(e).xreplace(gsym) for e in constraints]
    gvars = list(gsym.values())
    lin = sp.Matrix(eqs).jacobian(gvars).subs(_random_point(coords, rng))
    _, pivots = lin.rref()
    unknowns = [gvars[p] for p in pivots]
    sol = sp.solve(eqs, unknowns, dict=True) if unknowns else [{}]
    if len(sol) != 1:
        raise RuntimeError("the gradient constraint could not be solved")
    solution = {back[s]: v.xreplace(back) for s, v in sol[0].items()}

    def reduce(e: sp.Expr) -> sp.Expr:
        return sp.together(sp.expand(e).xreplace(solution))

    theta = sp.Matrix(coords)
    g = sp.Matrix(g_all)
    theorem1 = []
    for k in range(len(B)):
        xi_k = sp.Matrix([e for xi in generator for e in xi]).subs({c: int(i == k) for i, c in enumerate(cs)})
        theorem1.append(sp.simplify(reduce((theta.T * xi_k.jacobian(theta) * g)[0])))
    rates = [reduce(sum((q.diff(x) * (-gx) for x, gx in zip(coords, g)), sp.Integer(0))) for q in quantities]

    # Which combinations of the quantities are conserved: exact evaluation at random points, then proof.
    free = sorted(set().union(*[e.free_symbols for e in rates]) if rates else set(), key=str)
    free = [s for s in free if s not in cs]
    rows = []
    plain = [e.xreplace(gsym) for e in rates]
    for _ in range(len(B) + 6):
        pt = _random_point(free + [gsym[d] for d in g_all], rng)
        try:
            rows.append([sp.nsimplify(e.xreplace(gsym).xreplace(pt)) for e in plain])
        except ZeroDivisionError:  # pragma: no cover - a random point on a pole; skip it
            continue
    null = sp.Matrix(rows).nullspace() if rows else [sp.eye(len(B))[:, k] for k in range(len(B))]
    directions: list[sp.Matrix] = []
    for v in null:
        combo = sp.simplify(sum((vk * rk for vk, rk in zip(v, rates)), sp.Integer(0)))
        if combo != 0:
            raise RuntimeError("a combination that vanished at random points is not identically conserved")
        S = sum((vk * b for vk, b in zip(v, B)), sp.zeros(r, r))
        directions.append((S + S.T) / 2)
    # Keep a basis of the nonzero symmetric directions (antisymmetric ones give ⟨S, C⟩ ≡ 0: no law).
    flat = sp.Matrix([list(S) for S in directions]) if directions else sp.zeros(0, r * r)
    conserved: list[sp.Matrix] = []
    if flat.rows:
        red, piv = flat.T.rref()
        conserved = [directions[p] for p in piv]
    C = _signed_sum(acts, [(x, x) for x in views], lambda a, b: a * b.T, lambda a, b: a * b.T)
    law_count = _rank_at([_frob(S, C) for S in conserved], coords, rng)

    invariant = True
    if "M" in acts and "M^-T" in acts:
        Ms = _symbol_matrix("m", r, r) if r <= 3 else sp.Matrix(r, r, lambda i, j: rng.randint(-3, 3) + 5 * (i == j))
        invariant = sp.simplify(Ms.T * Ms.inv().T - sp.eye(r)) == sp.zeros(r, r)

    return MemberFamilyDerivation(r, tuple(acts), tuple(cols), views, B, generator, cs, grads, constraints,
                                  quantities, tuple(theorem1), tuple(rates), tuple(conserved), law_count, invariant)


def basis_key(basis) -> Basis | None:
    """A hashable integer basis for :func:`derive_member_family` (from nested lists of integral floats)."""
    if basis is None:
        return None
    out = tuple(tuple(tuple(int(round(v)) for v in row) for row in b) for b in basis)
    if any(abs(v - round(v)) > 0 for b in basis for row in b for v in row):
        raise ValueError("the symbolic derivation takes integer basis matrices")
    return out
