"""Figure 5 of the paper for an evaluated run: conserved quantities, their predictions and residuals.

Per symmetry kind (one column each) and one chosen layer, a few channels: the measured quantity (thick,
translucent), the symmetry's own law (dashed; the exact discrete law when the evaluation has no separate
law series), and the paper's continuous law (dotted), each channel in its own colour. Under each panel a
residual panel shows |measured − predicted| / norm on a log scale for every prediction, so curves that lie
on top of each other in the upper panel are told apart by their accuracy: the exact law sits at the
dtype's round-off, the continuous law carries its O(ηλ) modelling error. Degenerate groups (gradient and
quantity at round-off, e.g. zero-initialised biases before batch norm) are never picked.

Every plotted line carries a ``gid`` ``"<kind>|<role>|<group key>"`` so tests read the data back from the
matplotlib objects and compare it with the evaluation it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from symmetry_engine.symmetry import KINDS, Symmetry  # noqa: E402

from .natsort import natural_key  # noqa: E402

TITLES = {"translation": "translation: column sums", "scale": "scale: squared channel norms",
          "rescale": "rescale: difference of squared norms"}
YLABEL = {"translation": r"$\langle\theta_A, \mathbf{1}\rangle$", "scale": r"$|\theta_A|^2$",
          "rescale": r"$|\theta_{A_1}|^2-|\theta_{A_2}|^2$"}
STYLE = {"measured": dict(lw=3.2, alpha=0.4, ls="-"), "exact": dict(lw=1.0, ls="-."),
         "law": dict(lw=1.3, ls="--"), "continuous": dict(lw=1.3, ls=":"),
         "approx": dict(lw=1.3, ls=(0, (4, 1.5, 1, 1.5)), marker="o", ms=3.5)}
ROUNDOFF_STYLE = dict(color="0.2", lw=0.8, ls="-", alpha=0.55)
ROLE_LABEL = {"measured": "measured", "exact": "exact identity (recorded breaking as input)",
              "law": "symmetry's law (breaking = 0)", "continuous": "continuous law (paper)",
              "approx": "approximate: estimated from checkpoints (law fed replica statistics)"}


def verdicts_by_key(data: Mapping[str, Any] | None) -> dict[str, str]:
    """Group key → verdict from an evaluation JSON (empty when the evaluation has no verdicts)."""
    out = {}
    for g in (data or {}).get("groups") or []:
        if g.get("verdict"):
            out[str(g["key"])] = str(g["verdict"])
    return out


def network_order(run_dir: str | Path | None) -> list[str]:
    """Parameter names in the model's order (a state dict's key order), from the run's first checkpoint
    (``run_dir`` may also name a checkpoint file); ``[]`` when there is none. Layer names alone do not say
    it (``classifier.0`` sorts before ``features.3``)."""
    if run_dir is None:
        return []
    path = Path(run_dir)
    files = [path] if path.is_file() else sorted(Path(run_dir, "checkpoints").glob("step_*.pt"))
    if not files:
        return []
    from symmetry_engine.numeric.checkpoints import load_checkpoint

    try:
        _, state, _ = load_checkpoint(files[0])
    except Exception:  # unreadable: evaluate reports it; the figures fall back to natural order
        return []
    keys = [str(k) for k in state]
    for prefix in ("module.", "_orig_mod."):   # DataParallel / torch.compile wrappers
        if keys and all(k.startswith(prefix) for k in keys):
            keys = [k[len(prefix):] for k in keys]
    return keys


def order_layers(layers: Iterable[str], params: Sequence[str] = ()) -> list[str]:
    """``layers`` in network order when ``params`` (parameter names in model order) places them, else in
    natural order; a layer is placed at its first parameter (``features.3`` → ``features.3.weight``)."""
    rank: dict[str, int] = {}
    for i, p in enumerate(params):
        parts = p.split(".")
        for k in range(1, len(parts) + 1):
            rank.setdefault(".".join(parts[:k]), i)
    return sorted(set(layers), key=lambda l: (rank.get(l, len(params)), natural_key(l)))


def pick_layer(kind: str, syms: Sequence[Symmetry], exclude: set[str] = frozenset(), params: Sequence[str] = ()) -> str:
    """The layer a panel shows by default: for translation the last layer whose groups are weight columns
    (the final linear layer of a classifier); otherwise, among the layers with the most non-excluded groups,
    the middle one in network order (``params``: parameter names in model order; natural order without).
    ``exclude`` holds group keys to leave out (degenerate ones)."""
    usable = [s for s in syms if s.key not in exclude] or list(syms)
    if kind == "translation":
        cols = [s.layer for s in usable if any(m.axis == 1 for m in s.members)]
        if cols:
            return order_layers(cols, params)[-1]
    counts: dict[str, int] = {}
    for s in usable:
        counts[s.layer] = counts.get(s.layer, 0) + 1
    best = max(counts.values())
    tied = order_layers([l for l, n in counts.items() if n == best], params)
    return tied[(len(tied) - 1) // 2]


def pick_groups(series: Any, layer: str, k: int, exclude: set[str] = frozenset()) -> list[int]:
    """Up to ``k`` groups of ``layer`` spread evenly over its channels (indices into the kind's series),
    leaving out groups whose key is in ``exclude``; channels in natural order."""
    idx = [j for j, s in enumerate(series.symmetries) if s.layer == layer and s.key not in exclude]
    idx = sorted(idx, key=lambda j: (natural_key(series.symmetries[j].channel), j))
    if len(idx) <= k:
        return idx
    return [idx[int(round(i))] for i in np.linspace(0, len(idx) - 1, k)]


def group_norm(series: Any) -> np.ndarray:
    """Per group the normaliser of the errors: max over steps of the group's size ([G])."""
    norm = np.asarray(series.norm, dtype=float)
    return norm.max(axis=0) if norm.ndim == 2 else norm


def predictions(series: Any) -> dict[str, np.ndarray]:
    """The prediction series an evaluation carries, by role: exact, law (when separate), continuous, and
    for a checkpoint evaluation the approximate law (``approx``). Roles with no finite value are left out
    (a checkpoint evaluation has no exact scale/rescale law); a checkpoint evaluation's exact series is the
    law itself (no breaking was recorded between checkpoints), so it is shown once, as the law."""
    approx = getattr(series, "approx", None)
    out = {"exact": np.asarray(series.exact, dtype=float)}
    law = getattr(series, "law", None)
    if law is not None:
        out["law"] = np.asarray(law, dtype=float)
        if approx is not None:
            del out["exact"]
    out["continuous"] = np.asarray(series.continuous, dtype=float)
    if approx is not None:
        out["approx"] = np.asarray(approx, dtype=float)
    return {role: arr for role, arr in out.items() if np.isfinite(arr).any()}


def residual(measured: np.ndarray, predicted: np.ndarray, norm: float) -> np.ndarray:
    """|measured − predicted| / norm with exact zeros as NaN (a log axis cannot show 0; step 0 is 0)."""
    r = np.abs(np.asarray(measured, float) - np.asarray(predicted, float)) / max(float(norm), 1e-300)
    return np.where(r > 0, r, np.nan)


def channel_label(sym: Symmetry, kind: str) -> str:
    if sym.channel is None:
        return sym.layer.rsplit(".", 1)[-1] if kind == "translation" else sym.key
    column = kind == "translation" and any(m.axis == 1 for m in sym.members)
    return f"{'column' if column else 'channel'} {sym.channel}"


@dataclass
class PanelChoice:
    """What one Figure-5 column shows (for captions and tests)."""

    kind: str
    layer: str
    groups: list[int]
    keys: list[str]
    left_out_degenerate: int = 0
    roles: list[str] = field(default_factory=list)


def choose_panels(ev: Any, data: Mapping[str, Any] | None, layers: Sequence[str] = (), channels: int = 4,
                  params: Sequence[str] | None = None) -> list[PanelChoice]:
    """Per kind present: the layer (the first of ``layers`` that has non-degenerate groups of the kind,
    else the default of :func:`pick_layer`) and up to ``channels`` non-degenerate groups of it.
    ``params`` is the model's parameter order (default: read from the run's first checkpoint)."""
    verdicts = verdicts_by_key(data)
    degenerate = {k for k, v in verdicts.items() if v == "degenerate"}
    params = network_order(getattr(ev, "run_dir", None)) if params is None else params
    out = []
    for kind in KINDS:
        ser = ev.series.get(kind)
        if ser is None or not ser.symmetries:
            continue
        have = {s.layer for s in ser.symmetries if s.key not in degenerate}
        layer = next((l for l in layers if l in have), None) or pick_layer(kind, ser.symmetries, degenerate, params)
        idx = pick_groups(ser, layer, channels, degenerate)
        if not idx:
            continue
        left = sum(1 for s in ser.symmetries if s.layer == layer and s.key in degenerate)
        out.append(PanelChoice(kind, layer, idx, [ser.symmetries[j].key for j in idx], left,
                               ["measured", *predictions(ser)]))
    return out


def conservation_figure(ev: Any, panels: Sequence[PanelChoice], unit_roundoff: float | None = None) -> MplFigure | None:
    """Figure 5 with residual panels (see the module docstring); None when there is nothing to show."""
    if not panels:
        return None
    fig, axes = plt.subplots(2, len(panels), figsize=(5.0 * len(panels), 6.4), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [2.1, 1.25]})
    steps = np.asarray(ev.steps)
    sparse = {"marker": "o", "ms": 4} if len(steps) < 40 else {}   # checkpoint steps: show where data is
    for col, p in enumerate(panels):
        ser = ev.series[p.kind]
        top, bottom = axes[0, col], axes[1, col]
        preds = predictions(ser)
        norms = group_norm(ser)
        for c, j in enumerate(p.groups):
            colour, key = f"C{c}", ser.symmetries[j].key
            top.plot(steps, ser.measured[:, j], color=colour, gid=f"{p.kind}|measured|{key}",
                     label=channel_label(ser.symmetries[j], p.kind), **{**STYLE["measured"], **sparse})
            for role, arr in preds.items():
                if role == "exact" and "law" in preds:
                    continue  # the identity sits on the measurement; its residual is shown below
                top.plot(steps, arr[:, j], color=colour, gid=f"{p.kind}|{role}|{key}", **STYLE[role])
            for role, arr in preds.items():
                bottom.plot(steps, residual(ser.measured[:, j], arr[:, j], norms[j]), color=colour,
                            gid=f"{p.kind}|residual-{role}|{key}", **{**STYLE[role], "lw": 1.0, "alpha": 0.9})
        top.set_title(f"{TITLES[p.kind]}\nlayer {p.layer}", fontsize=10)
        top.set_ylabel(YLABEL[p.kind])
        top.legend(fontsize=7, loc="best", title="measured", title_fontsize=7)
        bottom.set_yscale("log")
        if unit_roundoff:
            bottom.axhline(unit_roundoff, **ROUNDOFF_STYLE, gid=f"{p.kind}|roundoff|")
        bottom.set_xlabel("step")
        bottom.set_ylabel("|measured − predicted| / norm", fontsize=8)
        bottom.grid(True, which="major", axis="y", lw=0.4, alpha=0.5)
    roles = [r for r in ("measured", "exact", "law", "continuous", "approx") if any(r in p.roles for p in panels)]
    handles = [plt.Line2D([], [], color="0.3", **STYLE[r]) for r in roles]
    labels = [ROLE_LABEL[r] for r in roles]
    if unit_roundoff:
        handles.append(plt.Line2D([], [], **ROUNDOFF_STYLE))
        labels.append(f"unit round-off of the run's dtype ({unit_roundoff:.1e})")
    ncol = len(handles) if len(handles) <= 4 else (len(handles) + 1) // 2
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if ncol == len(handles) else 0.09, 1, 1))
    return fig


def save_figure(fig: MplFigure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG and release it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def lines_by_gid(fig: MplFigure) -> dict[str, Any]:
    """Every line of ``fig`` that carries a gid, by gid (how tests read plotted data back)."""
    return {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}


__all__ = ["pick_layer", "pick_groups", "network_order", "order_layers", "choose_panels", "conservation_figure", "PanelChoice", "save_figure",
           "lines_by_gid", "verdicts_by_key", "predictions", "residual", "group_norm"]
