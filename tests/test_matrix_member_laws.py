"""Matrix symmetries in the member form: symbolic derivation, and the exact laws against float64 SGD.

The numeric toy is the member form itself: views X_i (act M) and Y_j (act M⁻ᵀ), concatenated to
X [r, m] and Y [r, k], enter the loss only through F = Xᵀ R Y (R = I: GL(r)-invariant; R a block
rotation: invariant only under the rotary subgroup), with a fresh random weighting per step (the
minibatch noise).  A numpy reproduction of torch.optim.SGD (checked against torch in
test_symbolic_matrix.py) trains it; the derived laws forecast C from C_0 and the recorded r×r statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symmetry_engine.matrix_symmetry import gl_law_count, rope_basis, symmetric_part_of_span
from symmetry_engine.symbolic import RuleSpec
from symmetry_engine.symbolic.matrix_laws import derive_member_laws, forecast_matrix
from symmetry_engine.symbolic.matrix_members import basis_key, derive_member_family


# --------------------------------------------------------------------------------------------- symbolic

@pytest.mark.parametrize("acts,cols", [(("M", "M^-T"), (3, 2)), (("M", "M", "M^-T"), (2, 1, 2)),
                                       (("M", "M", "M^-T", "M^-T"), (2, 1, 2, 1)), (("M^-T", "M"), (1, 2))])
def test_member_family_derivation(acts, cols) -> None:
    r = 2
    fam = derive_member_family(acts, cols, r)
    A = sum((c * b for c, b in zip(fam.coefficients, fam.basis)), sp.zeros(r, r))
    for act, X, xi in zip(acts, fam.views, fam.generator):
        want = A * X if act == "M" else -A.T * X        # d/dε (I + εA)⁻ᵀ = −Aᵀ, derived by sympy
        assert sp.expand(xi - want) == sp.zeros(*X.shape)
    # Q = Σ G_X Xᵀ − Σ Y G_Yᵀ and C = Σ X Xᵀ − Σ Y Yᵀ (sign conventions checked by derivation)
    assert fam.constraint_is_standard and fam.quantity_is_standard and fam.invariant
    assert all(fam.theorem1_holds)
    assert all(sp.simplify(e) == 0 for e in fam.rates)
    assert len(fam.conserved) == r * (r + 1) // 2
    m = sum(c for a, c in zip(acts, cols) if a == "M")
    assert fam.law_count == gl_law_count(r, m, sum(cols) - m) == 3


def test_wrong_sign_convention_is_not_the_constraint() -> None:
    """The derivation distinguishes Y G_Yᵀ from G_Y Yᵀ (they differ by an antisymmetric matrix)."""
    fam = derive_member_family(("M", "M^-T"), (2, 2), 2)
    X, Y = fam.views
    GX, GY = fam.gradient
    wrong = sp.expand(GX * X.T - GY * Y.T)
    assert any(sp.expand(c - sum((b * q for b, q in zip(B, wrong)), sp.Integer(0))) != 0
               for c, B in zip(fam.constraints, fam.basis))


def test_narrow_members_give_fewer_laws() -> None:
    """r = 3 with one column on each side: C has rank ≤ 2, so 3·2 − 1 = 5 independent entries, not 6."""
    fam = derive_member_family(("M", "M^-T"), (1, 1), 3)
    assert len(fam.conserved) == 6 and fam.law_count == gl_law_count(3, 1, 1) == 5


def test_rotary_subgroup_conserves_block_traces() -> None:
    basis = rope_basis(4)
    fam = derive_member_family(("M", "M", "M^-T", "M^-T"), (2, 1, 2, 1), 4, basis_key(basis))
    assert fam.constraint_is_standard and fam.quantity_is_standard and all(fam.theorem1_holds)
    got = sorted(tuple(int(v) for v in S) for S in fam.conserved)
    assert got == [(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1), (1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    assert fam.law_count == 2
    # the numeric 𝔤 ∩ Sym(r) used by the tracker and the counting spans the same matrices
    num = symmetric_part_of_span(np.array(basis))
    sym = np.array([np.array(S, dtype=float).reshape(4, 4) for S in fam.conserved])
    both = np.concatenate([num.reshape(len(num), -1), sym.reshape(len(sym), -1)])
    assert np.linalg.matrix_rank(both, tol=1e-9) == len(num) == len(sym)


def test_non_transpose_closed_algebra() -> None:
    """Upper-triangular 𝔤: E01's Theorem-1 condition ⟨E10, Q⟩ is not a constraint, and C01 is not
    conserved; only the diagonal (𝔤 ∩ Sym) is.  A single nilpotent E01 conserves nothing."""
    tri = [[[1, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [0, 1]]]
    fam = derive_member_family(("M", "M^-T"), (2, 2), 2, basis_key(tri))
    assert fam.theorem1_holds == (True, False, True)
    assert sorted(tuple(S) for S in fam.conserved) == [(0, 0, 0, 1), (1, 0, 0, 0)]
    assert fam.law_count == 2 == len(symmetric_part_of_span(np.array(tri, float)))
    nil = derive_member_family(("M", "M^-T"), (2, 2), 2, basis_key([[[0, 1], [0, 0]]]))
    assert nil.conserved == () and nil.law_count == 0


@pytest.mark.parametrize("spec", [RuleSpec(), RuleSpec(decoupled=True), RuleSpec(momentum=True),
                                  RuleSpec(momentum=True, decoupled=True)], ids=lambda s: s.describe())
def test_member_laws_do_not_depend_on_the_act_signature(spec: RuleSpec) -> None:
    ref = derive_member_laws(spec)
    for acts in [("M",), ("M", "M", "M^-T"), ("M^-T", "M", "M^-T", "M"), ("M^-T",)]:
        got = derive_member_laws(spec, acts)
        assert (got.identity, got.law, got.u_first, got.u_step) == (ref.identity, ref.law, ref.u_first, ref.u_step)


def test_bad_act_is_refused() -> None:
    with pytest.raises(ValueError, match="acts"):
        derive_member_laws(RuleSpec(), ("M", "M^T"))


# --------------------------------------------------------------------------------------------- numeric

def block_rotation(r: int, angles: np.ndarray) -> np.ndarray:
    R = np.zeros((r, r))
    for p, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        R[2 * p:2 * p + 2, 2 * p:2 * p + 2] = [[c, -s], [s, c]]
    return R


class MemberToy:
    """Members X_i [r, k_i]; loss Σ_R Σ w ⊙ logcosh(Xᵀ R Y − T) with fresh (w, T) per step."""

    def __init__(self, rng: np.random.Generator, r: int, acts: tuple[str, ...], cols: tuple[int, ...],
                 rotations: list[np.ndarray] | None = None) -> None:
        self.rng, self.r, self.acts, self.cols = rng, r, acts, cols
        self.R = rotations or [np.eye(r)]
        self.params = [rng.normal(size=(r, k)) * 0.7 for k in cols]

    def split(self, mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = [m for m, a in zip(mats, self.acts) if a == "M"]
        y = [m for m, a in zip(mats, self.acts) if a == "M^-T"]
        return (np.concatenate(x, 1) if x else np.zeros((self.r, 0))), (np.concatenate(y, 1) if y else np.zeros((self.r, 0)))

    def grads(self, mats: list[np.ndarray]) -> list[np.ndarray]:
        X, Y = self.split(mats)
        gX, gY = np.zeros_like(X), np.zeros_like(Y)
        for R in self.R:
            F = X.T @ R @ Y
            w = self.rng.uniform(0.2, 1.0, size=F.shape)
            G = w * np.tanh(F - self.rng.normal(size=F.shape))
            gX += R @ Y @ G.T
            gY += R.T @ X @ G
        out, ix, iy = [], 0, 0
        for a, k in zip(self.acts, self.cols):
            if a == "M":
                out.append(gX[:, ix:ix + k]); ix += k
            else:
                out.append(gY[:, iy:iy + k]); iy += k
        return out

    def pair(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        """P(a, b) = Σ_M a bᵀ − Σ_{M⁻ᵀ} b aᵀ."""
        return sum((x @ y.T if act == "M" else -(y @ x.T)) for x, y, act in zip(a, b, self.acts))


def simulate(toy: MemberToy, lrs: np.ndarray, lam: float, beta: float, d: float, decoupled: bool) -> dict[str, np.ndarray]:
    th = [p.copy() for p in toy.params]
    buf = None
    rec: dict[str, list] = {"C": [], "Q": [], "Gamma": [], "D": [], "scale": [], "gsq": []}
    for eta in lrs:
        g = toy.grads(th)
        direction = g if decoupled else [gi + lam * ti for gi, ti in zip(g, th)]
        if beta > 0:
            buf = [x.copy() for x in direction] if buf is None else [beta * b + (1 - d) * x for b, x in zip(buf, direction)]
            step = buf
        else:
            step = direction
        shrink = 1 - eta * lam if decoupled else 1.0
        new = [shrink * t - eta * s for t, s in zip(th, step)]
        delta = [a - b for a, b in zip(new, th)]
        rec["C"].append(toy.pair(th, th)); rec["Q"].append(toy.pair(g, th))
        rec["Gamma"].append(toy.pair(g, g)); rec["D"].append(toy.pair(delta, delta))
        rec["scale"].append(sum(float((t * t).sum()) for t in th))
        rec["gsq"].append(sum(float((x * x).sum()) for x in g))
        th = new
    rec["C"].append(toy.pair(th, th))
    rec["scale"].append(sum(float((t * t).sum()) for t in th))
    return {k: np.array(v) for k, v in rec.items()}


def schedule(kind: str, eta: float, T: int, rng: np.random.Generator) -> np.ndarray:
    n = np.arange(T)
    return {"constant": np.full(T, eta), "step": np.where(n < T // 2, eta, eta / 4),
            "cosine": eta * 0.5 * (1 + np.cos(np.pi * n / T)) + 1e-4,
            "random": eta * rng.uniform(0.3, 1.0, size=T)}[kind]


def law_error(pred: np.ndarray, out: dict[str, np.ndarray], dirs: np.ndarray | None = None) -> float:
    diff = pred - out["C"]
    if dirs is not None:
        diff = np.einsum("lij,nij->nl", dirs, diff)
    return float(np.max(np.linalg.norm(diff.reshape(len(diff), -1), axis=1)) / out["scale"].max())


@st.composite
def member_runs(draw):
    r = draw(st.integers(1, 4))
    n = draw(st.integers(2, 5))
    acts = ["M", "M^-T"] + [draw(st.sampled_from(["M", "M^-T"])) for _ in range(n - 2)]
    acts = tuple(draw(st.permutations(acts)))
    cols = tuple(draw(st.integers(1, 4)) for _ in acts)
    beta = draw(st.one_of(st.just(0.0), st.floats(0.05, 0.95)))
    return dict(r=r, acts=acts, cols=cols, beta=beta,
                d=draw(st.floats(0.0, 0.5)) if beta > 0 else 0.0,
                eta=draw(st.floats(1e-3, 0.15)) * (1 - beta), lam=draw(st.floats(0.0, 0.05)),
                decoupled=draw(st.booleans()), steps=draw(st.integers(10, 120)),
                sched=draw(st.sampled_from(["constant", "step", "cosine", "random"])), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(member_runs())
def test_exact_member_laws_against_sgd(run) -> None:
    """Plain SGD and heavy ball, coupled or decoupled decay, schedules: the law (Q = 0) and the identity
    (recorded Q) forecast C from C_0 to ≤ 1e-12 of the scale of its terms."""
    rng = np.random.default_rng(run["seed"])
    toy = MemberToy(rng, run["r"], run["acts"], run["cols"])
    lrs = schedule(run["sched"], run["eta"], run["steps"], rng)
    out = simulate(toy, lrs, run["lam"], run["beta"], run["d"], run["decoupled"])
    spec = RuleSpec(momentum=run["beta"] > 0, decoupled=run["decoupled"])
    kw = dict(lam=run["lam"], beta=run["beta"], d=run["d"], acts=run["acts"])
    exact = forecast_matrix(spec, out["C"][0], out, lrs, **kw)
    law = forecast_matrix(spec, out["C"][0], {**out, "Q": np.zeros_like(out["Q"])}, lrs, **kw)
    assert law_error(exact, out) <= 1e-12
    assert law_error(law, out) <= 1e-12
    # Q is the symmetry's constraint: round-off here, and the same formula the derivation names
    breaking = np.linalg.norm(out["Q"], axis=(1, 2)) / np.sqrt(out["gsq"] * out["scale"][:-1])
    assert float(breaking.max()) <= 1e-13


def test_an_update_that_breaks_the_symmetry_breaks_the_law() -> None:
    """The same forecasts on a loss that is not invariant (a fixed non-orthogonal mixing of X's rows):
    the identity still closes, the law does not."""
    rng = np.random.default_rng(7)
    toy = MemberToy(rng, 3, ("M", "M", "M^-T"), (2, 1, 3))
    mix = np.eye(3) + 0.5 * rng.normal(size=(3, 3))
    grads = toy.grads
    toy.grads = lambda mats: [g if a == "M^-T" else mix.T @ g for g, a in zip(grads(mats), toy.acts)]  # type: ignore[method-assign]
    lrs = np.full(80, 0.05)
    out = simulate(toy, lrs, 0.01, 0.9, 0.0, False)
    spec = RuleSpec(momentum=True)
    exact = forecast_matrix(spec, out["C"][0], out, lrs, lam=0.01, beta=0.9, acts=toy.acts)
    law = forecast_matrix(spec, out["C"][0], {**out, "Q": np.zeros_like(out["Q"])}, lrs, lam=0.01, beta=0.9, acts=toy.acts)
    assert law_error(exact, out) <= 1e-12
    assert law_error(law, out) > 1e-3
    assert float((np.linalg.norm(out["Q"], axis=(1, 2)) / np.sqrt(out["gsq"] * out["scale"][:-1])).max()) > 1e-2


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_rotary_subgroup_projected_law(beta: float) -> None:
    """Loss through rotations with distinct frequencies: only M commuting with them is a symmetry.  The
    projections on 𝔤 ∩ Sym (block traces) follow the law with ⟨B, Q⟩ = 0; the full C does not."""
    r = 4
    rng = np.random.default_rng(11)
    rots = [block_rotation(r, np.array([0.3, 1.1]) * pos) for pos in (1, 2, 5)]
    toy = MemberToy(rng, r, ("M", "M", "M^-T", "M^-T"), (3, 1, 3, 1), rots)
    lrs = schedule("step", 0.05 * (1 - beta), 150, rng)
    out = simulate(toy, lrs, 0.01, beta, 0.1 if beta else 0.0, False)
    spec = RuleSpec(momentum=beta > 0)
    kw = dict(lam=0.01, beta=beta, d=0.1 if beta else 0.0, acts=toy.acts)
    law = forecast_matrix(spec, out["C"][0], {**out, "Q": np.zeros_like(out["Q"])}, lrs, **kw)
    basis = np.array(rope_basis(r))
    dirs = symmetric_part_of_span(basis)
    assert len(dirs) == 2
    assert law_error(law, out, dirs) <= 1e-12
    assert law_error(law, out) > 1e-3            # the GL(4) law fails: this is not a GL(4) symmetry
    flatQ = out["Q"].reshape(len(out["Q"]), -1)
    P = np.linalg.qr(basis.reshape(len(basis), -1).T)[0]
    assert np.abs(flatQ @ P).max() <= 1e-13 * np.abs(flatQ).max()   # Q ⊥ 𝔤: the subgroup's constraint
    assert np.abs(flatQ).max() > 1e-3                                 # and Q itself is far from 0


def test_member_engine_never_imports_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, symmetry_engine.symbolic as s, symmetry_engine.matrix_symmetry as m; "
            "s.derive_member_family(('M', 'M^-T'), (1, 1), 2); s.derive_member_laws(s.RuleSpec(), ('M', 'M', 'M^-T')); "
            "m.multihead_attention('a', 4, 2)[0].conserved_directions(); assert 'torch' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
