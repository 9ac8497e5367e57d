"""GL(r) symmetry: the symbolic derivation against theory and against float64 simulations.

The toy is a deep linear two-layer model z = W2 W1a [x; 1] + b2 (W1a = [W1 | b1], r hidden units)
with softmax cross-entropy or MSE, trained by a numpy reproduction of torch.optim.SGD (v_1 = d_0
undampened, dampening, coupled or decoupled weight decay, per-step learning rates; checked against
torch below).  The derived laws forecast C = W1a W1aᵀ − W2ᵀ W2 from C_0 and the recorded r×r
statistics only.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symmetry_engine.symbolic import RuleSpec
from symmetry_engine.symbolic.matrix_families import derive_matrix_family, independent_law_count
from symmetry_engine.symbolic.matrix_laws import (compile_law, derive_matrix_laws, forecast_matrix,
                                                   law_expr, stat)
from symmetry_engine.symbolic.optimizers import BETA, DAMP, ETA, ETA_PREV, LAM


class DeepLinear:
    """Parameters (W1a r×(p+1), W2 k×r, b2 k) and exact minibatch gradients."""

    def __init__(self, rng: np.random.Generator, p: int = 5, r: int = 4, k: int = 3, n: int = 64,
                 loss: str = "ce"):
        self.rng, self.loss = rng, loss
        self.X = rng.normal(size=(n, p))
        self.y = rng.integers(0, k, size=n) if loss == "ce" else rng.normal(size=(n, k))
        self.params = [rng.normal(size=(r, p + 1)) * 0.6, rng.normal(size=(k, r)) * 0.6, rng.normal(size=k) * 0.1]

    def grads(self, params: list[np.ndarray], batch: int | None = 16) -> list[np.ndarray]:
        idx = self.rng.choice(len(self.X), size=batch, replace=False) if batch else np.arange(len(self.X))
        xa = np.c_[self.X[idx], np.ones(len(idx))]
        W1, W2, b2 = params
        h = xa @ W1.T
        z = h @ W2.T + b2
        if self.loss == "ce":
            e = np.exp(z - z.max(1, keepdims=True))
            dz = e / e.sum(1, keepdims=True)
            dz[np.arange(len(idx)), self.y[idx]] -= 1.0
            dz /= len(idx)
        else:
            dz = 2.0 * (z - self.y[idx]) / z.size  # F.mse_loss, mean reduction
        dh = dz @ W2
        return [dh.T @ xa, dz.T @ h, dz.sum(0)]


def pair(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """P(a, b) = a1 b1ᵀ − b2ᵀ a2 (the layers' matrices; b2 is not in the group)."""
    return a[0] @ b[0].T - b[1].T @ a[1]


def simulate(model: DeepLinear, lrs: np.ndarray, lam: float, beta: float = 0.0, d: float = 0.0,
             decoupled: bool = False, batch: int | None = 16) -> dict[str, np.ndarray]:
    """torch.optim.SGD semantics; records C_n, Q_n, Γ_n, D_n (before each step) and C_T."""
    th = [p.copy() for p in model.params]
    buf = None
    rec: dict[str, list] = {"C": [], "Q": [], "Gamma": [], "D": []}
    for eta in lrs:
        g = model.grads(th, batch)
        direction = g if decoupled else [gi + lam * ti for gi, ti in zip(g, th)]
        if beta > 0:
            buf = [x.copy() for x in direction] if buf is None else \
                [beta * b + (1 - d) * x for b, x in zip(buf, direction)]
            step = buf
        else:
            step = direction
        shrink = 1 - eta * lam if decoupled else 1.0
        new = [shrink * t - eta * s for t, s in zip(th, step)]
        delta = [a - b for a, b in zip(new, th)]
        rec["C"].append(pair(th, th)), rec["Q"].append(pair(g, th))
        rec["Gamma"].append(pair(g, g)), rec["D"].append(pair(delta, delta))
        th = new
    rec["C"].append(pair(th, th))
    return {k: np.array(v) for k, v in rec.items()}


def rel_err(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(pred - meas, axis=(-2, -1)) / np.linalg.norm(meas, axis=(-2, -1))))


def zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


# --------------------------------------------------------------------------------------------- symbolic

@pytest.mark.parametrize("r,m,k", [(2, 3, 2), (2, 2, 3), (3, 3, 2)])
def test_family_derivation(r: int, m: int, k: int) -> None:
    fam = derive_matrix_family(r, m, k)
    xi1, xi2 = fam.generator
    assert sp.expand(xi1 - fam.A * fam.W1) == sp.zeros(r, m)
    assert sp.expand(xi2 + fam.W2 * fam.A) == sp.zeros(k, r)
    assert fam.invariant_product and fam.constraint_is_standard and fam.quantity_is_standard
    assert fam.symmetric and fam.theorem1_holds and fam.conserved
    assert fam.law_count == r * (r + 1) // 2


def test_law_count_formula() -> None:
    from symmetry_engine.matrix_symmetry import gl_law_count as generic_law_count
    for r in range(1, 5):
        for m in range(1, 4):
            for k in range(1, 4):
                assert independent_law_count(r, m, k) == generic_law_count(r, m, k)
                if m + k >= r:
                    assert generic_law_count(r, m, k) == r * (r + 1) // 2


def test_sgd_law_matches_theory() -> None:
    law = derive_matrix_laws(RuleSpec()).law
    C, Q, Gam = stat("C"), stat("Q"), stat("Gamma")
    theory = {C: (1 - ETA * LAM) ** 2, Gam: ETA ** 2, Q: -ETA * (1 - ETA * LAM), Q.T: -ETA * (1 - ETA * LAM)}
    assert set(law) == set(theory)
    assert all(zero(law[a] - theory[a]) for a in theory)
    # The same comparison as matrix expressions: derived − theory expands to the zero matrix.
    diff = (law_expr(law) - ((1 - ETA * LAM) ** 2 * C + ETA ** 2 * Gam - ETA * (1 - ETA * LAM) * (Q + Q.T)))
    assert sp.expand(diff.doit()) in (0, sp.ZeroMatrix(*C.shape))


def test_heavy_ball_u_recurrence_matches_scalar_form() -> None:
    laws = derive_matrix_laws(RuleSpec(momentum=True))
    C, Q, U1, D1 = stat("C"), stat("Q"), stat("U", "n-1"), stat("D", "n-1")
    k = BETA * ETA / ETA_PREV
    theory = {U1: k, D1: k, C: -ETA * (1 - DAMP) * LAM, Q.T: -ETA * (1 - DAMP)}
    assert set(laws.u_step) == set(theory) and all(zero(laws.u_step[a] - theory[a]) for a in theory)
    assert set(laws.u_first) == {C, Q.T} and zero(laws.u_first[C] + ETA * LAM) and zero(laws.u_first[Q.T] + ETA)
    U, D = stat("U"), stat("D")
    assert laws.identity == {C: 1, U: 1, U.T: 1, D: 1}
    assert laws.required == ("Q", "D", "eta")
    assert "Q_{n}^{T}" in laws.latex()["U"] and r"\eta_{n-1}" in laws.latex()["U"]


