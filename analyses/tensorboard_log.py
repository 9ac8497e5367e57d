"""Live monitoring: per-step conservation-law scalars into TensorBoard event files.

The tracker (``track(..., tensorboard=DIR)``, ``nmech train --tensorboard DIR``) hands this writer one
dict of scalars per step; ``nmech report RUN --tensorboard DIR`` writes the same tags after the fact from
an evaluation. Tags, per symmetry kind and layer (sums are over the layer's groups, so the layer's
quantity and its predictions stay comparable):

- ``<kind>/<layer>/quantity``      Σ measured conserved quantity
- ``<kind>/<layer>/law``           Σ the symmetry's law (or the exact law), ``.../continuous`` the paper's
- ``<kind>/<layer>/law_error``     max over groups |measured − law| / norm (``.../continuous_error`` likewise)
- ``<kind>/<layer>/breaking``      max over groups of the normalized breaking ⟨ĝ, ξ⟩ (when given)
- ``train/loss``, ``train/lr``

Needs the optional ``tensorboard`` package (``pip install 'neural-mechanics[tensorboard]'``); the event
files are written through ``torch.utils.tensorboard``. TensorBoard stores scalars as float32.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

INSTALL_HINT = "TensorBoard logging needs the tensorboard package: pip install 'neural-mechanics[tensorboard]'"


class TensorBoardLog:
    """Writes ``{tag: value}`` per step; non-finite values are skipped (TensorBoard cannot plot them)."""

    def __init__(self, log_dir: str | Path, flush_secs: int = 30) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError naming tensorboard when it is missing
            raise ImportError(INSTALL_HINT) from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def write(self, step: int, scalars: Mapping[str, float]) -> int:
        """Add one step's scalars; returns how many were written."""
        n = 0
        for tag, value in scalars.items():
            v = float(value)
            if math.isfinite(v):
                self._writer.add_scalar(tag, v, global_step=int(step))
                n += 1
        return n

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def layer_scalars(kind: str, layers: Sequence[str], measured: np.ndarray, norm: np.ndarray,
                  law: np.ndarray | None = None, continuous: np.ndarray | None = None,
                  breaking: np.ndarray | None = None) -> dict[str, float]:
    """One step's per-layer tags (see the module docstring) from per-group arrays ``[G]``."""
    layers = list(layers)
    measured, norm = np.asarray(measured, float), np.maximum(np.asarray(norm, float), 1e-300)
    out: dict[str, float] = {}
    order = list(dict.fromkeys(layers))
    idx = {l: np.array([j for j, x in enumerate(layers) if x == l]) for l in order}
    for layer, j in idx.items():
        base = f"{kind}/{layer}"
        out[f"{base}/quantity"] = float(measured[j].sum())
        for name, pred in (("law", law), ("continuous", continuous)):
            if pred is not None:
                p = np.asarray(pred, float)[j]
                out[f"{base}/{name}"] = float(p.sum())
                out[f"{base}/{name}_error"] = float(np.max(np.abs(measured[j] - p) / norm[j]))
        if breaking is not None:
            out[f"{base}/breaking"] = float(np.max(np.asarray(breaking, float)[j]))
    return out


def evaluation_scalars(ev: Any) -> Iterator[tuple[int, dict[str, float]]]:
    """Per step of an evaluated run: the tags above (law = the symmetry's law when the evaluation has one,
    else the exact law), plus the loss and learning rate of the step."""
    from .figures import group_norm, predictions

    steps = np.asarray(ev.steps)
    per_kind = {}
    for kind, ser in ev.series.items():
        preds = predictions(ser)
        per_kind[kind] = ([s.layer for s in ser.symmetries], np.asarray(ser.measured), group_norm(ser),
                          preds.get("law", preds["exact"]), preds["continuous"], getattr(ser, "breaking", None))
    for row, step in enumerate(steps):
        scalars: dict[str, float] = {}
        if row < len(ev.losses):
            scalars["train/loss"] = float(ev.losses[row])
            scalars["train/lr"] = float(ev.lrs[row])
        for kind, (layers, m, norm, law, cont, brk) in per_kind.items():
            scalars.update(layer_scalars(kind, layers, m[row], norm, law[row], cont[row],
                                         None if brk is None else np.asarray(brk)[row]))
        yield int(step), scalars


def write_evaluation(ev: Any, log_dir: str | Path) -> int:
    """Write every step of an evaluated run; returns the number of scalars written."""
    n = 0
    with TensorBoardLog(log_dir) as tb:
        for step, scalars in evaluation_scalars(ev):
            n += tb.write(step, scalars)
    return n


__all__ = ["TensorBoardLog", "layer_scalars", "evaluation_scalars", "write_evaluation", "INSTALL_HINT"]
