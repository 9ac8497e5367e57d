"""TensorBoard scalars of a run: per layer its conserved quantity, the laws' predictions, their errors and
the measured breaking, per step — live while training (:class:`LiveMonitor`, ``track(..., tensorboard=DIR)``,
``nmech train --tensorboard DIR``) or after the fact (analyses/tensorboard_log.py, ``nmech report RUN
--tensorboard DIR``). The tags are the same either way.

Tags, per symmetry kind and layer (sums are over the layer's groups, so the layer's quantity and its
predictions stay comparable; maxima are over the layer's groups):

- ``<kind>/<layer>/quantity``      Σ measured conserved quantity
- ``<kind>/<layer>/law``           Σ the symmetry's law (or the exact law), ``.../continuous`` the paper's
- ``<kind>/<layer>/law_error``     max |measured − law| / norm (``.../continuous_error`` likewise); norm is the
                                   group's largest size in the log so far (the evaluation's, at the end)
- ``<kind>/<layer>/breaking``      max |⟨ĝ_n, ξ⟩| / (|ĝ_n| |ξ|) at the step (the evaluation's breaking is the
                                   max of this over steps)
- ``train/loss``, ``train/lr``

Why the live monitor re-evaluates the log rather than carrying the laws itself: the laws are the
evaluation's (numeric/evaluate.py), so the live curves are the numbers ``nmech evaluate`` will report, not
an approximation of them. Forecasts are causal, so a row once written never changes; each update writes
the rows after the last one written. An update reads the whole log, so the monitor keeps its own time
under ``budget`` (default 5%) of the training's wall time, skipping updates when it would exceed it; the
last update, at ``close()``, writes everything.

Needs the optional ``tensorboard`` package (``pip install 'neural-mechanics[tensorboard]'``); the event
files are written through ``torch.utils.tensorboard``. TensorBoard stores scalars as float32.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

INSTALL_HINT = "TensorBoard logging needs the tensorboard package: pip install 'neural-mechanics[tensorboard]'"


def require_tensorboard() -> None:
    """Raise ImportError with the install hint (one line) when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:  # torch raises ImportError naming tensorboard when it is missing
        raise ImportError(INSTALL_HINT) from None


class TensorBoardLog:
    """Writes ``{tag: value}`` per step; non-finite values are skipped (TensorBoard cannot plot them).
    ``purge_step`` hides the events an earlier writer left in ``log_dir`` at steps ≥ it (a resumed run)."""

    def __init__(self, log_dir: str | os.PathLike, flush_secs: int = 30, purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs, purge_step=purge_step)

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
            b = np.asarray(breaking, float)[j]
            out[f"{base}/breaking"] = float(np.max(b)) if np.isfinite(b).any() else float("nan")
    return out


def step_breaking(log: Any, kind: str, t0: int, t1: int) -> np.ndarray:
    """Per step n ∈ [t0, t1) and group: |⟨ĝ_n, ξ⟩| / (|ĝ_n| |ξ|), the evaluation's breaking before its max over
    steps (0 where the gradient vanishes), ``[t1 − t0, G]``."""
    ks = log.stats[kind]
    inner = np.abs(ks.total("P" if kind == "translation" else "Q", slice(t0, t1)))
    if kind == "translation":
        sizes = log.meta.get("group_entries")
        if isinstance(sizes, list) and len(sizes) == len(log.symmetries):
            entries = np.asarray(sizes, dtype=float)[log.groups[kind]]
        else:
            entries = np.asarray([sum(len(m.indices) if m.axis is not None else 1 for m in s.members)
                                  for s in log.symmetries_of(kind)], dtype=float)
        xi = np.sqrt(entries)[None, :]
    else:
        xi = np.sqrt(np.maximum(ks.total("M", slice(t0, t1)), 0.0))
    gnorm = np.sqrt(np.maximum(np.asarray(log.grad_sq[t0:t1], dtype=float), 0.0))
    denom = gnorm[:, None] * xi
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, inner / np.where(denom > 0, denom, 1.0), 0.0)


