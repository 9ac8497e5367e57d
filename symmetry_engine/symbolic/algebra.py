"""A small algebra of abstract vectors, used by every derivation in the engine.

Why not sympy matrices: the laws hold for parameter blocks of any size, so the derivations must not
depend on a dimension.  An abstract vector is a formal linear combination of named basis vectors
(θ_n, v_n, ĝ_n, θ', Hg, ...) with sympy scalar coefficients.  Scalars arise only through a *form*:
a symmetric bilinear form ``B(u, w) = ⟨S u, w⟩`` (scale / rescale, S the signed projector of the group)
or a linear functional ``ℓ(u) = ⟨c, u⟩`` (translation, c = 1_A).  A form maps each pair of basis
vectors to a scalar symbol; statistics (N, Q, G, ...) are those symbols given names, and constraints
are substitution rules on them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import sympy as sp

ScalarLike = sp.Expr | int | float


def step_symbol(name: str, shift: int = 0, **assumptions: bool) -> sp.Symbol:
    """The per-step symbol ``name_n`` (shift 0), ``name_{n+1}`` (1) or ``name_{n-1}`` (-1)."""
    if shift == 0:
        return sp.Symbol(f"{name}_n", **assumptions)
    sign = "+" if shift > 0 else "-"
    return sp.Symbol(f"{name}_{{n{sign}{abs(shift)}}}", **assumptions)


class Vec:
    """A formal linear combination of named basis vectors with sympy coefficients (immutable)."""

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[str, ScalarLike] | None = None) -> None:
        clean: dict[str, sp.Expr] = {}
        for name, coef in (terms or {}).items():
            c = sp.sympify(coef)
            if c != 0:
                clean[name] = c
        self.terms = clean

    @staticmethod
    def of(name: str) -> "Vec":
        """The basis vector ``name``."""
        return Vec({name: 1})

    def __add__(self, other: "Vec") -> "Vec":
        out = dict(self.terms)
        for name, coef in other.terms.items():
            out[name] = out.get(name, 0) + coef
        return Vec(out)

    def __neg__(self) -> "Vec":
        return Vec({k: -c for k, c in self.terms.items()})

    def __sub__(self, other: "Vec") -> "Vec":
        return self + (-other)

    def __mul__(self, scalar: ScalarLike) -> "Vec":
        s = sp.sympify(scalar)
        return Vec({k: s * c for k, c in self.terms.items()})

    __rmul__ = __mul__

    def coeff(self, name: str) -> sp.Expr:
        return self.terms.get(name, sp.Integer(0))

    def basis(self) -> set[str]:
        return set(self.terms)

    def map_coeffs(self, fn: Callable[[sp.Expr], sp.Expr]) -> "Vec":
        return Vec({k: fn(c) for k, c in self.terms.items()})

    def subs_basis(self, mapping: Mapping[str, "Vec"]) -> "Vec":
        """Replace basis vectors by vectors (a linear substitution, e.g. θ_{n-1} → θ_n − Δ)."""
        out = Vec()
        for name, coef in self.terms.items():
            out = out + (mapping[name] * coef if name in mapping else Vec({name: coef}))
        return out

    def apply(self, op: Callable[[str], "Vec"]) -> "Vec":
        """Apply a linear operator given by its action on basis vectors (e.g. the Hessian H)."""
        out = Vec()
        for name, coef in self.terms.items():
            out = out + op(name) * coef
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vec):
            return NotImplemented
        diff = self - other
        return all(sp.simplify(c) == 0 for c in diff.terms.values())

    def __hash__(self) -> int:  # pragma: no cover - Vec is not used as a key
        return hash(tuple(sorted(self.terms)))

    def __repr__(self) -> str:
        if not self.terms:
            return "0"
        return " + ".join(f"({c})*{k}" for k, c in sorted(self.terms.items()))


ZERO = Vec()


def pair_symbol(prefix: str, a: str, b: str) -> sp.Symbol:
    """The raw scalar ``prefix(a, b)`` with a canonical (sorted) argument order: the form is symmetric."""
    x, y = sorted((a, b))
    return sp.Symbol(f"{prefix}({x},{y})")


def unary_symbol(prefix: str, a: str) -> sp.Symbol:
    return sp.Symbol(f"{prefix}({a})")


class BilinearForm:
    """A symmetric bilinear form on formal vectors.

    ``rule(a, b)`` may return a scalar for a pair of basis vectors (a named statistic, or a value a
    constraint imposes); otherwise the raw symbol ``B(a,b)`` is used.
    """

    def __init__(self, prefix: str = "B", rule: Callable[[str, str], sp.Expr | None] | None = None) -> None:
        self.prefix = prefix
        self.rule = rule

    def pair(self, a: str, b: str) -> sp.Expr:
        if self.rule is not None:
            val = self.rule(a, b)
            if val is None:
                val = self.rule(b, a)
            if val is not None:
                return sp.sympify(val)
        return pair_symbol(self.prefix, a, b)

    def __call__(self, u: Vec, w: Vec) -> sp.Expr:
        total = sp.Integer(0)
        for a, ca in u.terms.items():
            for b, cb in w.terms.items():
                total += ca * cb * self.pair(a, b)
        return sp.expand(total)


class LinearForm:
    """A linear functional on formal vectors, with an optional rule for basis values."""

    def __init__(self, prefix: str = "l", rule: Callable[[str], sp.Expr | None] | None = None) -> None:
        self.prefix = prefix
        self.rule = rule

    def value(self, a: str) -> sp.Expr:
        if self.rule is not None:
            val = self.rule(a)
            if val is not None:
                return sp.sympify(val)
        return unary_symbol(self.prefix, a)

    def __call__(self, u: Vec) -> sp.Expr:
        return sp.expand(sum((c * self.value(a) for a, c in u.terms.items()), sp.Integer(0)))


def linear_coefficients(expr: sp.Expr, symbols: Iterable[sp.Symbol]) -> tuple[dict[sp.Symbol, sp.Expr], sp.Expr]:
    """Split an expression affine in ``symbols`` into its coefficients and the remainder.

    Raises ValueError when the expression is not affine in them: the laws are affine in the
    statistics by construction, and a failure here would mean a derivation went wrong.
    """
    syms = list(symbols)
    expr = sp.expand(expr)
    coeffs: dict[sp.Symbol, sp.Expr] = {}
    for s in syms:
        c = expr.coeff(s)
        if any(c.has(t) for t in syms):
            raise ValueError(f"expression is not affine in {syms}: {expr}")
        coeffs[s] = sp.factor(c) if c != 0 else sp.Integer(0)
    rest = sp.expand(expr - sum(coeffs[s] * s for s in syms))
    if any(rest.has(s) for s in syms):
        raise ValueError(f"expression is not affine in {syms}: {expr}")
    return coeffs, rest