def test_compiled_law_is_vectorized_over_stacks() -> None:
    f = compile_law(derive_matrix_laws(RuleSpec()).law)
    rng = np.random.default_rng(0)
    C, Q, G = (rng.normal(size=(7, 3, 3)) for _ in range(3))
    eta = rng.uniform(0.01, 0.2, size=7)
    got = f({"C": C, "Q": Q, "Gamma": G}, eta, lam=0.01)
    e, a = eta[:, None, None], 1 - eta[:, None, None] * 0.01
    want = a ** 2 * C + e ** 2 * G - e * a * (Q + np.swapaxes(Q, 1, 2))
    assert np.allclose(got, want, rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------------------------- numeric

def test_constraint_holds_numerically() -> None:
    for loss in ("ce", "mse"):
        model = DeepLinear(np.random.default_rng(1), loss=loss)
        g = model.grads(model.params)
        q = pair(g, model.params)
        assert np.linalg.norm(q) < 1e-14 * np.linalg.norm(g[0] @ model.params[0].T) + 1e-15


def test_simulator_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    model = DeepLinear(np.random.default_rng(2))
    lrs, lam, beta, d = np.array([0.1, 0.05, 0.2, 0.1]), 0.01, 0.9, 0.3
    ps = [torch.tensor(p, requires_grad=True) for p in model.params]
    opt = torch.optim.SGD(ps, lr=0.1, momentum=beta, dampening=d, weight_decay=lam)
    model.rng = np.random.default_rng(5)
    out = simulate(model, lrs, lam, beta, d)
    model.rng = np.random.default_rng(5)  # the same minibatches for torch
    for eta in lrs:
        for group in opt.param_groups:
            group["lr"] = float(eta)
        g = model.grads([p.detach().numpy() for p in ps])
        for p, gi in zip(ps, g):
            p.grad = torch.tensor(gi)
        opt.step()
    final = [p.detach().numpy() for p in ps]
    assert np.allclose(pair(final, final), out["C"][-1], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("decoupled", [False, True])
def test_exact_sgd_law(loss: str, decoupled: bool) -> None:
    rng = np.random.default_rng(3)
    model = DeepLinear(rng, loss=loss)
    lrs = rng.uniform(0.02, 0.3, size=300)
    out = simulate(model, lrs, lam=0.02, decoupled=decoupled)
    pred = forecast_matrix(RuleSpec(decoupled=decoupled), out["C"][0], out, lrs, lam=0.02)
    assert rel_err(pred, out["C"]) <= 1e-10


@pytest.mark.parametrize("beta,d,decoupled", [(0.9, 0.0, False), (0.99, 0.3, False), (0.8, 0.1, True)])
def test_exact_heavy_ball_law(beta: float, d: float, decoupled: bool) -> None:
    rng = np.random.default_rng(4)
    model = DeepLinear(rng, loss="ce")
    lrs = np.where(np.arange(400) < 200, 0.05, 0.01) * rng.uniform(0.5, 1.5, size=400)
    out = simulate(model, lrs, lam=0.01, beta=beta, d=d, decoupled=decoupled)
    spec = RuleSpec(momentum=True, decoupled=decoupled)
    pred = forecast_matrix(spec, out["C"][0], out, lrs, lam=0.01, beta=beta, d=d)
    assert rel_err(pred, out["C"]) <= 1e-10


def gradient_flow_drift(eta: float, horizon: float = 2.0) -> float:
    model = DeepLinear(np.random.default_rng(6), loss="ce")
    steps = int(round(horizon / eta))
    out = simulate(model, np.full(steps, eta), lam=0.0, batch=None)
    return float(np.linalg.norm(out["C"][-1] - out["C"][0]) / np.linalg.norm(out["C"][0]))


def test_gradient_flow_conservation_is_first_order_in_eta() -> None:
    etas = np.array([0.04, 0.02, 0.01, 0.005])
    errs = np.array([gradient_flow_drift(e) for e in etas])
    order = np.polyfit(np.log(etas), np.log(errs), 1)[0]
    assert 0.9 < order < 1.1, (errs, order)
    assert errs[-1] < 1e-2


def test_matrix_engine_never_imports_torch() -> None:
    import subprocess
    import sys
    code = ("import sys, numpy as np, symmetry_engine.symbolic as s; s.derive_matrix_family(); "
            "s.derive_matrix_laws(s.RuleSpec(momentum=True)); "
            "s.forecast_matrix(s.RuleSpec(), np.eye(2), {'Q': np.zeros((1, 2, 2)), 'Gamma': np.zeros((1, 2, 2))}, "
            "np.array([0.1])); assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