def evaluation_scalars(ev: Any, log: Any = None, after: int = -1, until: int | None = None
                       ) -> Iterator[tuple[int, dict[str, float]]]:
    """Per kept step of an evaluated run with ``after < step ≤ until``: the tags above (law = the symmetry's
    law when the evaluation has one, else the exact law), the loss and learning rate of the step, and,
    given the run's ``log`` (``read_run``), the breaking of the step."""
    steps = np.asarray(ev.steps)
    rows = [r for r, s in enumerate(steps) if s > after and (until is None or s <= until)]
    if not rows:
        return
    first = int(steps[0])
    per_kind = {}
    for kind, ser in ev.series.items():
        exact, law = np.asarray(ser.exact, float), getattr(ser, "law", None)
        law = exact if law is None or not np.isfinite(np.asarray(law, float)).any() else np.asarray(law, float)
        brk = None
        if log is not None and kind in log.stats:
            lo, hi = int(steps[rows[0]]) - first, min(int(steps[rows[-1]]) - first + 1, log.T)
            brk = (lo, step_breaking(log, kind, lo, hi)) if hi > lo else None
        norm = np.asarray(ser.norm, float)
        per_kind[kind] = ([s.layer for s in ser.symmetries], np.asarray(ser.measured), norm.max(axis=0) if norm.ndim == 2
                          else norm, law, np.asarray(ser.continuous, float), brk)
    for row in rows:
        step = int(steps[row])
        n = step - first
        scalars: dict[str, float] = {}
        if n < len(ev.losses):
            scalars["train/loss"] = float(ev.losses[n])
            scalars["train/lr"] = float(ev.lrs[n])
        for kind, (layers, m, norm, law, cont, brk) in per_kind.items():
            b = None
            if brk is not None and 0 <= n - brk[0] < brk[1].shape[0]:
                b = brk[1][n - brk[0]]
            scalars.update(layer_scalars(kind, layers, m[row], norm, law[row], cont[row], b))
        yield step, scalars


class LiveMonitor:
    """Writes a run's scalars to TensorBoard while it trains (see the module docstring).

    The tracker calls :meth:`update` every ``every`` steps and :meth:`close` after its own close; each
    update evaluates the log written so far and adds the steps not yet written (all but the log's last
    row, whose gradient-side statistics come with the next record). The monitor owns the directory's
    history of the run: it starts with ``purge_step=0``, so events of an earlier process on the same run
    (before a crash and resume, or an overwritten run) are hidden and every step is written again."""

    def __init__(self, run_dir: str | os.PathLike, log_dir: str | os.PathLike, every: int = 50,
                 budget: float = 0.05) -> None:
        self.run_dir, self.every, self.budget = Path(run_dir), max(1, int(every)), float(budget)
        self.tb = TensorBoardLog(log_dir, purge_step=0)
        self.written = -1          # the last step written
        self.scalars = 0           # scalars written so far
        self.updates = self.skipped = 0
        self.spent = 0.0
        self.errors: list[str] = []   # distinct failures of updates (each warned once; training goes on)
        self._start = time.perf_counter()

    def update(self, final: bool = False) -> int:
        """Write the steps evaluated since the last update; returns the number of scalars written."""
        if not final and self.spent > self.budget * (time.perf_counter() - self._start):
            self.skipped += 1
            return 0
        t = time.perf_counter()
        from .evaluate import evaluate_run
        from .runfile import RunLogError
        from .runlog import read_run

        n = 0
        try:
            ev = evaluate_run(self.run_dir, checkpoints=False)
            log = read_run(self.run_dir)
        except RunLogError:   # nothing comparable yet (a single record): the next update writes it
            ev = None
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop the training it watches
            ev = None
            msg = f"live TensorBoard update skipped: {type(exc).__name__}: {' '.join(str(exc).split())}"
            if msg not in self.errors:
                self.errors.append(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if ev is not None:
            steps = np.asarray(ev.steps)
            until = None if final else int(steps[-1]) - 1
            for step, scalars in evaluation_scalars(ev, log, self.written, until):
                n += self.tb.write(step, scalars)
                self.written = step
            self.tb.flush()
        self.updates += 1
        self.scalars += n
        self.spent += time.perf_counter() - t
        return n

    def close(self) -> None:
        try:
            self.update(final=True)
        finally:
            self.tb.close()


__all__ = ["TensorBoardLog", "LiveMonitor", "require_tensorboard", "layer_scalars", "step_breaking", "evaluation_scalars", "INSTALL_HINT"]
