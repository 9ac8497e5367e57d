"""The shift representation of the translation pass (see shift.py): pure and mixed label grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import axes as ax


class Broken(Exception):
    """The shift does not pass this op."""


@dataclass
class Shift:
    E: torch.Tensor | None
    M: torch.Tensor
    inv: frozenset | None = None     # mixed: the source entries it combines (None: all of them)

    def involved(self) -> frozenset | None:
        if self.E is not None:
            return frozenset(int(e) for e in self.entries_seen() if e > 0)
        return self.inv

    @staticmethod
    def entries(shape, axis: int) -> "Shift":
        return Shift(ax.fresh(shape, [axis], 1), ax.constant(shape, 1))

    @property
    def pure(self) -> bool:
        return self.E is not None

    def labels(self) -> torch.Tensor:
        """Mixed-form labels: equal label ⇒ equal δ for every α (0: no shift)."""
        if self.E is None:
            return self.M
        return ax.combine(self.E, self.M)[0]

    def unmodulated(self) -> bool:
        if self.E is None:
            return False
        e, m = torch.broadcast_tensors(*(ax.broadcast(t, max(self.E.ndim, self.M.ndim)) for t in (self.E, self.M)))
        return len(torch.unique(m[e > 0])) <= 1

    def entry_grid(self, shape) -> np.ndarray:
        return ax.expand(ax.broadcast(self.E, len(shape)), shape).numpy()

    def entries_seen(self) -> np.ndarray:
        return np.unique(self.E.numpy()) if self.E is not None else np.array([], dtype=np.int64)


def _mixed(labels: torch.Tensor, inv: frozenset | None = None) -> Shift:
    return Shift(None, ax.compress(labels), inv)


def _union(*shifts: "Shift") -> frozenset | None:
    out: set[int] = set()
    for sh in shifts:
        i = sh.involved()
        if i is None:
            return None
        out |= i
    return frozenset(out)


def _varying(shape, axes_) -> torch.Tensor:
    """Labels that vary along ``axes_`` of ``shape`` (a factor that may differ there)."""
    return ax.fresh(shape, [a for a in axes_ if shape[a] > 1], 1)


def _modulate(sh: Shift, var: torch.Tensor) -> Shift:
    if sh.pure:
        return Shift(sh.E, ax.combine(sh.M, var, zero_a=False)[0])
    return _mixed(ax.combine(sh.M, var)[0], sh.inv)


def _signature(labels: torch.Tensor, axes_: list[int]) -> torch.Tensor:
    """One label per position off ``axes_`` for each distinct tuple of labels along them (keepdim)."""
    keep = [a for a in range(labels.ndim) if a not in axes_]
    t = labels.permute(keep + list(axes_))
    rows = t.reshape(int(np.prod(t.shape[: len(keep)])) if keep else 1, -1).numpy()
    uniq, inv = np.unique(rows, axis=0, return_inverse=True)
    lab = np.arange(1, len(uniq) + 1)
    lab[(uniq == 0).all(axis=1)] = 0
    out = torch.from_numpy(lab[inv.reshape(-1)]).view([labels.shape[a] for a in keep] + [1] * len(axes_))
    inverse = [0] * labels.ndim
    for i, a in enumerate(keep + list(axes_)):
        inverse[a] = i
    return out.permute(inverse)
