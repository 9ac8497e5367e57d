"""The engine's derived expressions equal theory.md §1–5 (sympy: simplify(derived − theory) == 0)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sympy as sp

from symmetry_engine.symbolic import RuleSpec, derive_family, derive_laws
from symmetry_engine.symbolic.discrete import sym
from symmetry_engine.symbolic.modified import BIG_OMEGA, GAMMA, H_STEP, T, modified_flow
from symmetry_engine.symbolic.optimizers import BETA, DAMP, ETA, ETA_PREV, LAM

HB = RuleSpec(momentum=True)
SGD = RuleSpec()


def zero(expr) -> bool:
    return sp.simplify(expr) == 0


@pytest.mark.parametrize("kind", ["translation", "scale", "rescale"])
def test_family_generator_constraints_and_quantity(kind):
    fam = derive_family(kind)
    a1, a2, b1, b2, r = fam.coords
    g, H = fam.gradient, fam.hessian
    one_A = sp.Matrix([1, 1, 0, 0, 0])
    th_A = sp.Matrix([a1, a2, 0, 0, 0])
    th_A2 = sp.Matrix([0, 0, b1, b2, 0])
    P_A, P_A2 = sp.diag(1, 1, 0, 0, 0), sp.diag(0, 0, 1, 1, 0)
    theory = {
        "translation": (one_A, (g.T * one_A)[0], H * one_A, a1 + a2),
        "scale": (th_A, (g.T * th_A)[0], H * th_A + P_A * g, a1**2 + a2**2),
        "rescale": (th_A - th_A2, (g.T * th_A)[0] - (g.T * th_A2)[0],
                    H * (th_A - th_A2) + (P_A - P_A2) * g, a1**2 + a2**2 - b1**2 - b2**2),
    }[kind]
    xi, grad_c, hess_c, quantity = theory
    assert fam.generator == xi
    assert zero(fam.gradient_constraint - grad_c)
    assert sp.simplify(fam.hessian_constraint - hess_c) == sp.zeros(5, 1)
    assert fam.theorem1_holds and fam.conserved
    assert zero(fam.quantity - quantity)


@pytest.mark.parametrize("kind,loss", [
    ("translation", lambda a1, a2, b1, b2, r: sp.exp(a1 - a2) * b1 + r**2),
    ("scale", lambda a1, a2, b1, b2, r: (a1 / sp.sqrt(a1**2 + a2**2))**3 + b1 * r),
    ("rescale", lambda a1, a2, b1, b2, r: sp.sin(a1 * b1 + a2 * b2) + r * b2 * a2),
])
def test_constraints_vanish_for_a_concrete_invariant_loss(kind, loss):
    fam = derive_family(kind)
    L = fam.gradient[0].args[0] if fam.gradient[0].args else None
    concrete = loss(*fam.coords)
    Lf = sp.Function("L")(*fam.coords)
    assert L == Lf
    assert zero(fam.gradient_constraint.subs(Lf, concrete).doit())
    assert sp.simplify(fam.hessian_constraint.subs(Lf, concrete).doit()) == sp.zeros(5, 1)


def test_plain_sgd_closed_law():
    rec = derive_laws("scale", SGD).exact
    N, G, Q = sym("N"), sym("G"), sym("Q")
    theory = (1 - ETA * LAM) ** 2 * N + ETA**2 * G - 2 * ETA * (1 - ETA * LAM) * Q
    assert zero(rec.step["N"] - theory) and zero(rec.first["N"] - theory)
    assert rec.inputs == ("Q", "G")


@pytest.mark.parametrize("kind", ["scale", "rescale"])
def test_momentum_u_recurrence_identity_and_second_order(kind):
    cf = derive_laws(kind, HB).exact.closed_forms
    N, D, Q, U = sym("N"), sym("D"), sym("Q"), sym("U")
    assert zero(cf["identity"].rhs - (N + 2 * U + D))
    theory_u = BETA * (ETA / ETA_PREV) * (sym("U", -1) + sym("D", -1)) - ETA * (1 - DAMP) * (LAM * N + Q)
    assert zero(cf["U"].rhs - theory_u)
    N0, Q0, eta0 = sp.Symbol("N_0"), sp.Symbol("Q_0"), sp.Symbol("eta_0", positive=True)
    assert zero(cf["U_first"].rhs - (-eta0 * (LAM * N0 + Q0)))
    eta = sp.Symbol("eta", positive=True)
    ep = eta * (1 - DAMP)
    second = (1 + BETA - 2 * ep * LAM) * N - BETA * sym("N", -1) + D + BETA * sym("D", -1)
    assert zero(cf["second_order"].rhs.subs(Q, 0) - second)
    a = 1 + BETA - 2 * ep * LAM
    assert zero(cf["discriminant"].rhs - (a**2 - 4 * BETA))


def test_translation_laws():
    s, P = sym("s"), sym("P")
    plain = derive_laws("translation", SGD).exact
    assert zero(plain.step["s"] - ((1 - ETA * LAM) * s - ETA * P))
    cf = derive_laws("translation", HB).exact.closed_forms
    u, n = sp.Function("u"), sp.Symbol("n", integer=True)
    assert zero(cf["buffer"].rhs - (BETA * u(n) + (1 - DAMP) * (LAM * s + P)))
    assert zero(cf["buffer_first"].rhs - (LAM * sp.Symbol("s_0") + sp.Symbol("P_0")))
    assert zero(cf["law_u"].rhs - (s - ETA * u(n + 1)))


def test_modified_flows_and_losses():
    eta = sp.Symbol("eta", positive=True)
    gd = modified_flow(SGD)
    assert zero(gd.m.subs(H_STEP, eta) - eta / 2) and gd.c == 1 and gd.k == LAM
    assert zero(gd.modified_loss_coeff.subs(H_STEP, eta) - eta / 4)
    hb = modified_flow(HB)
    h = eta * (1 - DAMP)  # heavy ball: η → η(1−d), time t = η(1−d)n
    assert zero(hb.m.subs(H_STEP, h) - h * (1 + BETA) / 2) and zero(hb.c - (1 - BETA)) and hb.k == LAM
    assert zero(hb.modified_loss_coeff.subs(H_STEP, h) - h * (1 + BETA) / (4 * (1 - BETA) ** 2))


def test_continuous_first_order_paper_form():
    eta = sp.Symbol("eta", positive=True)
    scale = derive_laws("scale", SGD).continuous
    assert scale.order == 1 and zero(scale.decay - 2 * LAM) and zero(scale.drive_coeff.subs(H_STEP, eta) - eta)
    K = scale.regimes["first_order"]["K"]
    assert zero(K - sp.exp(-2 * LAM * T))
    tr = derive_laws("translation", SGD).continuous
    assert zero(tr.decay - LAM) and tr.drive_coeff == 0


@pytest.mark.parametrize("kind,factor", [("scale", 4), ("rescale", 4), ("translation", 2)])
def test_oscillator_gamma_omega(kind, factor):
    law = derive_laws(kind, HB).continuous
    eta = sp.Symbol("eta", positive=True)
    h = eta * (1 - DAMP)
    assert zero(law.gamma.subs(H_STEP, h) - (1 - BETA) / (eta * (1 - DAMP) * (1 + BETA)))
    assert zero(law.omega2.subs(H_STEP, h) - factor * LAM / (eta * (1 - DAMP) * (1 + BETA)))
    assert zero(law.drive - (2 * sp.Symbol("K") if kind != "translation" else 0))


def test_oscillator_kernels_per_regime():
    kern = derive_laws("scale", HB).continuous.regimes
    g, W, t = GAMMA, BIG_OMEGA, T
    ap, am = -g + W, -g - W
    theory = {
        "under-damped": (sp.exp(-g * t) * (sp.cos(W * t) + g / W * sp.sin(W * t)), sp.exp(-g * t) * sp.sin(W * t) / W),
        "critical": (sp.exp(-g * t) * (1 + g * t), t * sp.exp(-g * t)),
        "over-damped": ((ap * sp.exp(am * t) - am * sp.exp(ap * t)) / (ap - am),
                        (sp.exp(ap * t) - sp.exp(am * t)) / (ap - am)),
    }
    for regime, (K, G) in theory.items():
        assert zero(kern[regime]["K"] - K), regime
        assert zero(kern[regime]["G"] - G), regime


def test_nesterov_continuous_is_reported_not_closed_but_exact_law_exists():
    laws = derive_laws("scale", RuleSpec(momentum=True, nesterov=True))
    assert not laws.continuous.closed and "Nesterov" in laws.continuous.reason
    assert laws.exact.inputs == ("Q", "G", "D") and laws.exact.states == ("N", "W", "V")


def test_adam_returns_bookkeeping_identity():
    laws = derive_laws("scale", RuleSpec(rule="adam"))
    assert laws.exact is None
    N, U, D = sym("N"), sym("U"), sym("D")
    assert zero(laws.bookkeeping["identity"].rhs - (N + 2 * U + D))
    assert "U_n" in laws.bookkeeping["breaking_terms"]


def test_engine_never_imports_torch():
    code = ("import sys; import symmetry_engine.symbolic as s, symmetry_engine.numeric.predict; "
            "[s.derive_laws(k, s.RuleSpec(momentum=True)) for k in s.FAMILIES]; "
            "s.compiled_recurrence('scale', s.RuleSpec()); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
