"""The symbolic engine (sympy + numpy only; it never imports torch).

Public entry points:

* :func:`derive_family` — generator, gradient/Hessian constraints, Theorem 1, conserved quantity;
* :func:`derive_laws` — everything for a (family, optimizer rule) pair, cached per structure;
* :func:`compiled_recurrence` — the exact law as a vectorized numeric forecast;
* :class:`RuleSpec` — the structure of an optimizer rule (momentum, Nesterov, decoupled decay);
* :func:`derive_matrix_family`, :func:`derive_matrix_laws`, :func:`forecast_matrix` — the GL(r)
  (matrix-action) symmetry of two linear layers: constraint, conserved matrix, exact r×r laws;
* :func:`derive_member_family`, :func:`derive_member_laws` — the same for any matrix symmetry in the
  member form (attention heads, subgroups given by a Lie-algebra basis).
"""

from .algebra import BilinearForm, LinearForm, Vec
from .discrete import Recurrence, bookkeeping_identity, derive_recurrence
from .families import FAMILIES, FamilyDerivation, derive_family
from .laws import CompiledRecurrence, LawSet, compiled_recurrence, derive_laws
from .matrix_families import MatrixFamilyDerivation, derive_matrix_family, independent_law_count
from .matrix_laws import MatrixLaws, compile_law, derive_matrix_laws, derive_member_laws, forecast_matrix
from .matrix_members import MemberFamilyDerivation, derive_member_family
from .modified import ContinuousLaw, ModifiedFlow, continuous_law, modified_flow, multistep_relation
from .optimizers import RuleSpec, sgd_step

__all__ = [
    "BilinearForm", "LinearForm", "Vec", "Recurrence", "bookkeeping_identity", "derive_recurrence",
    "FAMILIES", "FamilyDerivation", "derive_family", "CompiledRecurrence", "LawSet",
    "compiled_recurrence", "derive_laws", "ContinuousLaw", "ModifiedFlow", "continuous_law",
    "modified_flow", "multistep_relation", "RuleSpec", "sgd_step",
    "MatrixFamilyDerivation", "derive_matrix_family", "independent_law_count", "MatrixLaws", "compile_law",
    "derive_matrix_laws", "forecast_matrix", "derive_member_laws", "MemberFamilyDerivation", "derive_member_family",
]
