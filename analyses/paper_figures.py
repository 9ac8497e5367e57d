"""Paper figures 3 and 4 (matplotlib, Agg backend).

Figure 3: the level sets of the three conserved quantities (hyperplane, sphere, hyperbola) with the
generator field ξ drawn on them.  Figure 4: on L(w) = ½ wᵀAw, gradient descent and heavy-ball iterates
against gradient flow and the modified dynamics, whose coefficients come from the symbolic engine's
backward error analysis (modified loss for GD, second-order modified flow for heavy ball).
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from scipy.linalg import expm  # noqa: E402

from symmetry_engine.symbolic import RuleSpec, derive_family, modified_flow  # noqa: E402
from symmetry_engine.symbolic.modified import H_STEP  # noqa: E402
from symmetry_engine.symbolic.optimizers import BETA, DAMP, LAM  # noqa: E402

A_MATRIX = np.array([[2.5, -1.5], [-1.5, 2.5]])
W0 = np.array([1.2, -0.25])


LABELS3 = {"translation": (r"$\theta_1$", r"$\theta_2$"), "scale": (r"$\theta_1$", r"$\theta_2$"),
           "rescale": (r"$\theta_{A_1}$", r"$\theta_{A_2}$")}


def figure3_fig():
    """The three conserved-quantity geometries with level sets and the generator field (a Figure)."""
    grid = np.linspace(-2, 2, 401)
    X, Y = np.meshgrid(grid, grid)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    specs = {"translation": (r"hyperplane  $\langle\theta_A, \mathbf{1}\rangle = c$", X + Y),
             "scale": (r"sphere  $|\theta_A|^2 = c$", X**2 + Y**2),
             "rescale": (r"hyperbola  $|\theta_{A_1}|^2 - |\theta_{A_2}|^2 = c$", X**2 - Y**2)}
    q = np.linspace(-1.8, 1.8, 9)
    QX, QY = np.meshgrid(q, q)
    for ax, (kind, (title, Z)) in zip(axes, specs.items()):
        fam = derive_family(kind)  # the generator drawn is the engine's ξ = Sθ + c
        sx, sy = fam.signs[0], fam.signs[2] if kind == "rescale" else fam.signs[1]
        cx, cy = fam.offset[0], fam.offset[1]
        U, V = sx * QX + cx, sy * QY + cy
        cs = ax.contour(X, Y, Z, levels=15, cmap="viridis", linewidths=1.0)
        fig.colorbar(cs, ax=ax, shrink=0.8, pad=0.02).set_label("c (value of the conserved quantity)", fontsize=8)
        ax.quiver(QX, QY, U, V, color="0.4", alpha=0.6, scale=30, gid=f"xi|{kind}")
        ax.set_title(f"{kind}: {title}", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xlabel(LABELS3[kind][0])
        ax.set_ylabel(LABELS3[kind][1])
    fig.suptitle(r"Fig. 3 — level sets of the conserved quantities (lines, coloured by c); arrows: the symmetry "
                 r"generator $\xi$, along which the loss does not change")
    fig.tight_layout()
    return fig


def figure3(path: str | os.PathLike) -> str:
    """Draw the three conserved-quantity geometries with level sets; returns the path written."""
    fig = figure3_fig()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _gd(eta: float, steps: int) -> np.ndarray:
    w, out = W0.copy(), [W0.copy()]
    for _ in range(steps):
        w = w - eta * A_MATRIX @ w
        out.append(w.copy())
    return np.array(out)


def _heavy_ball(eta: float, beta: float, steps: int) -> np.ndarray:
    w, v, out = W0.copy(), np.zeros(2), [W0.copy()]
    for n in range(steps):
        d = A_MATRIX @ w
        v = d if n == 0 else beta * v + d
        w = w - eta * v
        out.append(w.copy())
    return np.array(out)


def _coeffs(spec: RuleSpec, eta: float, beta: float) -> tuple[float, float, float]:
    """(m, c, μ) of the engine's modified flow m θ'' + c θ' = −g and modified loss L + μ|∇L|²."""
    flow = modified_flow(spec)
    vals = {H_STEP: eta, BETA: beta, DAMP: 0.0, LAM: 0.0}
    return float(flow.m.subs(vals)), float(flow.c.subs(vals)), float(flow.modified_loss_coeff.subs(vals))


LOSS_LEVELS = (0.01, 0.05, 0.15, 0.35, 0.7, 1.2, 2.0)


def figure4_fig():
    """GD and heavy ball on the quadratic vs gradient flow and the modified dynamics.

    Returns the Figure and the mean distance from the iterates to each continuous curve.
    """
    A = A_MATRIX
    gd_eta, gd_steps = 0.1, 20
    hb_eta, hb_beta, hb_steps = 0.01, 0.9, 50
    gd = _gd(gd_eta, gd_steps)
    hb = _heavy_ball(hb_eta, hb_beta, hb_steps)

    _, c, mu = _coeffs(RuleSpec(), gd_eta, 0.0)
    t_gd = gd_eta * np.arange(gd_steps + 1)
    flow_gd = np.array([expm(-A * t / c) @ W0 for t in t_gd])
    # Gradient flow of the modified loss L + μ|∇L|²: c w' = −(A + 2μA²) w.
    mod_gd = np.array([expm(-(A + 2 * mu * A @ A) * t / c) @ W0 for t in t_gd])

    m, c, _ = _coeffs(RuleSpec(momentum=True), hb_eta, hb_beta)
    t_hb = hb_eta * np.arange(hb_steps + 1)
    flow_hb = np.array([expm(-A * t / c) @ W0 for t in t_hb])   # (1−β) w' = −A w
    rhs = lambda t, y: np.r_[y[2:], (-A @ y[:2] - c * y[2:]) / m]  # noqa: E731  m w'' + c w' = −A w
    sol = solve_ivp(rhs, (0, t_hb[-1]), np.r_[W0, 0.0, 0.0], t_eval=t_hb, rtol=1e-10, atol=1e-12)
    mod_hb = sol.y[:2].T

    dist = lambda a, b: float(np.mean(np.linalg.norm(a - b, axis=1)))  # noqa: E731
    res = {"gd_gradient_flow": dist(gd, flow_gd), "gd_modified": dist(gd, mod_gd),
           "momentum_gradient_flow": dist(hb, flow_hb), "momentum_modified": dist(hb, mod_hb)}

    grid = np.linspace(-0.6, 1.5, 301)
    X, Y = np.meshgrid(grid, np.linspace(-0.6, 0.9, 241))
    Z = 0.5 * (A[0, 0] * X**2 + 2 * A[0, 1] * X * Y + A[1, 1] * Y**2)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.0))
    panels = ((axes[0], "GD (η = 0.1, 20 steps)", gd, flow_gd, mod_gd, "gd"),
              (axes[1], "heavy ball (η = 0.01, β = 0.9, 50 steps)", hb, flow_hb, mod_hb, "momentum"))
    for ax, title, it, fl, mo, key in panels:
        cs = ax.contour(X, Y, Z, levels=LOSS_LEVELS, colors="0.6", linewidths=0.7)
        ax.clabel(cs, fontsize=7, fmt="L=%g")
        ax.plot(fl[:, 0], fl[:, 1], "b-", lw=1.5, label="gradient flow", gid=f"{key}|flow")
        ax.plot(mo[:, 0], mo[:, 1], "r--", lw=1.5, label="modified dynamics (backward error analysis)",
                gid=f"{key}|modified")
        ax.plot(it[:, 0], it[:, 1], "ko", ms=3, label="iterates", gid=f"{key}|iterates")
        ax.plot([0], [0], marker="*", color="goldenrod", ms=11, ls="", label="minimum w* = 0")
        ax.plot([], [], color="0.6", lw=0.7, label="level sets of L(w) = ½ wᵀAw")
        ax.set_title(title)
        ax.set_xlabel(r"$w_1$")
        ax.set_ylabel(r"$w_2$")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7.5)
        ax.text(0.02, 0.02, f"mean distance to the iterates: gradient flow {res[key + '_gradient_flow']:.4f}, "
                f"modified {res[key + '_modified']:.4f}", transform=ax.transAxes, fontsize=8)
    fig.suptitle("Fig. 4 — iterates vs gradient flow and modified dynamics on L(w) = ½ wᵀAw, "
                 "A = [[2.5, −1.5], [−1.5, 2.5]], from w₀ = (1.2, −0.25)")
    fig.tight_layout()
    return fig, res


def figure4(path: str | os.PathLike) -> dict[str, float]:
    """Write Figure 4 to ``path``; returns (and prints) the mean distances from the iterates to each curve."""
    fig, res = figure4_fig()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(", ".join(f"{k} = {v:.5f}" for k, v in res.items()))
    return res
