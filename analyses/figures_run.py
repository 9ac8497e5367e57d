"""Run figures besides Figure 5: training curves, Figure 1 (noisy parameters, smooth quantities), spherical motion.

Figure 1 of the paper sets individual parameters — noisy, step to step — beside the per-channel squared
norms of the same conv layers, which move smoothly because the symmetry ties them to a law. The entries
come from the fixed sample the tracker records at every step (``samples.bin``, :func:`tracker_samples`),
or, for runs without one, from a fixed sample read across the checkpoints (:func:`checkpoint_samples`);
their values are plotted as they are, never divided by an initial value (a quantity that starts near 0
would blow up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from symmetry_engine.symmetry import Symmetry  # noqa: E402

from .figures import YLABEL, order_layers, verdicts_by_key  # noqa: E402


# -- training curves ----------------------------------------------------------------------------------
def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` finite values (NaN where fewer than one); same length as ``x``."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    cnt = n[idx] - n[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[idx] - c[lo]) / np.maximum(cnt, 1), np.nan)


def training_figure(steps: np.ndarray, losses: np.ndarray, lrs: np.ndarray, evals: Sequence[Mapping[str, Any]],
                    lr_steps: np.ndarray | None = None, loss_label: str = "minibatch loss (each step)"
                    ) -> MplFigure | None:
    """Loss (minibatch per step, its moving average, test loss), test accuracy, and learning rate.

    ``steps`` are the optimizer steps of ``losses`` (loss_n is the minibatch loss at θ_n) and, unless
    ``lr_steps`` gives their own, of ``lrs``. A checkpoint evaluation passes the replica losses at the
    checkpoints' steps (with their ``loss_label``) and the schedule's every step as ``lr_steps``.
    Panels without data are left out; None when there is nothing to plot.
    """
    losses = np.asarray(losses, dtype=float)
    have_loss = losses.size > 0 and np.isfinite(losses).any()
    test_loss = [(float(r["step"]), float(r["test_loss"])) for r in evals if r.get("test_loss") is not None]
    test_acc = [(float(r["step"]), float(r["test_accuracy"])) for r in evals if r.get("test_accuracy") is not None]
    panels = [p for p, ok in (("loss", have_loss or test_loss), ("accuracy", test_acc), ("lr", len(lrs) > 0)) if ok]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.3), squeeze=False)
    for ax, name in zip(axes[0], panels):
        if name == "loss":
            if have_loss:
                sparse = len(losses) < 40
                ax.plot(steps, losses, color="C0", lw=1.0 if sparse else 0.6, alpha=0.8 if sparse else 0.35,
                        marker="o" if sparse else None, ms=3.5, gid="train|minibatch_loss|", label=loss_label)
                w = max(5, len(losses) // 25)
                if len(losses) >= 2 * w:
                    ax.plot(steps, moving_average(losses, w), color="C0", lw=1.6, gid=f"train|loss_avg{w}|",
                            label=f"mean of the last {w} steps")
            if test_loss:
                x, y = np.array(test_loss).T
                ax.plot(x, y, "o-", color="C3", ms=3.5, lw=1.1, gid="train|test_loss|", label="test loss")
            ax.set_ylabel("loss")
            finite = losses[np.isfinite(losses)] if have_loss else np.array([])
            vals = np.concatenate([finite, [v for _, v in test_loss]]) if test_loss else finite
            if vals.size and vals.min() > 0 and vals.max() / vals.min() > 30:
                ax.set_yscale("log")
            ax.set_title("loss", fontsize=10)
        elif name == "accuracy":
            x, y = np.array(test_acc).T
            ax.plot(x, y, "o-", color="C2", ms=3.5, lw=1.1, gid="train|test_accuracy|", label="test accuracy")
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("accuracy")
            ax.set_title("test accuracy (eval.jsonl)", fontsize=10)
        else:
            x = np.asarray(lr_steps) if lr_steps is not None else steps[: len(lrs)]
            ax.plot(x, lrs, color="C1", lw=1.3, drawstyle="steps-post", gid="train|lr|", label=r"learning rate $\eta_n$")
            ax.set_ylabel("η")
            lr = np.asarray(lrs, dtype=float)
            if lr.min() > 0 and lr.max() / lr.min() > 20:
                ax.set_yscale("log")
            else:
                ax.set_ylim(0, 1.15 * max(float(lr.max()), 1e-300))
            ax.set_title("learning rate (main param group)", fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# -- Figure 1 -----------------------------------------------------------------------------------------
@dataclass
class Samples:
    """Individual entries of one parameter over a run: ``values[s, k]`` is entry ``k`` at ``steps[s]``."""

    param: str
    steps: np.ndarray
    values: np.ndarray
    indices: list[tuple[int, ...]]
    source: str   # "checkpoints" (or the tracker's own sample, when it records one)


def sample_param(syms: Sequence[Symmetry]) -> str:
    """The weight a layer's groups scale (a member with sign +1 along axis 0; a weight before a bias)."""
    cands = [m.param for s in syms for m in s.members if m.sign > 0 and m.axis == 0]
    cands = cands or [m.param for s in syms for m in s.members]
    weights = [c for c in cands if c.endswith("weight")]
    return (weights or cands)[0]


