"""Laws for a group whose members the optimizer treats differently (theory.md §7), derived.

Each member class c follows the exact recurrence of its own rule with its own symbols (η_c, λ_c, β_c, d_c)
and statistics (N_c, Q_c, ...); the group's quantity is the sum. The symmetry constrains only the sum of
the breaking terms, Σ_c Q_c = 0 (translation: Σ_c P_c = 0), so the engine eliminates the first class's
term with it. What is left multiplies the other classes' terms by coefficient differences: the
optimizer-induced breaking. With equal coefficients the differences vanish and the one-class law returns.
The numeric back end (numeric/class_laws.py) runs exactly this: per-class recurrences, summed, with the
eliminated class fed −Σ of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .discrete import derive_recurrence, sym
from .optimizers import BETA, DAMP, ETA, LAM, RuleSpec

_CLASS_SYMBOLS = ("N", "W", "V", "Q", "G", "D", "s", "m", "P")


def class_symbol(name: str, c: int) -> sp.Symbol:
    """The per-class, per-step statistic ``name^{(c)}_n`` (η keeps its positivity)."""
    return sp.Symbol(f"{name}^({c})_n", positive=(name == "eta")) if name != "eta" else sp.Symbol(f"eta^({c})_n", positive=True)


def class_parameter(p: sp.Symbol, c: int) -> sp.Symbol:
    return sp.Symbol(f"{p.name}^({c})", nonnegative=True)


@dataclass(frozen=True)
class ClassLaw:
    """The group law for ``k`` classes: next quantity, and each surviving breaking term's coefficient."""

    kind: str
    specs: tuple[RuleSpec, ...]
    quantity_next: sp.Expr                       # Σ_c (class c's next quantity), constraint applied
    breaking_coefficients: dict[sp.Symbol, sp.Expr]   # term Q^(c) (c ≥ 2) → its coefficient (a difference)
    eliminated: sp.Symbol                        # Q^(1) (or P^(1)): replaced by −Σ_{c≥2}

    def latex(self) -> str:
        q = "N" if self.kind != "translation" else "s"
        return sp.latex(sp.Eq(sp.Symbol(f"{q}_{{n+1}}"), self.quantity_next))


def _per_class(expr: sp.Expr, c: int) -> sp.Expr:
    mapping = {sym(n): class_symbol(n, c) for n in _CLASS_SYMBOLS}
    mapping[ETA] = class_symbol("eta", c)
    mapping.update({p: class_parameter(p, c) for p in (LAM, BETA, DAMP)})
    return expr.xreplace(mapping)


@lru_cache(maxsize=None)
def derive_class_law(kind: str, specs: tuple[RuleSpec, ...]) -> ClassLaw:
    """The law of a ``kind`` group whose members sit in ``len(specs)`` classes with these rules."""
    if not specs:
        raise ValueError("a group needs at least one member class")
    quadratic = kind != "translation"
    q, brk = ("N", "Q") if quadratic else ("s", "P")
    total = sp.Integer(0)
    for c, spec in enumerate(specs, start=1):
        rec = derive_recurrence(quadratic, spec)
        total += _per_class(rec.step[q], c)
    eliminated = class_symbol(brk, 1)
    others = [class_symbol(brk, c) for c in range(2, len(specs) + 1)]
    law = sp.expand(total.xreplace({eliminated: -sum(others, sp.Integer(0))}))
    coeffs = {o: sp.factor(law.coeff(o)) for o in others}
    return ClassLaw(kind, tuple(specs), law, coeffs, eliminated)


def equal_coefficients(law: ClassLaw) -> dict[sp.Symbol, sp.Expr]:
    """The breaking coefficients with every class given class 1's hyper-parameters (all must vanish)."""
    same = {}
    for c in range(2, len(law.specs) + 1):
        same[class_symbol("eta", c)] = class_symbol("eta", 1)
        for p in (LAM, BETA, DAMP):
            same[class_parameter(p, c)] = class_parameter(p, 1)
    return {o: sp.simplify(e.xreplace(same)) for o, e in law.breaking_coefficients.items()}
