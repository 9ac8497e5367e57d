"""The label tensors of the matrix-symmetry pass and what their ends record (see ``matrix_flow.py``).

Why a module of its own: the walk (``matrix_flow.py``), the attention ends (``attention.py``) and the
grouping (``matrix.py``) all read these records; the fiber helpers decide what a consumer or a
contraction may see (one producer vector per fiber, the same pattern in every fiber).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import torch

from .scaling import arg, tensor_arg

@dataclass
class Flow:
    """Labels of one tensor: ``code`` 2·label (+1 when negated) or −1; ``row`` producer vector id or −1."""

    code: torch.Tensor
    row: torch.Tensor
    pv: bool = False                                  # passed a probabilities × values product
    rope: frozenset = frozenset()                     # label pairs rotated together
    scaled: str | None = None                         # times this unlabeled tensor (half of a rotary)

    def labels(self) -> np.ndarray:
        """The labels present (a bincount: −1 >> 1 = −1 lands in bin 0)."""
        if self.code.numel() == 0:
            return np.zeros(0, dtype=np.int64)
        counts = torch.bincount((self.code.reshape(-1) >> 1) + 1)
        return (counts[1:].nonzero().flatten()).numpy()


@dataclass(frozen=True)
class Source:
    """A producer: ``size`` output features labeled ``first .. first + size − 1``."""

    node: str
    weight: str
    weight_axis: int                                   # the weight axis indexed by output features
    bias: str | None
    first: int
    size: int
    op: str
    bias_offset: int = 0                               # the bias is rows bias_offset.. of its parameter


@dataclass
class ConsumerUse:
    """Fibers of a consumer's input: per group of one producer row, (labels, positions) per copy."""

    node: str
    weight: str
    weight_axis: int
    groups: list[tuple[tuple[int, ...], tuple[int, ...]]]
    pv: bool
    rope: frozenset


@dataclass
class QKUse:
    """A query/key contraction: the distinct (query labels, key labels) fiber pairs, position-aligned."""

    node: str
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]
    rope: frozenset


@dataclass
class FlowResult:
    sources: list[Source] = field(default_factory=list)
    consumers: list[ConsumerUse] = field(default_factory=list)
    qk: list[QKUse] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=dict)

    def source_of(self, label: int) -> Source:
        i = bisect.bisect_right([s.first for s in self.sources], label) - 1   # sources are in label order
        if i < 0 or label >= self.sources[i].first + self.sources[i].size:
            raise KeyError(label)
        return self.sources[i]


def _single_use_param(g: nx.DiGraph, a: Any) -> str | None:
    n = tensor_arg(a)
    if n is None or g.nodes[n]["kind"] != "param" or g.out_degree(n) != 1:
        return None
    return g.nodes[n]["param"]


SPLIT_OPS = frozenset("aten.chunk aten.split aten.split_with_sizes aten.unsafe_split aten.unsafe_chunk".split())