def checkpoint_samples(run_dir: str | Path | None, params: Mapping[str, str], count: int = 12, seed: int = 0,
                       files: Sequence[str | Path] | None = None) -> dict[str, Samples]:
    """For each ``layer → parameter``: ``count`` fixed entries (seeded choice) at every checkpoint.

    The checkpoints are the run's ``checkpoints/step_*.pt``, or ``files`` (a checkpoint evaluation's files,
    state dicts possibly wrapped by DataParallel/compile). Needs at least three readable checkpoints
    holding the parameters; returns ``{}`` otherwise.
    """
    from symmetry_engine.numeric.checkpoint_files import step_from_name
    from symmetry_engine.numeric.checkpoints import load_checkpoint

    paths = [Path(f) for f in files] if files is not None else sorted(Path(run_dir, "checkpoints").glob("step_*.pt"))
    if len(paths) < 3 or not params:
        return {}
    chosen: dict[str, list[tuple[int, ...]]] = {}
    steps, rows = [], {layer: [] for layer in params}
    for f in paths:
        try:
            step, state, _ = load_checkpoint(f)
            if step is None:
                step = step_from_name(f)
        except Exception:  # damaged checkpoint: evaluate reports it; the figure goes without samples
            return {}
        if step is None:
            return {}
        for layer, param in params.items():
            t = next((state[k] for k in (param, "module." + param, "_orig_mod." + param) if k in state), None)
            if t is None:
                return {}
            if layer not in chosen:
                rng = np.random.default_rng(seed)
                flat = rng.choice(t.size, size=min(count, t.size), replace=False)
                chosen[layer] = [tuple(int(i) for i in np.unravel_index(k, t.shape)) for k in sorted(flat)]
            rows[layer].append([t[i] for i in chosen[layer]])
        steps.append(int(step))
    order = np.argsort(steps)
    return {layer: Samples(params[layer], np.asarray(steps)[order], np.asarray(rows[layer])[order], chosen[layer],
                           "checkpoints") for layer in params}


def tracker_samples(run_dir: str | Path, layers: Sequence[str], count: int = 16) -> dict[str, Samples]:
    """For each of ``layers`` the tracker recorded a sample of: its first ``count`` entries at every
    recorded step (``samples.bin``); ``{}`` when the run has no sample (tracked with ``samples=0``, or
    older), or fewer than three rows."""
    from symmetry_engine.numeric.samples import read_samples

    try:
        rs = read_samples(run_dir)
    except Exception:  # unreadable run.json / samples.bin: the evaluation reports the run's own problems
        return {}
    if rs is None or len(rs.steps) < 3:
        return {}
    out = {}
    for layer in layers:
        name = rs.layers.get(layer)
        if name is not None:
            out[layer] = Samples(name, rs.steps, rs.values[name][:, :count], rs.indices[name][:count], "tracker")
    return out


