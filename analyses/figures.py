"""Figures for an evaluated run, in the style of the paper's Figures 1 and 5.

Figure 5 (``conservation.png``) puts theory on top of measurement for one layer per kind: column sums of
the final linear layer (translation), squared channel norms of a normalised layer (scale), differences of
squared channel norms across a homogeneous activation (rescale). Measured curves are thick and coloured,
the exact discrete law is dashed and the paper's continuous law dotted in the same colour, so an exact law
that matches hides nothing and a drifting continuous law is visible. Panels of kinds the run lacks are left
out. Figure 1 (``trajectories.png``) contrasts noisy individual weights (from checkpoints when there are a
few; otherwise the loss) with the smooth per-channel norms of the same layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from symmetry_engine.numeric.evaluate import Evaluation, KindSeries  # noqa: E402
from symmetry_engine.symmetry import Symmetry  # noqa: E402

TITLES = {"translation": "translation: column sums", "scale": "scale: squared channel norms",
          "rescale": "rescale: difference of squared norms"}
YLABEL = {"translation": r"$\langle\theta_A, 1\rangle$", "scale": r"$|\theta_A|^2$",
          "rescale": r"$|\theta_{A_1}|^2-|\theta_{A_2}|^2$"}


def pick_layer(kind: str, syms: Sequence[Symmetry]) -> str:
    """The layer a panel shows: for translation the last layer whose groups are weight columns (the
    final linear layer of a classifier); otherwise the layer with the most groups (first on ties)."""
    if kind == "translation":
        cols = [s.layer for s in syms if any(m.axis == 1 for m in s.members)]
        if cols:
            return cols[-1]
    counts: dict[str, int] = {}
    for s in syms:
        counts[s.layer] = counts.get(s.layer, 0) + 1
    return max(counts, key=lambda k: counts[k])


def pick_groups(series: KindSeries, layer: str, k: int) -> list[int]:
    """Up to ``k`` groups of ``layer`` spread evenly over its channels (indices into the kind)."""
    idx = [j for j, s in enumerate(series.symmetries) if s.layer == layer]
    if len(idx) <= k:
        return idx
    return [idx[int(round(i))] for i in np.linspace(0, len(idx) - 1, k)]


def plot_conservation(ev: Evaluation, path: Path, groups_per_panel: int = 4) -> Path | None:
    """Figure-5-style panels (one per kind present); returns the path, or None if the run has no groups."""
    kinds = [k for k in ("translation", "scale", "rescale") if k in ev.series]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.6), squeeze=False)
    steps = ev.steps
    for ax, kind in zip(axes[0], kinds):
        ser = ev.series[kind]
        layer = pick_layer(kind, ser.symmetries)
        for c, j in enumerate(pick_groups(ser, layer, groups_per_panel)):
            colour = f"C{c}"
            ch = ser.symmetries[j].channel
            ax.plot(steps, ser.measured[:, j], color=colour, lw=3, alpha=0.45,
                    label=f"{'channel' if kind != 'translation' else 'group'} {ch if ch is not None else j}")
            ax.plot(steps, ser.exact[:, j], color=colour, lw=1.2, ls="--")
            ax.plot(steps, ser.continuous[:, j], color=colour, lw=1.2, ls=":")
            approx = getattr(ser, "approx", None)  # checkpoint-only evaluation: a law fed estimated statistics
            if approx is not None and np.isfinite(approx[:, j]).any():
                ax.plot(steps, approx[:, j], color=colour, lw=1.2, ls="-.", marker=".", ms=4)
        ax.set_title(f"{TITLES[kind]}\n{layer}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(YLABEL[kind])
        ax.legend(fontsize=7, loc="best")
    handles = [plt.Line2D([], [], color="grey", lw=3, alpha=0.45), plt.Line2D([], [], color="grey", ls="--"),
               plt.Line2D([], [], color="grey", ls=":")]
    labels = ["measured", "exact discrete law", "continuous law (paper)"]
    if any(getattr(ev.series[k], "approx", None) is not None for k in kinds):
        handles.append(plt.Line2D([], [], color="grey", ls="-.", marker="."))
        labels.append("APPROXIMATE law (statistics estimated from checkpoints)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _checkpoint_weights(ev: Evaluation, sym: Symmetry, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A few individual entries of ``sym``'s first member across the run's checkpoints (≥ 3 needed)."""
    if getattr(ev, "source", "run") == "checkpoints":  # checkpoint-only evaluation: the files it evaluated
        listed = [(Path(c["path"]), int(c["step"])) for c in getattr(ev, "estimation", {}).get("checkpoints", [])]
    else:
        listed = [(f, None) for f in sorted(Path(ev.run_dir, "checkpoints").glob("step_*.pt"))]
    if len(listed) < 3:
        return None
    from symmetry_engine.numeric.checkpoints import load_checkpoint
    from symmetry_engine.numeric.runfile import RunLogError

    steps, values = [], []
    m = sym.members[0]
    for f, known in listed:
        try:
            step, state, _ = load_checkpoint(f)
        except RunLogError:  # a damaged checkpoint is reported by evaluate; the figure falls back to the loss
            return None
        key = next((p + m.param for p in ("", "module.", "_orig_mod.", "model.") if p + m.param in state), None)
        if key is None:
            return None
        t = state[key]
        values.append(t[m.index(t.ndim)].reshape(-1)[:count])
        steps.append(known if known is not None else step if step is not None else len(steps))
    return np.asarray(steps), np.stack(values)


