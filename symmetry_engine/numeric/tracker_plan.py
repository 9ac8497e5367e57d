"""The tracker's plan: where each parameter's partial sums go, and how they become a record.

Why precomputed: per step the tracker may do no Python work per symmetry group or member (a full-width
VGG-16-BN has 14k groups). At plan time every tracked parameter gets *regions* in one float64 buffer
``X [rows, 9]`` (columns: kernels.COLS): its axis-0 sums (``rows``), axis-1 sums (``cols``), optional
whole-tensor sum and one region per other axis a member uses. A record's statistics are then one gather
from ``X`` (flat index, record position, ±1 multiplier) and one ``index_add_``, for all groups, slots
and kinds at once (numeric/layout.py says what the positions mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from .classes import CLASS_COLUMNS, OptimizerClass
from .kernels import COLS
from .layout import HEADER, RecordLayout
from ..symmetry import Symmetry

NCOL = len(COLS)
C = {name: i for i, name in enumerate(COLS)}
#: record column → (partial-sum column, signed): what each statistic of a slot sums
QUAD = {"N": ("tt", True), "M": ("tt", False), "Q": ("gt", True), "G": ("gg", True), "D": ("dd", True),
        "U": ("td", True)}
TRANS = {"s": ("t", True), "P": ("g", True), "A": ("at", False), "E": ("d", True)}
STATE_STATS = frozenset({"N", "M", "s", "A"})


@dataclass
class Pass:
    """One fused read of a parameter as ``[P, A, Q]``: axis-``axis`` sums land in ``cols`` (A of them)."""

    shape3: tuple[int, int, int]
    rows: slice
    cols: slice


@dataclass
class ParamPlan:
    """A tracked parameter: its passes (the first reads it as [axis-0, axis-1, rest]) and entry offsets."""

    name: str
    param: torch.Tensor
    passes: list[Pass]
    offset: dict[int | None, int] = field(default_factory=dict)   # axis → first X row of its per-index sums
    whole_from_rows: int | None = None                            # X row that must receive Σ rows (dim ≥ 2)
    vector: bool = False                                          # 1-D: its rows lie in X's leading block
    uses_whole: bool = False                                      # some member takes the whole tensor


def _shape3(shape: Sequence[int], axis: int) -> tuple[int, int, int]:
    pre = int(np.prod(shape[:axis])) if axis else 1
    post = int(np.prod(shape[axis + 1:])) if axis + 1 < len(shape) else 1
    return pre, int(shape[axis]), post


def plan_params(params: Mapping[str, torch.Tensor], symmetries: Sequence[Symmetry]) -> tuple[list[ParamPlan], int]:
    """Regions of every tracked parameter in X; returns the plans and X's number of rows."""
    axes: dict[str, set[int | None]] = {}
    for s in symmetries:
        for m in s.members:
            axes.setdefault(m.param, set()).add(m.axis)
    plans, n = [], 0

    def take(k: int) -> slice:
        nonlocal n
        n += k
        return slice(n - k, n)

    # 1-D parameters (biases, norm gains) first: their axis-0 sums form one contiguous block of X, so the
    # tracker handles all of them with a few vectorised ops instead of one call per parameter
    order = sorted(axes, key=lambda name: params[name].dim() != 1)
    vector = [name for name in order if params[name].dim() == 1]
    vec_rows = {name: take(params[name].shape[0]) for name in vector}
    for name in order:
        used = axes[name]
        p = params[name]
        shape = tuple(p.shape)
        if len(shape) == 0:
            first = (1, 1, 1)
        elif len(shape) == 1:
            first = (shape[0], 1, 1)
        else:
            first = (shape[0], shape[1], int(np.prod(shape[2:])))
        rows = vec_rows[name] if name in vec_rows else take(first[0])
        plan = ParamPlan(name, p, [Pass(first, rows, take(first[1]))], vector=name in vec_rows,
                         uses_whole=None in used)
        if len(shape) == 0:
            plan.offset[None] = plan.passes[0].rows.start
        else:
            plan.offset[0] = plan.passes[0].rows.start
        if len(shape) == 1:
            plan.offset[None] = plan.passes[0].cols.start  # A = 1: the column sum is the whole sum
        if len(shape) >= 2:
            plan.offset[1] = plan.passes[0].cols.start
            if None in used:
                plan.whole_from_rows = take(1).start
                plan.offset[None] = plan.whole_from_rows
        for a in sorted(x for x in used if x is not None and x >= 2):
            s3 = _shape3(shape, a)
            ps = Pass(s3, take(s3[0]), take(s3[1]))
            plan.passes.append(ps)
            plan.offset[a] = ps.cols.start
        plans.append(plan)
    return plans, n


@dataclass
class Gather:
    """X.view(-1)[src] · mult, index-added at record positions ``dst`` (relative to ``base``)."""

    src: torch.Tensor
    dst: torch.Tensor
    mult: torch.Tensor
    base: int
    size: int
    grad_positions: np.ndarray       # record positions that need ĝ or θ_{n+1} (NaN in the final record)
    d_positions: np.ndarray          # record positions of D (scaled by η² per class on the host)
    d_class: np.ndarray              # the class of each of them


def plan_gather(symmetries: Sequence[Symmetry], layout: RecordLayout, classes: Sequence[OptimizerClass],
                plans: Sequence[ParamPlan], device: torch.device) -> Gather:
    """Every (partial-sum entry, record position, sign) the statistics of a record sum over."""
    by_name = {p.name: p for p in plans}
    class_of = {n: c.id for c in classes for n in c.params}
    slot_index = {sl: i for i, sl in enumerate(layout.slots)}
    offsets = layout.slot_offsets
    src, dst, mult = [], [], []
    grad_pos, d_pos, d_cls = [], [], []
    for gi, sym in enumerate(symmetries):
        cols = layout.columns(sym.kind)
        table = TRANS if sym.kind == "translation" else QUAD
        for c in layout.group_classes[gi]:
            base = int(offsets[slot_index[(gi, c)]])
            for j, col in enumerate(cols):
                if col not in STATE_STATS:
                    grad_pos.append(base + j)
                if col == "D":
                    d_pos.append(base + j)
                    d_cls.append(c)
        for m in sym.members:
            plan = by_name[m.param]
            start = plan.offset[m.axis]
            rows = [start] if m.axis is None else [start + i for i in m.indices]
            base = int(offsets[slot_index[(gi, class_of[m.param])]])
            for j, col in enumerate(cols):
                pcol, signed = table[col]
                for r in rows:
                    src.append(r * NCOL + C[pcol])
                    dst.append(base + j)
                    mult.append(float(m.sign) if signed else 1.0)
    start = len(HEADER) + layout.n_classes * len(CLASS_COLUMNS)
    size = layout.record_size - start
    dst_arr = np.asarray(dst, dtype=np.int64) - start
    return Gather(torch.as_tensor(np.asarray(src, dtype=np.int64), device=device),
                  torch.as_tensor(dst_arr, device=device),
                  torch.as_tensor(np.asarray(mult, dtype=np.float64), device=device), start, size,
                  np.asarray(grad_pos, dtype=np.int64), np.asarray(d_pos, dtype=np.int64),
                  np.asarray(d_cls, dtype=np.int64))