def figure1_layers(series: Any, data: Mapping[str, Any] | None, k: int = 4, params: Sequence[str] = ()) -> list[str]:
    """Up to ``k`` layers of the kind spread over depth (network order given ``params``, the model's
    parameter names in order; natural order without), skipping all-degenerate layers."""
    deg = {key for key, v in verdicts_by_key(data).items() if v == "degenerate"}
    layers = order_layers({s.layer for s in series.symmetries if s.key not in deg}, params)
    if len(layers) <= k:
        return layers
    return [layers[int(round(i))] for i in np.linspace(0, len(layers) - 1, k)]


def trajectories_figure(ev: Any, kind: str, layers: Sequence[str], samples: Mapping[str, Samples],
                        data: Mapping[str, Any] | None = None) -> MplFigure | None:
    """Figure 1: per layer, sampled entries (top, when samples exist) and every channel's quantity (bottom)."""
    ser = ev.series.get(kind)
    if ser is None or not layers:
        return None
    deg = {key for key, v in verdicts_by_key(data).items() if v == "degenerate"}
    rows = 2 if samples else 1
    fig, axes = plt.subplots(rows, len(layers), figsize=(3.6 * len(layers), 2.9 * rows), squeeze=False, sharex="col")
    for col, layer in enumerate(layers):
        if samples:
            ax = axes[0, col]
            s = samples.get(layer)
            if s is not None:
                for k in range(s.values.shape[1]):
                    ax.plot(s.steps, s.values[:, k], lw=0.9 if len(s.steps) < 400 else 0.6,
                            marker="." if len(s.steps) < 40 else None, ms=3, gid=f"sample|{layer}|{k}")
            ax.set_title(f"{s.param}: {s.values.shape[1]} entries" if s is not None else f"{layer}: no sample",
                         fontsize=9)
            if col == 0:
                ax.set_ylabel("individual entries θ[i]\n(noisy)" if s is None or s.source == "tracker"
                              else "individual entries θ[i]\n(at checkpoints)")
        ax = axes[rows - 1, col]
        idx = [j for j, sym in enumerate(ser.symmetries) if sym.layer == layer and sym.key not in deg]
        for j in idx:
            ax.plot(ev.steps, ser.measured[:, j], lw=0.8, gid=f"quantity|{ser.symmetries[j].key}",
                    marker="." if len(ev.steps) < 40 else None, ms=3)
        ax.set_title(f"{layer}: {len(idx)} channels", fontsize=9)
        ax.set_xlabel("step")
        if col == 0:
            ax.set_ylabel(f"per channel {YLABEL[kind]}\n(smooth)")
    fig.tight_layout()
    return fig


# -- spherical motion ---------------------------------------------------------------------------------
def angular_figure(angular: Any) -> MplFigure | None:
    """Angular update per step of the scale groups (median and 10–90% band) against √(2ηλ/(1+β))."""
    if angular is None:
        return None
    a = angular
    steps = np.arange(a.angles.shape[0])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    lo, med, hi = np.percentile(a.angles, [10, 50, 90], axis=1)
    ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.25, lw=0, label="scale groups, 10–90%")
    ax.plot(steps, med, color="tab:blue", lw=1.2, label="median over scale groups", gid="angular|median|")
    ax.plot(steps, a.predicted, "k--", lw=1.2, label=r"equilibrium $\sqrt{2\eta\lambda/(1+\beta)}$",
            gid="angular|predicted|")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("angle turned per step (rad)")
    T = a.angles.shape[0]
    when = (f"equilibrium expected after ~{a.relaxation_steps:.0f} steps: this run ({T} steps) shows the approach"
            if a.relaxation_steps > T else f"equilibrium expected after ~{a.relaxation_steps:.0f} of {T} steps")
    ax.set_title(f"spherical motion ({when})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["training_figure", "trajectories_figure", "angular_figure", "checkpoint_samples", "tracker_samples", "Samples",
           "sample_param", "figure1_layers", "moving_average"]