def plot_trajectories(ev: Evaluation, path: Path) -> Path | None:
    """Figure-1-style: noisy weights (or loss) on the left, smooth per-channel norms on the right."""
    kind = "scale" if "scale" in ev.series else "rescale" if "rescale" in ev.series else None
    if kind is None:
        return None
    ser = ev.series[kind]
    layer = pick_layer(kind, ser.symmetries)
    idx = [j for j, s in enumerate(ser.symmetries) if s.layer == layer]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    weights = _checkpoint_weights(ev, ser.symmetries[idx[0]], 6)
    if weights is not None:
        left.plot(weights[0], weights[1], marker=".", lw=1)
        left.set_title(f"individual parameters of {layer} (checkpoints)", fontsize=10)
        left.set_ylabel("value")
    else:
        left.plot(np.arange(ev.T), ev.losses, lw=1, color="C3")
        left.set_title("minibatch loss", fontsize=10)
        left.set_ylabel("loss")
    left.set_xlabel("step")
    N = ser.measured[:, idx]
    N0 = np.where(np.abs(N[0]) > 0, np.abs(N[0]), 1.0)
    right.plot(ev.steps, N / N0, lw=1)
    right.set_title(f"{kind} quantity per channel of {layer} (÷ |initial|)", fontsize=10)
    right.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_angular(ev: Evaluation, path: Path) -> Path | None:
    """Angular update per step of the scale groups (median and 10–90% band) against √(2ηλ/(1+β))."""
    if ev.angular is None:
        return None
    a = ev.angular
    steps = np.arange(a.angles.shape[0])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    lo, med, hi = np.percentile(a.angles, [10, 50, 90], axis=1)
    ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.25, lw=0, label="scale groups, 10–90%")
    ax.plot(steps, med, color="tab:blue", lw=1.2, label="median")
    ax.plot(steps, a.predicted, "k--", lw=1.2, label=r"equilibrium $\sqrt{2\eta\lambda/(1+\beta)}$")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("angular update per step (rad)")
    ax.set_title(f"spherical motion (equilibrium after ~{a.relaxation_steps:.0f} steps)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(ev: Evaluation, out_dir: Path) -> list[Path]:
    """Write every figure that applies to this run into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [plot_conservation(ev, out_dir / "conservation.png"), plot_trajectories(ev, out_dir / "trajectories.png"),
            plot_angular(ev, out_dir / "angular_update.png")]
    return [p for p in made if p is not None]