def _param_rows(g: nx.DiGraph, a: Any) -> tuple[str, int] | None:
    """(parameter, first row) when ``a`` is a parameter used nowhere else, or one piece of such a parameter
    split along axis 0 (nn.MultiheadAttention's ``in_proj_bias.chunk(3)`` with separate projections), each
    piece used once."""
    key = _single_use_param(g, a)
    if key is not None:
        return key, 0
    n = tensor_arg(a)
    if n is None or g.out_degree(n) != 1:
        return None
    d = g.nodes[n]
    if d.get("target") != "getitem":
        return None
    split = tensor_arg(arg(d["args"], 0))
    sd = g.nodes[split] if split is not None else {}
    if sd.get("target") not in SPLIT_OPS:
        return None
    src = tensor_arg(arg(sd["args"], 0))
    key = _single_use_param(g, arg(sd["args"], 0))
    if key is None or _kw(sd, "dim", 2, 0) % len(g.nodes[src]["shape"]) != 0:
        return None
    i, total = arg(d["args"], 1), g.nodes[src]["shape"][0]
    how = arg(sd["args"], 1)
    if sd["target"] in ("aten.chunk", "aten.unsafe_chunk"):
        size = -(-total // how)
        return key, i * size
    if isinstance(how, int):
        return key, i * how
    if isinstance(how, (list, tuple)) and all(isinstance(v, int) for v in how):
        return key, sum(how[:i])
    return None


def _kw(d: dict, name: str, pos: int, default: Any = None) -> Any:
    return d.get("kwargs", {}).get(name, arg(d["args"], pos, default))



# -- fiber helpers ---------------------------------------------------------------------------------------
def _negate(f: Flow) -> Flow:
    return Flow(torch.where(f.code >= 0, f.code ^ 1, f.code), f.row, f.pv, f.rope, f.scaled)


def _repeat_heads(f: Flow, heads: int) -> Flow:
    n = heads // f.code.shape[-3]
    return Flow(f.code.repeat_interleave(n, -3), f.row.repeat_interleave(n, -3), f.pv, f.rope)


def _one_row_per_fiber(code: torch.Tensor, row: torch.Tensor) -> bool:
    c, r = code.reshape(-1, code.shape[-1]), row.reshape(-1, row.shape[-1])
    r = torch.where(c >= 0, r, torch.full_like(r, -2))
    first = r.max(1, keepdim=True).values
    return bool(((r == first) | (r == -2)).all())


def _patterns(code: torch.Tensor, row: torch.Tensor) -> set[tuple[int, ...]] | None:
    """Distinct label patterns of the fibers (rows of ``code`` [n, c]); None when a fiber mixes vectors
    or repeats a label."""
    if not _one_row_per_fiber(code, row):
        return None
    out = set()
    for p in torch.unique(code, dim=0).tolist():
        lab = [v >> 1 for v in p if v >= 0]
        if len(set(lab)) != len(lab):
            return None
        out.add(tuple(p))
    return out


def _fibers(f: Flow, axis: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """Consumer input fibers along ``axis``: the label pattern must be the same in every fiber that has
    labels, and so must the split of its positions by producer vector.  Returns per (vector, copy) group
    its labels and positions."""
    code = f.code.movedim(axis, -1).reshape(-1, f.code.shape[axis])
    row = f.row.movedim(axis, -1).reshape(code.shape)
    live = (code >= 0).any(1)
    if not live.any():
        return []
    code, row = code[live], row[live]
    if not (code == code[:1]).all():
        return None
    # split fiber 0's labeled positions by producer vector (row), then check every fiber splits the same way:
    # same row wherever fiber 0 has the same row, different rows wherever fiber 0's differ
    live0 = (code[0] >= 0).nonzero().flatten()
    _, inv = torch.unique(row[0, live0], return_inverse=True)
    rep0_of_group: dict[int, int] = {}
    for pos, gi in zip(live0.tolist(), inv.tolist()):
        rep0_of_group.setdefault(gi, pos)
    reps = torch.tensor([rep0_of_group[gi] for gi in inv.tolist()], dtype=torch.int64)
    if not (row[:, live0] == row[:, reps]).all():
        return None
    heads = sorted(rep0_of_group.values())
    hr = row[:, heads]
    if len(heads) > 1 and ((hr.unsqueeze(2) == hr.unsqueeze(1)).sum((1, 2)) != len(heads)).any():
        return None
    rep = torch.full((code.shape[1],), -1, dtype=torch.int64)
    rep[live0] = reps
    rep = rep.unsqueeze(0)
    rep0, lab = rep[0].tolist(), (code[0] >> 1).tolist()
    by_rep: dict[int, list[int]] = {}
    for pos, r in enumerate(rep0):
        if code[0, pos] >= 0:
            by_rep.setdefault(r, []).append(pos)
    out = []
    for positions in by_rep.values():
        seen: dict[int, list[int]] = {}
        for pos in positions:
            seen.setdefault(lab[pos], []).append(pos)
        copies = {len(v) for v in seen.values()}
        if len(copies) != 1:
            return None
        labels = tuple(sorted(seen))
        for c in range(copies.pop()):
            out.append((labels, tuple(seen[lbl][c] for lbl in labels)))
    return out
