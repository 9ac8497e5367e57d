"""GL(r) symmetry of two linear layers with nothing nonlinear between them: the continuous side.

z = W2 (W1 x + b1) + b2 only sees the product W2 [W1 | b1], so (W1a, W2) → (M W1a, W2 M⁻¹) with
W1a = [W1 | b1] and any invertible r×r M leaves every loss unchanged.  The diagonal families of
``families.py`` have one scalar per group; here the group is r²-dimensional and its data are r×r
matrices, so the derivation runs on *explicit* small matrices of symbols (r×m first layer, k×r second
layer, an undefined loss L of all entries) where sympy does the calculus itself:

1. generator: d/dε ψ(I + εA) at ε = 0 for a generic Lie-algebra element A (sympy differentiates M⁻¹);
   any curve through I with tangent A, e^{εA} included, has the same first derivative;
2. gradient constraint: the chain rule on L(ψ) is linear in the entries a_ij of A; their coefficients
   form an r×r matrix, which must be G1 W1aᵀ − W2ᵀ G2 (checked) and vanish for every A;
3. conserved matrix: ⟨θ, ξ_A(θ)⟩ is linear in A too; its coefficients are C = W1a W1aᵀ − W2ᵀ W2;
4. Theorem 1 condition ⟨θ, (∂_θ ξ_A) g⟩ and dC/dt under θ' = −g are reduced with the constraint
   (solved for r² gradient entries) and must vanish — checked, never assumed;
5. count: C is symmetric, and the number of functionally independent laws is the generic rank of the
   Jacobian of C's upper triangle, evaluated exactly at an integer point.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp


@dataclass(frozen=True)
class MatrixFamilyDerivation:
    """What the engine derives for the GL(r) action on an explicit r×m / k×r coordinate model."""

    r: int
    m: int                        # columns of W1a = [W1 | b1] (inputs + 1 with a bias)
    k: int                        # outputs of the second layer
    W1: sp.Matrix
    W2: sp.Matrix
    A: sp.Matrix                  # generic element of gl(r)
    generator: tuple[sp.Matrix, sp.Matrix]     # ξ_A = (A W1a, −W2 A), as derived
    invariant_product: bool       # W2 M⁻¹ M W1a == W2 W1a for symbolic M
    gradient: tuple[sp.Matrix, sp.Matrix]      # (G1, G2) = ∂L/∂W1a, ∂L/∂W2 (Derivative objects)
    constraint: sp.Matrix         # r×r coefficients of a_ij in dL(ψ)/dε: G1 W1aᵀ − W2ᵀ G2
    quantity: sp.Matrix           # r×r coefficients of a_ij in ⟨θ, ξ_A⟩: W1a W1aᵀ − W2ᵀ W2
    theorem1_condition: sp.Expr   # ⟨θ, (∂ξ_A) g⟩ reduced with the constraint
    quantity_rate: sp.Matrix      # dC/dt under θ' = −g reduced with the constraint
    law_count: int                # rank of the Jacobian of C's upper triangle

    @property
    def constraint_is_standard(self) -> bool:
        G1, G2 = self.gradient
        return sp.expand(self.constraint - (G1 * self.W1.T - self.W2.T * G2)) == sp.zeros(self.r, self.r)

    @property
    def quantity_is_standard(self) -> bool:
        return sp.expand(self.quantity - (self.W1 * self.W1.T - self.W2.T * self.W2)) == sp.zeros(self.r, self.r)

    @property
    def symmetric(self) -> bool:
        return sp.expand(self.quantity - self.quantity.T) == sp.zeros(self.r, self.r)

    @property
    def theorem1_holds(self) -> bool:
        return sp.expand(self.theorem1_condition) == 0

    @property
    def conserved(self) -> bool:
        return all(sp.simplify(e) == 0 for e in self.quantity_rate)

    def latex(self) -> dict[str, str]:
        """Abstract (dimension-free) statements of what was derived, for reports."""
        return {
            "action": r"(W_1, b_1, W_2) \mapsto (M W_1, M b_1, W_2 M^{-1}),\; M \in GL(r)",
            "generator": r"\xi_A(\theta) = (A [W_1 | b_1],\; -W_2 A),\; A \in \mathfrak{gl}(r)",
            "gradient_constraint": r"G_1 [W_1|b_1]^\top - W_2^\top G_2 = 0",
            "conserved_quantity": r"C = [W_1|b_1][W_1|b_1]^\top - W_2^\top W_2",
            "law_count": rf"\tfrac{{r(r+1)}}{{2}} = {self.law_count}\;(r = {self.r})",
        }

    def text(self) -> dict[str, str]:
        return {
            "action": "(W1a, W2) -> (M W1a, W2 M^-1), W1a = [W1 | b1], M in GL(r)",
            "generator": "xi_A = (A W1a, -W2 A)",
            "gradient_constraint": "G1 W1a^T - W2^T G2 = 0 (r x r)",
            "conserved_quantity": "C = W1a W1a^T - W2^T W2 (symmetric r x r)",
            "law_count": f"{self.law_count} independent laws for r={self.r}, m={self.m}, k={self.k}",
        }


def _symbol_matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True))


def _frob(a: sp.Matrix, b: sp.Matrix) -> sp.Expr:
    """⟨a, b⟩ = Σ a_ij b_ij (the Euclidean inner product on parameters)."""
    return sum((x * y for x, y in zip(a, b)), sp.Integer(0))


def _coefficient_matrix(expr: sp.Expr, A: sp.Matrix) -> sp.Matrix:
    """The r×r matrix of coefficients of a_ij in an expression linear in A (checked)."""
    expr = sp.expand(expr)
    out = A.applyfunc(lambda a: expr.coeff(a))
    rest = sp.expand(expr - _frob(out, A))
    if rest != 0 or any(e.has(*A) for e in out):
        raise RuntimeError("expression is not linear in the Lie-algebra element A")
    return out


def _reduce(expr: sp.Expr, solution: dict) -> sp.Expr:
    return sp.simplify(sp.expand(expr).xreplace(solution))


@lru_cache(maxsize=None)
def derive_matrix_family(r: int = 2, m: int = 3, k: int = 2) -> MatrixFamilyDerivation:
    """Derive generator, constraint, conserved matrix and law count on an r×m / k×r model.

    The reduction step solves the constraint for G1's first r columns, so it needs m ≥ r (a
    first layer with at least r columns, bias column included) — the generic case.
    """
    if m < r:
        raise ValueError("the coordinate model needs m >= r (solve the constraint for G1[:, :r])")
    W1, W2, A = _symbol_matrix("w", r, m), _symbol_matrix("u", k, r), _symbol_matrix("a", r, r)
    coords = list(W1) + list(W2)
    eps = sp.Symbol("epsilon", real=True)
    M = sp.eye(r) + eps * A
    psi1, psi2 = M * W1, W2 * M.inv()
    L = sp.Function("L")
    loss = L(*coords)

    # The action really is a symmetry of every loss of the product (sympy cancels M⁻¹ M).
    Ms = _symbol_matrix("M", r, r)
    invariant = sp.simplify(W2 * Ms.inv() * (Ms * W1) - W2 * W1) == sp.zeros(k, m)

    xi1 = psi1.diff(eps).subs(eps, 0)
    xi2 = sp.simplify(psi2.diff(eps).subs(eps, 0))
    G1 = W1.applyfunc(lambda w: loss.diff(w))
    G2 = W2.applyfunc(lambda w: loss.diff(w))
    rate = sp.diff(L(*(list(psi1) + list(psi2))), eps).subs(eps, 0).doit()
    constraint = _coefficient_matrix(rate, A)

    # Conserved matrix: the coefficients of A in ⟨θ, ξ_A(θ)⟩ (Theorem 1's quantity, per direction).
    quantity = _coefficient_matrix(_frob(W1, xi1) + _frob(W2, xi2), A)

    # Solve the constraint (r² linear equations) for G1[:, :r] as plain symbols, then reduce.
    gsym = {d: sp.Symbol(f"g_{i}") for i, d in enumerate(list(G1) + list(G2))}
    back = {v: d for d, v in gsym.items()}
    unknowns = [gsym[G1[i, j]] for i in range(r) for j in range(r)]
    eqs = [sp.expand(e).xreplace(gsym) for e in constraint]
    sol = sp.solve(eqs, unknowns, dict=True)
    if len(sol) != 1:
        raise RuntimeError("the gradient constraint could not be solved for G1[:, :r]")
    solution = {back[s]: v.xreplace(back) for s, v in sol[0].items()}

    theta = sp.Matrix(coords)
    xi = sp.Matrix(list(xi1) + list(xi2))
    g = sp.Matrix(list(G1) + list(G2))
    theorem1 = _reduce((theta.T * xi.jacobian(theta) * g)[0], solution)
    flow = quantity.applyfunc(lambda c: sum((c.diff(x) * (-gx) for x, gx in zip(coords, g)), sp.Integer(0)))
    quantity_rate = flow.applyfunc(lambda e: _reduce(e, solution))

    return MatrixFamilyDerivation(
        r=r, m=m, k=k, W1=W1, W2=W2, A=A, generator=(xi1, xi2), invariant_product=invariant,
        gradient=(G1, G2), constraint=constraint, quantity=quantity, theorem1_condition=theorem1,
        quantity_rate=quantity_rate, law_count=independent_law_count(r, m, k),
    )


@lru_cache(maxsize=None)
def independent_law_count(r: int, m: int, k: int, seed: int = 0) -> int:
    """Rank of ∂(upper triangle of C)/∂θ at a random integer point (exact rational arithmetic).

    This is the number of functionally independent conserved quantities C provides.  It is
    r(r+1)/2 whenever m + k ≥ r (the usual case); a hidden layer wider than m + k gives fewer,
    since C then has rank ≤ m + k.
    """
    W1, W2 = _symbol_matrix("w", r, m), _symbol_matrix("u", k, r)
    C = W1 * W1.T - W2.T * W2
    upper = sp.Matrix([C[i, j] for i in range(r) for j in range(i, r)])
    coords = list(W1) + list(W2)
    rng = random.Random(seed)
    point = {x: sp.Integer(rng.randint(-9, 9)) for x in coords}
    return upper.jacobian(coords).subs(point).rank()
