"""Symmetry families: from the group action ψ(α, θ) to generator, constraints and conserved quantity.

Each family is realized on a small coordinate model (two coordinates per block plus one outside
coordinate, enough to show the structure without fixing a dimension) with an *undefined* loss
``L(θ)``.  Sympy then differentiates the invariance ``L(ψ(α, θ)) = L(θ)`` in α at the identity
(gradient constraint ⟨g, ξ⟩ = 0) and once more in θ (Hessian constraint Hξ = −(∂_θ ξ)ᵀ g), checks
Theorem 1's condition ⟨θ, (∂_θ ξ) g⟩ = 0 *using* the gradient constraint, and checks that the
quantity ⟨θ, ξ(θ)⟩ has zero rate under gradient flow.  Nothing here is assumed from theory.md.

The abstract data the other derivations need is read off the coordinate model: ξ is affine,
ξ = Sθ + c; a family with S ≠ 0 has the quadratic conserved quantity B(θ, θ) with B(u, w) = ⟨Su, w⟩
(signed sums over the blocks), one with S = 0 the linear quantity ⟨c, θ⟩.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

FAMILIES = ("translation", "scale", "rescale")

#: LaTeX of the abstract generator / quantity / statistic, keyed by family (display only: the
#: derivation below is what the tests compare with theory.md).
_DISPLAY = {
    "translation": (r"\mathbb{1}_A", r"\langle \theta_A, \mathbb{1} \rangle"),
    "scale": (r"\theta_A", r"|\theta_A|^2"),
    "rescale": (r"\theta_{A_1} - \theta_{A_2}", r"|\theta_{A_1}|^2 - |\theta_{A_2}|^2"),
}


@dataclass(frozen=True)
class FamilyDerivation:
    """What the engine derives for one symmetry family on its coordinate model."""

    kind: str
    coords: tuple[sp.Symbol, ...]
    alpha: sp.Symbol
    identity: sp.Expr
    action: sp.Matrix               # ψ(α, θ)
    generator: sp.Matrix            # ξ(θ) = ∂_α ψ |_{α=I}
    jacobian: sp.Matrix             # ∂_θ ξ
    gradient: sp.Matrix             # g = ∇L in coordinates
    hessian: sp.Matrix
    gradient_constraint: sp.Expr    # ⟨g, ξ⟩ (identically 0 for invariant L)
    hessian_constraint: sp.Matrix   # Hξ + (∂ξ)ᵀ g (identically 0)
    theorem1_condition: sp.Expr     # ⟨θ, (∂ξ) g⟩ reduced with the gradient constraint
    quantity: sp.Expr               # ⟨θ, ξ(θ)⟩
    quantity_rate: sp.Expr          # d/dt quantity under θ' = −g, reduced with the constraint
    signs: tuple[int, ...]          # diagonal of S = ∂ξ (the signed projector), per coordinate
    offset: tuple[int, ...]         # c = ξ(0)

    @property
    def quadratic(self) -> bool:
        """True when the conserved quantity is the quadratic form B(θ, θ) (S ≠ 0)."""
        return any(self.signs)

    @property
    def theorem1_holds(self) -> bool:
        return sp.expand(self.theorem1_condition) == 0

    @property
    def conserved(self) -> bool:
        return sp.expand(self.quantity_rate) == 0

    @property
    def generator_latex(self) -> str:
        return _DISPLAY[self.kind][0]

    @property
    def quantity_latex(self) -> str:
        return _DISPLAY[self.kind][1]

    def constraint_latex(self) -> tuple[str, str]:
        """(gradient, Hessian) constraints in abstract notation, read off S and c."""
        xi = self.generator_latex
        grad = rf"\langle g, {xi} \rangle = 0"
        if self.quadratic:
            sg = {"scale": "g_A", "rescale": "(g_{A_1} - g_{A_2})"}[self.kind]
            hess = rf"H ({xi}) = -{sg}"
        else:
            hess = rf"H {xi} = 0"
        return grad, hess


def _action(kind: str, coords: tuple[sp.Symbol, ...], alpha: sp.Symbol) -> tuple[sp.Matrix, sp.Expr]:
    """ψ(α, θ) on the coordinate model (a1, a2 | b1, b2 | r) and the group identity."""
    a1, a2, b1, b2, r = coords
    if kind == "translation":  # A = {a1, a2}: add α to every entry of the block
        return sp.Matrix([a1 + alpha, a2 + alpha, b1, b2, r]), sp.Integer(0)
    if kind == "scale":  # A = {a1, a2}: multiply the block by α > 0
        return sp.Matrix([alpha * a1, alpha * a2, b1, b2, r]), sp.Integer(1)
    if kind == "rescale":  # A1 = {a1, a2} times α, A2 = {b1, b2} times 1/α
        return sp.Matrix([alpha * a1, alpha * a2, b1 / alpha, b2 / alpha, r]), sp.Integer(1)
    raise ValueError(f"unknown symmetry family {kind!r}; known: {', '.join(FAMILIES)}")


def _reduce_with_constraint(expr: sp.Expr, constraint: sp.Expr, gradient: sp.Matrix) -> sp.Expr:
    """Use ⟨g, ξ⟩ = 0 to eliminate one partial derivative of L, then simplify."""
    expr = sp.expand(expr)
    for gi in gradient:
        c = sp.expand(constraint).coeff(gi)
        if c != 0 and not c.has(*gradient):
            # The constraint is linear in gi: gi = −(rest)/c.
            solved = -sp.expand(constraint).subs(gi, 0) / c
            return sp.expand(sp.cancel(expr.subs(gi, solved)))
    return sp.expand(expr)


@lru_cache(maxsize=None)
def derive_family(kind: str) -> FamilyDerivation:
    """Derive generator, constraints, Theorem 1 and the conserved quantity for a family."""
    coords = sp.symbols("a1 a2 b1 b2 r", real=True)
    alpha = sp.Symbol("alpha", positive=True)
    psi, ident = _action(kind, coords, alpha)
    L = sp.Function("L")
    loss = L(*coords)
    grad = sp.Matrix([loss.diff(x) for x in coords])
    hess = sp.Matrix(len(coords), len(coords), lambda i, j: loss.diff(coords[i], coords[j]))

    # ∂_α L(ψ(α, θ)) at α = I: sympy applies the chain rule to the undefined L.
    invariance_rate = sp.diff(L(*psi), alpha).subs(alpha, ident).doit()
    xi = psi.diff(alpha).subs(alpha, ident)
    grad_constraint = sp.expand(invariance_rate)
    # The chain rule and ⟨g, ξ⟩ must agree (a consistency check of the generator).
    if sp.expand(grad_constraint - (grad.T * xi)[0]) != 0:
        raise RuntimeError(f"{kind}: chain rule and <g, xi> disagree")
    jac = xi.jacobian(sp.Matrix(coords))
    # Differentiate the identity ⟨g(θ), ξ(θ)⟩ = 0 once more in θ.
    hess_constraint = sp.Matrix([sp.diff(grad_constraint, x) for x in coords])
    if sp.expand(hess_constraint - (hess * xi + jac.T * grad)) != sp.zeros(len(coords), 1):
        raise RuntimeError(f"{kind}: Hessian constraint is not H xi + (d xi)^T g")

    theta = sp.Matrix(coords)
    cond = (theta.T * jac * grad)[0]
    theorem1 = _reduce_with_constraint(cond, grad_constraint, grad)
    quantity = sp.expand((theta.T * xi)[0])
    rate = sum((sp.diff(quantity, x) * (-gi) for x, gi in zip(coords, grad)), sp.Integer(0))
    rate = _reduce_with_constraint(rate, grad_constraint, grad)

    if jac.free_symbols:
        raise ValueError(f"{kind}: generator is not affine in θ; the engine handles affine generators")
    signs = tuple(int(jac[i, i]) for i in range(len(coords)))
    if jac != sp.diag(*signs):
        raise ValueError(f"{kind}: ∂ξ is not a signed diagonal projector")
    offset = tuple(int(v) for v in xi.subs({x: 0 for x in coords}))
    return FamilyDerivation(
        kind=kind, coords=tuple(coords), alpha=alpha, identity=ident, action=psi, generator=xi,
        jacobian=jac, gradient=grad, hessian=hess, gradient_constraint=grad_constraint,
        hessian_constraint=hess_constraint, theorem1_condition=theorem1, quantity=quantity,
        quantity_rate=rate, signs=signs, offset=offset,
    )
