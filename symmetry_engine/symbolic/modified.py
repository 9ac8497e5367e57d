"""Modified equations (backward error analysis) and the paper's continuous dynamics.

1. Eliminate the momentum buffer between consecutive steps: a linear two-state rule
   θ' = aθ + bv + cĝ, v' = pθ + qv + rĝ gives the multistep relation
   θ_{n+1} − (a+q)θ_n + (aq − bp)θ_{n−1} − c ĝ_n + (qc − br) ĝ_{n−1} = 0 (constant η).
2. Taylor-expand it around t_n with step h (h = η(1−d) with momentum, h = η without) to second order:
   the modified flow m θ'' + c θ' + k θ + g (+ ν Hθ') = 0.  Its first-order reduction (θ'' from the
   leading-order flow) is the modified loss L̃ = L + μ|∇L|².
3. Project on the generator with the family's form and use both constraints (⟨ξ, g⟩ = 0,
   ⟨ξ, Hw⟩ = −⟨(∂ξ)ᵀg, w⟩): a closed ODE for the quantity x, either x' = −a x + b|g|² (first order)
   or x'' + 2γx' + ω²x = drive (second order); ``dsolve`` gives its kernels and Duhamel's principle
   the solution x(t) = x(0)K(t) + ∫G(t−τ)f(τ)dτ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from .algebra import BilinearForm, LinearForm, Vec, ZERO
from .optimizers import DAMP, ETA, RuleSpec, sgd_step

H_STEP = sp.Symbol("h", positive=True)        # continuous time per optimizer step
T = sp.Symbol("t", nonnegative=True)
TAU = sp.Symbol("tau", nonnegative=True)
X0 = sp.Symbol("x_0")
GAMMA = sp.Symbol("gamma", positive=True)
OMEGA2 = sp.Symbol("omega^2", nonnegative=True)
BIG_OMEGA = sp.Symbol("Omega", positive=True)
XF = sp.Function("x")
FORCE = sp.Function("f")


@dataclass(frozen=True)
class ModifiedFlow:
    """m θ'' + c θ' + k θ + g + ν Hθ' = 0, with time t = h·n (coefficients may depend on h)."""

    time_step: sp.Expr
    m: sp.Expr
    c: sp.Expr
    k: sp.Expr
    nu: sp.Expr
    first_order: Vec          # θ' = ... (backward error analysis, weight decay inside L̃)
    first_order_paper: Vec    # θ' = ... (modified loss applied to L only: the paper's form)
    modified_loss_coeff: sp.Expr  # μ in L̃ = L + μ|∇L|² (the c-scaled gradient flow of L̃)


@dataclass(frozen=True)
class ContinuousLaw:
    """The projected ODE for the quantity and its solution."""

    closed: bool
    reason: str = ""
    order: int = 0                           # 1: paper's first-order form; 2: damped oscillator
    decay: sp.Expr = sp.Integer(0)           # first order: a in x' = −a x + b F
    drive_coeff: sp.Expr = sp.Integer(0)     # first order: b (F = |g|² in the group's signed form)
    gamma: sp.Expr = sp.Integer(0)           # second order: x'' + 2γx' + ω²x = drive
    omega2: sp.Expr = sp.Integer(0)
    drive: sp.Expr = sp.Integer(0)           # in terms of K = B(θ', θ') (2K for quadratic, 0 linear)
    ode: sp.Eq | None = None
    solution: sp.Eq | None = None
    regimes: dict[str, dict[str, sp.Expr]] = field(default_factory=dict)


def _two_state_coeffs(spec: RuleSpec) -> tuple[sp.Expr, ...]:
    th, v, g = Vec.of("th"), Vec.of("v"), Vec.of("g")
    th1, v1 = sgd_step(spec, th, v if spec.momentum else ZERO, g)
    return (th1.coeff("th"), th1.coeff("v"), th1.coeff("g"), v1.coeff("th"), v1.coeff("v"), v1.coeff("g"))


def multistep_relation(spec: RuleSpec) -> Vec:
    """The buffer-free relation between θ_{n+1}, θ_n, θ_{n−1}, ĝ_n, ĝ_{n−1} (constant η)."""
    a, b, c, p, q, r = _two_state_coeffs(spec)
    if not spec.momentum:
        return Vec({"th+1": 1, "th": -a, "g": -c})
    return Vec({"th+1": 1, "th": -(a + q), "th-1": sp.expand(a * q - b * p), "g": -c,
                "g-1": sp.expand(q * c - b * r)})


@lru_cache(maxsize=None)
def modified_flow(spec: RuleSpec) -> ModifiedFlow:
    """Backward error analysis of the rule to second order in the step h."""
    h = H_STEP
    rel = multistep_relation(spec)
    eta_of_h = h / (1 - DAMP) if spec.momentum else h
    taylor = {
        "th+1": Vec({"th": 1, "th1": h, "th2": h**2 / 2}),
        "th": Vec.of("th"),
        "th-1": Vec({"th": 1, "th1": -h, "th2": h**2 / 2}),
        "g": Vec.of("g"),
        "g-1": Vec({"g": 1, "Hth1": -h}),   # ĝ(θ(t−h)) = g − h Hθ' + O(h²)
    }
    expanded = rel.subs_basis(taylor).map_coeffs(
        lambda e: sp.series(sp.expand(e.subs(ETA, eta_of_h)), h, 0, 3).removeO())
    norm = sp.cancel(expanded.coeff("g"))          # the gradient's coefficient is O(h)
    flow = expanded.map_coeffs(lambda e: sp.factor(sp.expand(sp.cancel(e / norm))))
    m, c, k = flow.coeff("th2"), flow.coeff("th1"), flow.coeff("th")
    nu = flow.coeff("Hth1")
    g, th = Vec.of("g"), Vec.of("th")
    lead = (g + th * k) * (-1 / c)                  # leading-order flow θ' = −(g + kθ)/c
    hess = lambda name: Vec.of("H" + name)          # noqa: E731 - the Hessian as a formal operator
    theta2 = (lead.apply(hess) + lead * k) * (-1 / c)   # θ'' = −(H + k)θ'/c
    first = (g + th * k + theta2 * m) * (-1 / c)
    paper = (g + th * k + (g.apply(hess) * (1 / c**2)) * m) * (-1 / c)
    mu = sp.factor(m / (2 * c**2))
    return ModifiedFlow(h, m, c, k, nu, first.map_coeffs(sp.factor), paper.map_coeffs(sp.factor), mu)


def _projection_rules(quadratic: bool):
    """Scalar values of the projection ⟨ξ, ·⟩ on basis vectors, from the two constraints."""
    if quadratic:
        # B(θ, w) = ⟨ξ, w⟩ with ξ = Sθ;  ⟨ξ, g⟩ = 0;  ⟨ξ, Hw⟩ = ⟨Hξ, w⟩ = −⟨Sg, w⟩ = −B(g, w).
        names = {"th": "x", "th1": "x1h", "th2": "x2h"}

        def rule(a: str, b: str):
            if a == "th" and b == "g":
                return 0
            if a == "th" and b.startswith("H"):
                return -BilinearForm("B")(Vec.of("g"), Vec.of(b[1:]))
            if a == "th" and b in names:
                return sp.Symbol(names[b])
            if a == "th1" and b == "th1":
                return sp.Symbol("K")
            return None
        return BilinearForm("B", rule)

    def lrule(a: str):  # ℓ(w) = ⟨c, w⟩ with ξ = c;  ⟨c, g⟩ = 0;  ⟨c, Hw⟩ = ⟨Hc, w⟩ = 0.
        if a == "g" or a.startswith("H"):
            return 0
        return sp.Symbol({"th": "x", "th1": "x1", "th2": "x2"}[a])
    return LinearForm("l", lrule)


def _kernels(order: int, decay: sp.Expr | None = None) -> dict[str, dict[str, sp.Expr]]:
    """The solution kernels of the projected ODE (first order: K = G = e^{−at}, a = ``decay``)."""
    if order == 1:
        k = _kernel_table(1)["first_order"]["K"].subs(sp.Symbol("a", positive=True), decay)
        return {"first_order": {"K": k, "G": k}}
    return _kernel_table(2)


@lru_cache(maxsize=None)
def _kernel_table(order: int) -> dict[str, dict[str, sp.Expr]]:
    """K (x(0)=1, x'(0)=0) and G (x(0)=0, x'(0)=1: the impulse response) from ``dsolve``.

    Second order: one entry per damping regime, ω² = γ² + Ω² (under), γ² (critical), γ² − Ω² (over);
    Duhamel's principle then gives x(t) = x(0)K(t) + ∫₀ᵗ G(t−τ) f(τ) dτ.
    """
    t = T
    x = XF(t)
    hint = "nth_linear_constant_coeff_homogeneous"
    if order == 1:
        a = sp.Symbol("a", positive=True)
        sol = sp.dsolve(x.diff(t) + a * x, x, ics={XF(0): 1}, hint=hint).rhs
        return {"first_order": {"K": sol, "G": sol}}
    out: dict[str, dict[str, sp.Expr]] = {}
    g, W = GAMMA, BIG_OMEGA
    for regime, om2 in (("under-damped", g**2 + W**2), ("critical", g**2), ("over-damped", g**2 - W**2)):
        eq = x.diff(t, 2) + 2 * g * x.diff(t) + om2 * x
        gen = sp.dsolve(eq, x, hint=hint).rhs
        consts = sorted(gen.free_symbols - {t, g, W}, key=str)
        kern = {}
        for name, (x0, v0) in (("K", (1, 0)), ("G", (0, 1))):
            sol = sp.solve([gen.subs(t, 0) - x0, gen.diff(t).subs(t, 0) - v0], consts, dict=True)[0]
            kern[name] = sp.powsimp(sp.expand(gen.subs(sol)))
        kern["Omega"] = sp.sqrt(sp.Abs(OMEGA2 - GAMMA**2))
        out[regime] = kern
    return out


@lru_cache(maxsize=None)
def continuous_law(quadratic: bool, spec: RuleSpec) -> ContinuousLaw:
    """Project the modified flow on the generator and solve the resulting ODE."""
    if not spec.closed:
        return ContinuousLaw(False, f"{spec.describe()}: the update is not linear in (θ, v, ĝ)")
    flow = modified_flow(spec)
    form = _projection_rules(quadratic)
    t = T
    if not spec.momentum:  # the paper's first-order form: modified loss on L, decay outside
        rate = 2 * form(Vec.of("th"), flow.first_order_paper) if quadratic else form(flow.first_order_paper)
        rate = sp.expand(rate)
        x = sp.Symbol("x")
        decay = sp.factor(-rate.coeff(x))
        rest = sp.expand(rate + decay * x)
        big_g = BilinearForm("B")(Vec.of("g"), Vec.of("g"))
        b = sp.factor(rest.coeff(big_g)) if rest != 0 else sp.Integer(0)
        if sp.expand(rest - b * big_g) != 0:
            return ContinuousLaw(False, f"projection leaves {rest}")
        F = sp.Function("F")
        ode = sp.Eq(XF(t).diff(t), -decay * XF(t) + b * F(t))
        kern = _kernels(1, decay)
        K = kern["first_order"]["K"]
        sol = sp.Eq(XF(t), X0 * K + b * sp.Integral(K.subs(t, t - TAU) * F(TAU), (TAU, 0, t)))
        return ContinuousLaw(True, order=1, decay=decay, drive_coeff=b, ode=ode, solution=sol,
                             regimes=kern)
    E = Vec({"th2": flow.m, "th1": flow.c, "th": flow.k, "g": 1, "Hth1": flow.nu})
    x, x1, x2, K = sp.symbols("x x1 x2 K")
    if quadratic:  # x' = 2B(θ,θ'), x'' = 2B(θ',θ') + 2B(θ,θ'')
        proj = form(Vec.of("th"), E).subs({sp.Symbol("x2h"): (x2 - 2 * K) / 2, sp.Symbol("x1h"): x1 / 2})
    else:
        proj = form(E)
    proj = sp.expand(proj)
    unknown = proj.free_symbols - {x, x1, x2, K} - flow.m.free_symbols - flow.c.free_symbols \
        - flow.k.free_symbols - {H_STEP}
    if unknown:
        return ContinuousLaw(False, "the projected modified flow contains "
                             + ", ".join(sorted(map(str, unknown)))
                             + ", which no recorded statistic determines (Hθ' from Nesterov's look-ahead)")
    rhs = sp.expand(sp.solve(proj, x2)[0])         # x'' = −2γ x' − ω² x + drive
    gamma = sp.factor(-rhs.coeff(x1) / 2)
    omega2 = sp.factor(-rhs.coeff(x))
    drive = sp.factor(sp.expand(rhs + 2 * gamma * x1 + omega2 * x))
    f = sp.Function("f")
    ode = sp.Eq(XF(t).diff(t, 2) + 2 * GAMMA * XF(t).diff(t) + OMEGA2 * XF(t), drive.subs(K, f(t) / 2)
                if drive != 0 else 0)
    Gk = sp.Function("G")
    Kk = sp.Function("K")
    sol = sp.Eq(XF(t), X0 * Kk(t) + (sp.Integral(Gk(t - TAU) * f(TAU), (TAU, 0, t)) if drive != 0 else 0))
    return ContinuousLaw(True, order=2, gamma=gamma, omega2=omega2, drive=drive, ode=ode,
                         solution=sol, regimes=_kernels(2))
