"""Groups whose members the optimizer treats differently: the engine's law against theory.md §7, and the
numeric per-class forecast against the engine's law."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symmetry_engine.numeric import class_laws
from symmetry_engine.numeric.classes import OptimizerClass
from symmetry_engine.numeric.runlog import KindStats
from symmetry_engine.symbolic import RuleSpec
from symmetry_engine.symbolic.class_laws import class_parameter, class_symbol, derive_class_law, equal_coefficients
from symmetry_engine.symbolic.optimizers import LAM


def test_two_classes_plain_sgd_same_lr_different_decay_matches_theory():
    law = derive_class_law("scale", (RuleSpec(), RuleSpec()))
    (q2, coef), = law.breaking_coefficients.items()
    eta = class_symbol("eta", 1)
    same_eta = coef.xreplace({class_symbol("eta", 2): eta})
    l1, l2 = class_parameter(LAM, 1), class_parameter(LAM, 2)
    assert sp.simplify(same_eta - 2 * eta**2 * (l2 - l1)) == 0  # theory.md §7: 2η²(λ₂ − λ₁)Q
    assert law.eliminated == class_symbol("Q", 1) and q2 == class_symbol("Q", 2)


@pytest.mark.parametrize("kind", ["translation", "scale", "rescale"])
@pytest.mark.parametrize("spec", [RuleSpec(), RuleSpec(momentum=True), RuleSpec(momentum=True, nesterov=True),
                                  RuleSpec(momentum=True, decoupled=True)])
def test_equal_hyperparameters_leave_no_optimizer_breaking(kind, spec):
    law = derive_class_law(kind, (spec, spec, spec))
    assert len(law.breaking_coefficients) == 2
    assert all(v == 0 for v in equal_coefficients(law).values())
    assert any(v != 0 for v in law.breaking_coefficients.values())  # but unequal ones do break it


def _schedule(cid, lr, lam, T):
    cls = OptimizerClass(cid, cid, True, True, True, "sgd")
    z = np.zeros(T)
    return class_laws.ClassSchedule(cls, np.full(T, lr), z, z, np.full(T, lam), np.ones(T, dtype=bool))


def test_numeric_law_minus_symmetric_is_the_engines_breaking_term():
    """One plain-SGD step of a two-class group: the numeric optimizer-induced breaking equals the engine's
    coefficient times the recorded Q of the second class, to round-off."""
    rng = np.random.default_rng(0)
    T, G = 1, 3
    N = rng.uniform(1, 2, size=(T + 1, 2 * G))
    cols = {"N": N, "M": np.abs(N), "Q": rng.normal(size=(T + 1, 2 * G)), "G": rng.uniform(0, 1, (T + 1, 2 * G)),
            "D": rng.uniform(0, 1, (T + 1, 2 * G))}
    ks = KindStats(cols, np.repeat(np.arange(G), 2), np.tile([0, 1], G), np.arange(0, 2 * G, 2), {})
    sched = [_schedule(0, 0.1, 1e-3, T), _schedule(1, 0.1, 5e-2, T)]
    law = class_laws.group_totals(ks, class_laws.forecast_exact("scale", ks, sched, T, "law"))
    sym = class_laws.group_totals(ks, class_laws.forecast_exact("scale", ks, sched, T, "symmetric"))
    (q2, coef), = derive_class_law("scale", (RuleSpec(), RuleSpec())).breaking_coefficients.items()
    value = float(coef.subs({class_symbol("eta", 1): 0.1, class_symbol("eta", 2): 0.1,
                             class_parameter(LAM, 1): 1e-3, class_parameter(LAM, 2): 5e-2}))
    # the eliminated class is the larger one at step 0: the coefficient's sign follows which one it is
    ref = class_laws.reference_slots("scale", ks, [s.cls for s in sched])
    q_other = np.array([cols["Q"][0, 2 * g + (1 - (ref[g] - 2 * g))] for g in range(G)])
    sign = np.array([1.0 if ref[g] == 2 * g else -1.0 for g in range(G)])
    np.testing.assert_allclose(law[1] - sym[1], sign * value * q_other, rtol=1e-12, atol=1e-15)
