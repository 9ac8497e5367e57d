"""What a ``stats.bin`` record holds: header, per-class hyper-parameters, per-slot statistics.

Why slots: a symmetry group's members may sit in several optimizer classes (numeric/classes.py), and the
exact laws need every class's statistics apart (theory.md §7). A *slot* is one (group, class) pair; each
slot has its own block of columns. Slots of one group are contiguous and ordered by class id, so group
totals are ``np.add.reduceat`` over the slot axis.

Record for optimizer step ``n`` (θ_n, ĝ_n before the step; Δ_n = θ_{n+1} − θ_n):

* header ``step, final, loss, grad_sq``: ``final`` is 1 only in the record ``close()`` appends (state θ_T,
  NaN in every gradient or step column); ``grad_sq`` = |ĝ_n|² over all of the model's parameters (the
  scale that normalizes the measured symmetry breaking, as certification does);
* per class, ``CLASS_COLUMNS``: η_n, β_n, d_n, λ_n of its param group, and the fraction updated;
* per slot, its kind's columns, signed sums over the slot's member slices (rescale: A1 minus A2):
  translation ``s = ⟨θ, 1⟩, P = ⟨ĝ, 1⟩, A = Σ|θ|``; scale/rescale ``N = |θ|², M = Σ|θ|² unsigned,
  Q = ⟨ĝ, θ⟩, G = |ĝ|², D = |Δ|²``. When the optimizer has no closed law (Adam, any non-SGD rule) the
  identity columns ``E = ⟨1, Δ⟩`` (translation) and ``U = ⟨θ, Δ⟩`` (quadratic) are added, so the
  bookkeeping identities s_{n+1} = s_n + E_n and N_{n+1} = N_n + 2U_n + D_n can be checked.

``initial_state.bin`` (only when some class already had a momentum buffer when the log began, i.e. a
tracker attached mid-run): one record of per-slot buffer statistics ``m = ⟨1, v_0⟩`` (translation) and
``W = ⟨θ_0, v_0⟩, V = |v_0|²`` (quadratic), the initial states of the momentum laws.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

from .classes import CLASS_COLUMNS

HEADER = ("step", "final", "loss", "grad_sq")
BASE_COLUMNS: dict[str, tuple[str, ...]] = {
    "translation": ("s", "P", "A"),
    "scale": ("N", "M", "Q", "G", "D"),
    "rescale": ("N", "M", "Q", "G", "D"),
}
IDENTITY_COLUMNS = {"translation": ("E",), "scale": ("U",), "rescale": ("U",)}
INITIAL_COLUMNS = {"translation": ("m",), "scale": ("W", "V"), "rescale": ("W", "V")}
#: Columns that describe the state θ_n (valid in the final record); the others need ĝ_n or θ_{n+1}.
STATE_COLUMNS = frozenset({"s", "A", "N", "M"})
KIND_ORDER = ("translation", "scale", "rescale")


@dataclass(frozen=True)
class RecordLayout:
    """Offsets of every value in a record, from the symmetry kinds and each group's class ids."""

    kinds: tuple[str, ...]                     # per group (symmetry order)
    group_classes: tuple[tuple[int, ...], ...]  # per group, sorted class ids of its slots
    n_classes: int
    identity: bool = False                     # identity columns E/U recorded

    def columns(self, kind: str) -> tuple[str, ...]:
        return BASE_COLUMNS[kind] + (IDENTITY_COLUMNS[kind] if self.identity else ())

    @cached_property
    def slot_offsets(self) -> np.ndarray:
        """Offset of each slot's block, slots in group order then class order."""
        sizes = [len(self.columns(k)) for k, cls in zip(self.kinds, self.group_classes) for _ in cls]
        start = len(HEADER) + self.n_classes * len(CLASS_COLUMNS)
        return start + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes \
            else np.zeros(0, np.int64)

    @property
    def record_size(self) -> int:
        return len(HEADER) + self.n_classes * len(CLASS_COLUMNS) + sum(
            len(self.columns(k)) * len(cls) for k, cls in zip(self.kinds, self.group_classes))

    def class_offset(self, cid: int, column: str) -> int:
        return len(HEADER) + cid * len(CLASS_COLUMNS) + CLASS_COLUMNS.index(column)

    @cached_property
    def slots(self) -> list[tuple[int, int]]:
        """(group index, class id) of every slot, in record order."""
        return [(g, c) for g, cls in enumerate(self.group_classes) for c in cls]

    def kind_slots(self, kind: str) -> np.ndarray:
        """Indices (into ``slots``) of the slots of one kind, in record order."""
        return np.array([i for i, (g, _) in enumerate(self.slots) if self.kinds[g] == kind], dtype=np.int64)

    def initial_size(self) -> int:
        return sum(len(INITIAL_COLUMNS[k]) * len(cls) for k, cls in zip(self.kinds, self.group_classes))

    @cached_property
    def initial_offsets(self) -> np.ndarray:
        sizes = [len(INITIAL_COLUMNS[k]) for k, cls in zip(self.kinds, self.group_classes) for _ in cls]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)

    def to_json(self) -> dict[str, Any]:
        return {"dtype": "float64", "byte_order": "little", "header": list(HEADER),
                "class_columns": list(CLASS_COLUMNS), "n_classes": self.n_classes,
                "columns": {k: list(self.columns(k)) for k in KIND_ORDER},
                "initial_columns": {k: list(v) for k, v in INITIAL_COLUMNS.items()},
                "identity": self.identity, "group_classes": [list(c) for c in self.group_classes]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], kinds: Sequence[str]) -> "RecordLayout":
        lay = cls(tuple(kinds), tuple(tuple(int(c) for c in g) for g in data["group_classes"]),
                  int(data["n_classes"]), bool(data.get("identity", False)))
        if len(lay.group_classes) != len(lay.kinds):
            raise ValueError(f"{len(lay.group_classes)} group class lists for {len(lay.kinds)} symmetries")
        if list(data.get("header", [])) != list(HEADER) or list(data.get("class_columns", [])) != list(CLASS_COLUMNS) \
                or {k: list(v) for k, v in data.get("columns", {}).items()} != lay.to_json()["columns"]:
            raise ValueError("header or columns differ from the ones this version writes")
        if any(not g or any(not 0 <= c < lay.n_classes for c in g) or list(g) != sorted(set(g))
               for g in lay.group_classes):
            raise ValueError("a group's class list is empty, unsorted or names an unknown class")
        return lay
