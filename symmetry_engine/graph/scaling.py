"""Scale and rescale symmetries: which scalings of parameter slices leave the loss unchanged.

Every parameterised producer (a Linear/conv output feature, a normalizer's gain entry, an embedding
column, a parameter entry added, concatenated or multiplied in) creates *slots*: scaling its weight row,
bias entry or parameter entry by α scales the entries labelled with that slot by α. Every tensor carries
a grid of slot labels (axes.py), so nothing assumes which axis is the channel: movement ops move labels,
homogeneous ops keep them, reductions and sums require the labels they mix to scale together
(union-find), normalizers require each normalization group to scale together and absorb it, consumers
(weight columns, a parameter multiplied in) undo a scaling with the inverse factor, and bilinear forms
(q·kᵀ, a product of two activations) are invariant when the two sides scale inversely — so the
union-find carries a parity: a slot scales by α or by 1/α relative to its class.

A class is a symmetry when no slot in it is *killed* — used by an op that is not positively
homogeneous, mixed with an entry that does not move, read by the loss head, or by an op missing from
the semantics table — and when the parity is consistent. Labels ``FIX`` (an entry no parameter moves)
and ``ZERO`` (a padded zero, which every scaling keeps) complete the grids; a tensor without a grid is
fixed. A parameter used by several ops (tied embeddings) must get the same factor from each use: the
slots its uses touch are joined accordingly, and its members come from its first use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import prod
from typing import Any, Iterable

import networkx as nx
import numpy as np
import torch

from . import axes as ax
from .capture import CapturedGraph
from .norms import rms_patterns
from .op_semantics import semantics

FIX, ZERO = -1, -2
FLAT = -1                      # incidence axis of an elementwise parameter entry (index = flat index)
PARAM_ENTRY_LIMIT = 1 << 21    # a parameter used as data with more entries than this is held fixed


def tensor_arg(arg: Any) -> str | None:
    if isinstance(arg, tuple) and len(arg) == 2 and arg[0] == "node":
        return arg[1]
    return None


def arg(args: tuple, i: int, default: Any = None) -> Any:
    return args[i] if len(args) > i else default


class SignedUnionFind:
    """Union-find over slot ids with a parity: ``factor(x) = factor(root) ** parity(x)``."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.parity: list[int] = []
        self.bad: set[int] = set()

    def add(self, n: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.parity.extend([1] * n)
        return start

    def find(self, x: int) -> tuple[int, int]:
        path, p = [], 1
        while self.parent[x] != x:
            path.append(x)
            x = self.parent[x]
        root = x
        # compress: recompute parities from the root down
        acc = 1
        for node in reversed(path):
            acc *= self.parity[node]
            self.parity[node] = acc
            self.parent[node] = root
        if path:
            p = self.parity[path[0]]
        return root, p

    def union(self, a: int, b: int, rel: int = 1) -> None:
        """Require ``factor(b) = factor(a) ** rel``."""
        ra, pa = self.find(a)
        rb, pb = self.find(b)
        if ra == rb:
            if pa * rel != pb:
                self.bad.add(ra)
            return
        self.parent[rb] = ra
        self.parity[rb] = pa * rel * pb
        if rb in self.bad:
            self.bad.add(ra)


@dataclass
class ScaleClass:
    """One class of slots: its members' (param, axis, index) → net exponent, and whether a normalizer absorbs it."""

    entries: dict[tuple[str, int, int], int]
    first_slot: int
    normalized: bool


@dataclass
class ScalingResult:
    classes: list[ScaleClass]
    slot_names: list[tuple[str, int]]      # slot id → (producer parameter key, index) for labels
    param_shapes: dict[str, tuple[int, ...]]
    unknown_ops: list[str]
    norm_eps: list[float]
    blocked_reasons: dict[str, int]        # slots without a symmetry, by the first reason found


class _Pass:
    def __init__(self, cg: CapturedGraph) -> None:
        self.cg, self.g = cg, cg.graph
        self.uf = SignedUnionFind()
        self.grid: dict[str, Any] = {}
        self.slot_names: list[tuple[str, int]] = []
        self.inc: list[tuple[str, str, int, int, int, int]] = []   # (param, use, axis, index, slot, sign)
        self.first_key: dict[tuple[str, str, int, int, int], tuple[int, int]] = {}
        self.killed: dict[int, str] = {}
        self.normalized: set[int] = set()
        self.unknown: list[str] = []
        self.norm_eps: list[float] = []
        self.pgrid: dict[str, torch.Tensor | None] = {}
        self.rms = rms_patterns(cg)

    # -- helpers -------------------------------------------------------------------------------
    def shape(self, name: str | None) -> tuple[int, ...] | None:
        return None if name is None else self.g.nodes[name].get("shape")

    def is_param(self, name: str | None) -> bool:
        return name is not None and self.g.nodes[name]["kind"] == "param"

    def pkey(self, name: str) -> str:
        return self.g.nodes[name]["param"]

    def new_slots(self, n: int, key: str) -> int:
        start = self.uf.add(n)
        self.slot_names.extend((key, i) for i in range(n))
        return start

    def incidence(self, param: str, use: str, axis: int, index: int, slot: int, sign: int) -> None:
        k = (param, use, axis, index, sign)   # a depthwise row both consumes (−1) and produces (+1): a product
        first = self.first_key.get(k)
        if first is None:
            self.first_key[k] = (slot, sign)
            self.inc.append((param, use, axis, index, slot, sign))
        elif first[0] != slot:
            self.uf.union(first[0], slot, first[1] * sign)

    def kill(self, grid: Any, why: str) -> None:
        if grid is None:
            return
        vals = np.unique(grid.numpy()) if isinstance(grid, torch.Tensor) else np.asarray(list(grid))
        for s in vals[vals >= 0]:
            self.killed.setdefault(int(s), why)

    def operand(self, name: str | None) -> torch.Tensor | None:
        """The grid of a tensor operand; a parameter used as data gets one slot per entry."""
        if name is None:
            return None
        if self.is_param(name):
            return self.param_grid(name)
        g = self.grid.get(name)
        return g if isinstance(g, torch.Tensor) else None

    def param_grid(self, name: str) -> torch.Tensor | None:
        if name in self.pgrid:
            return self.pgrid[name]
        shp, key = self.shape(name), self.pkey(name)
        grid = None
        if shp is not None and 0 < prod(shp) <= PARAM_ENTRY_LIMIT:
            start = self.new_slots(prod(shp), key)
            grid = ax.compress((torch.arange(prod(shp), dtype=torch.int64) + start).view(shp))
            one = [a for a, s in enumerate(shp) if s > 1]
            for i in range(prod(shp)):
                if len(one) <= 1:
                    index = int(np.unravel_index(i, shp)[one[0]]) if one else 0
                    self.incidence(key, "data", one[0] if one else FLAT, index, start + i, 1)
                else:
                    self.incidence(key, "data", FLAT, i, start + i, 1)
        self.pgrid[name] = grid
        return grid

    def fixed_like(self, name: str | None) -> torch.Tensor:
        return ax.constant(self.shape(name) or (), FIX)

    def set(self, name: str, grid: Any) -> None:
        if isinstance(grid, torch.Tensor) and not bool((grid >= 0).any()):
            return  # nothing moves: a fixed tensor needs no grid
        self.grid[name] = grid

    # -- the pass ------------------------------------------------------------------------------
    def run(self) -> ScalingResult:
        for name in nx.topological_sort(self.g):
            d = self.g.nodes[name]
            if d["kind"] == "op":
                self.visit(name, d)
            elif d["kind"] == "loss":
                self.kill(self.operand(tensor_arg(d["args"][0])), f"the {d['target']} head is not scale-invariant")
        return self.collect()

    def inputs(self, args: Any) -> list[str]:
        out: list[str] = []
        for a in args if isinstance(args, (list, tuple)) else []:
            t = tensor_arg(a)
            if t is not None:
                out.append(t)
            elif isinstance(a, (list, tuple)):
                out += self.inputs(a)
        return out

    def visit(self, name: str, d: dict) -> None:
        target, args = d["target"], d["args"]
        ins = self.inputs(args) + self.inputs(tuple((d.get("kwargs") or {}).values()))
        if name in self.rms.internal:
            return  # pow / mean / add ε / rsqrt of a recognised RMSNorm: read only through its product
        if name in self.rms.products:
            self.visit_rms(name, *self.rms.products[name])
            return
        sem = semantics(target)
        role = sem.role
        moving = [i for i in ins if isinstance(self.grid.get(i), torch.Tensor)]
        if role in ("ignore",):
            return
        if role == "compare" or target in ("aten.bernoulli", "aten.tril", "aten.triu", "aten.cos", "aten.sin"):
            self.kill_all(moving, f"{target} of moving entries")
            return
        if role == "source":
            return   # zeros_like, new_zeros, empty_like …: the output does not depend on the values
        if role in ("unknown", "block"):
            if moving:
                if role == "unknown":
                    self.unknown.append(target)
                self.kill_all(moving, f"unknown op {target}" if role == "unknown" else f"{target}: {sem.note}")
            return
        handler = getattr(self, "visit_" + role, None)
        if handler is None:
            self.kill_all(moving, f"no scaling rule for role {role}")
            return
        try:
            handler(name, d)
        except ax.GridError as exc:
            self.kill_all(moving, f"{target}: {exc}")

    def kill_all(self, names: Iterable[str], why: str) -> None:
        for n in names:
            g = self.grid.get(n)
            for t in (g if isinstance(g, list) else [g]):
                if isinstance(t, torch.Tensor):
                    self.kill(t, why)

    # -- elementwise and movement --------------------------------------------------------------
    def visit_unary(self, name: str, d: dict) -> None:
        g = self.operand(tensor_arg(arg(d["args"], 0)))
        if g is None:
            return
        if d["target"] == "aten.clamp_min" and not (isinstance(arg(d["args"], 1), (int, float)) and 0 <= arg(d["args"], 1) <= 1e-6):
            self.kill(g, "clamp_min at a floor that is not tiny")
            return
        if d["target"] == "aten.native_dropout":
            self.grid[name] = [g, None]
        else:
            self.set(name, g)

    def visit_flatten(self, name: str, d: dict) -> None:
        self.visit_movement(name, d)

    def visit_movement(self, name: str, d: dict) -> None:
        target, args = d["target"], d["args"]
        ins = self.inputs(args)
        vals = ax.index_values(self.cg, ins)
        grids = {i: self.operand(i) for i in ins if i not in vals}
        if all(g is None for g in grids.values()):
            return
        grids = {i: (g if g is not None else self.fixed_like(i)) for i, g in grids.items()}
        out = ax.run_movement(target, args, d.get("kwargs") or {}, grids, {i: self.shape(i) for i in ins}, ZERO, vals)
        self.set(name, out)

    def visit_getitem(self, name: str, d: dict) -> None:
        src, i = tensor_arg(arg(d["args"], 0)), arg(d["args"], 1)
        g = self.grid.get(src)
        if isinstance(g, list) and isinstance(i, int) and i < len(g) and g[i] is not None:
            self.set(name, g[i])

    def visit_add(self, name: str, d: dict) -> None:
        args = d["args"]
        a, b = arg(args, 0), arg(args, 1)
        ga = self.operand(tensor_arg(a)) if tensor_arg(a) else None
        gb = self.operand(tensor_arg(b)) if tensor_arg(b) else None
        if ga is None and gb is None:
            return
        for g, other in ((ga, b), (gb, a)):
            if g is not None and tensor_arg(other) is None and other not in (0, 0.0):
                self.kill(g, "sum with a non-zero constant is not homogeneous")
                return
        alpha = (d.get("kwargs") or {}).get("alpha", 1)
        if alpha == 0:
            gb = None
        ga = ga if ga is not None else (self.fixed_like(tensor_arg(a)) if tensor_arg(a) else ax.constant((), ZERO))
        gb = gb if gb is not None else (self.fixed_like(tensor_arg(b)) if tensor_arg(b) else ax.constant((), ZERO))
        self.set(name, self.sum_grids(ga, gb, "sum with an entry that does not move"))

    visit_sub = visit_add

    def sum_grids(self, ga: torch.Tensor, gb: torch.Tensor, why: str) -> torch.Tensor:
        for x, y in ax.pairs(ga, gb):
            if x >= 0 and y >= 0:
                if x != y:
                    self.uf.union(int(x), int(y))
            elif x >= 0 and y == FIX:
                self.killed.setdefault(int(x), why)
            elif y >= 0 and x == FIX:
                self.killed.setdefault(int(y), why)
        nd = max(ga.ndim, gb.ndim)
        ga, gb = ax.broadcast(ga, nd), ax.broadcast(gb, nd)
        both_zero = (ga == ZERO) & (gb == ZERO)
        out = torch.where(ga >= 0, ga, torch.where(gb >= 0, gb, torch.where(both_zero, torch.tensor(ZERO), torch.tensor(FIX))))
        return ax.compress(out)

    def visit_where(self, name: str, d: dict) -> None:
        args = d["args"]
        cond, a, b = tensor_arg(arg(args, 0)), arg(args, 1), arg(args, 2)
        if d["target"] == "aten.masked_fill":
            cond, a, b = tensor_arg(arg(args, 1)), arg(args, 2), arg(args, 0)
        self.kill(self.operand(cond), "a moving entry used as a mask")
        grids = []
        for v in (a, b):
            t = tensor_arg(v)
            if t is not None:
                g = self.operand(t)
                grids.append(g if g is not None else self.fixed_like(t))
            else:
                grids.append(ax.constant((), ZERO if v in (0, 0.0) else FIX))
        if all(not bool((g >= 0).any()) for g in grids):
            return
        self.set(name, self.sum_grids(grids[0], grids[1], "entrywise choice with an entry that does not move"))

    visit_masked_fill = visit_where

    def visit_mul(self, name: str, d: dict) -> None:
        args, target = d["args"], d["target"]
        a, b = arg(args, 0), arg(args, 1)
        ta, tb = tensor_arg(a), tensor_arg(b)
        div = target == "aten.div"
        if div and (d.get("kwargs") or {}).get("rounding_mode") is not None:
            self.kill_all([t for t in (ta, tb) if t], "division with rounding")
            return
        # a parameter multiplied in (layer scale, a norm gain written by hand): a diagonal layer
        for p, x in ((tb, ta), (ta, tb)) if not div else ((tb, ta),):
            if p is not None and self.is_param(p) and not self.is_param(x):
                self.mul_param(name, x, p, -1 if div else 1)
                return
        ga = self.operand(ta) if ta else None
        gb = self.operand(tb) if tb else None
        if ga is None and gb is None:
            return
        if ta is None or tb is None:   # times a Python number
            g = ga if ga is not None else gb
            c = b if ta is not None else a
            if c == 0:
                return
            if div and ta is None:
                self.kill(g, "a constant divided by a moving entry")
                return
            self.set(name, g)
            return
        if gb is None:
            self.set(name, ax.broadcast(ga, len(self.shape(name) or ())))   # times a mask: homogeneous
        elif ga is None:
            if div:
                self.kill(gb, "a division by a moving entry")
                return
            self.set(name, ax.broadcast(gb, len(self.shape(name) or ())))
        else:
            # bilinear: invariant when the two sides scale inversely (a quotient: together)
            why = "product of a moving entry with one that does not move"
            for x, y in ax.pairs(ga, gb):
                if x >= 0 and y >= 0:
                    self.uf.union(int(x), int(y), 1 if div else -1)
                elif x >= 0 and y == FIX:
                    self.killed.setdefault(int(x), why)
                elif y >= 0 and x == FIX:
                    self.killed.setdefault(int(y), why)

    visit_div = visit_mul

    def mul_param(self, name: str, x: str | None, p: str, sign: int) -> None:
        """``x ⊙ p`` (or ``x / p``): p's entry e consumes x's slots at its positions and produces a new slot."""
        pshape, oshape = self.shape(p), self.shape(name)
        key = self.pkey(p)
        if pshape is None or oshape is None or prod(pshape) > PARAM_ENTRY_LIMIT:
            self.kill(self.operand(x), "product with a parameter too large to follow")
            return
        n = prod(pshape)
        start = self.new_slots(n, key)
        ent = (torch.arange(n, dtype=torch.int64)).view(pshape)
        ent = ax.compress(ax.broadcast(ent, len(oshape)))
        one = [a for a, s in enumerate(pshape) if s > 1]
        def where(i: int) -> tuple[int, int]:
            if len(one) <= 1:
                return (one[0], int(np.unravel_index(i, pshape)[one[0]])) if one else (FLAT, 0)
            return FLAT, i
        use = name
        for i in range(n):
            axis, index = where(i)
            self.incidence(key, use, axis, index, start + i, sign)
        gx = self.operand(x) if x is not None else None
        if gx is not None:
            for e, s in ax.pairs(ent, gx):
                if s >= 0:
                    axis, index = where(int(e))
                    self.incidence(key, use, axis, index, int(s), -sign)
        out = ent + start
        if gx is not None:
            gxb = ax.broadcast(gx, len(oshape))
            out = torch.where(gxb == ZERO, torch.tensor(ZERO), out)
        self.set(name, ax.compress(out))

    # -- reductions ----------------------------------------------------------------------------
    def reduce(self, name: str, g: torch.Tensor, axes_: list[int], keepdim: bool, why: str) -> None:
        rep, prs = ax.reduce_pairs(g, axes_)
        for x, y in prs:
            if x >= 0 and y >= 0 and x != y:
                self.uf.union(int(x), int(y))
            elif (x >= 0 and y == FIX) or (y >= 0 and x == FIX):
                self.killed.setdefault(int(max(x, y)), why)
        if not keepdim:
            for a in sorted(axes_, reverse=True):
                rep = rep.squeeze(a) if rep.ndim > a else rep
        self.set(name, ax.compress(rep))

    def visit_reduce(self, name: str, d: dict) -> None:
        args = d["args"]
        src = tensor_arg(arg(args, 0))
        g = self.operand(src)
        if g is None:
            return
        nd = len(self.shape(src) or ())
        kw = d.get("kwargs") or {}
        norm = d["target"] in ("aten.linalg_vector_norm", "aten.norm")
        if norm and isinstance(arg(args, 1, kw.get("ord", 2)), (int, float)) and arg(args, 1, kw.get("ord", 2)) <= 0:
            self.kill(g, "a norm of order ≤ 0 is not homogeneous")
            return
        dims = arg(args, 2 if norm else 1, kw.get("dim"))
        if dims is None or dims == []:
            dims = list(range(nd))
        dims = [dims] if isinstance(dims, int) else list(dims)
        keep = bool(arg(args, 3 if norm else 2, kw.get("keepdim", False)))
        g = ax.broadcast(g, nd)
        why = f"{d['target']} mixes entries that do not move"
        if d["target"] in ("aten.max", "aten.min") and len(args) >= 2:
            self.reduce(name, g, [x % nd for x in dims], keep, why)
            self.grid[name] = [self.grid.pop(name, None), None]
            return
        self.reduce(name, g, [x % nd for x in dims], keep, why)

    def visit_pool(self, name: str, d: dict) -> None:
        """Each output entry reads one window: the labels inside a window scale together (exactly per window,
        so pooling along a feature axis joins neighbouring features, not the whole axis)."""
        src = tensor_arg(arg(d["args"], 0))
        g = self.operand(src)
        if g is None:
            return
        xs, os_ = self.shape(src), self.shape(name)
        tup = d["target"].endswith("with_indices") or d["target"].startswith("aten.adaptive_max")
        if os_ is None and tup:
            os_ = None
        nd = len(xs or ())
        k = semantics(d["target"]).pool_axes
        g = ax.broadcast(g, nd)
        pooled = list(range(nd - k, nd))
        out_sizes = None
        if xs is not None:
            try:
                out_sizes = self._pool_out_sizes(name, d, xs, k)
            except Exception:  # noqa: BLE001 - fall back to joining whole axes
                out_sizes = None
        why = "pooling mixes entries that do not move"
        if out_sizes is None:
            self.reduce(name, g, pooled, True, why)
        else:
            wins = ax.pool_windows(d["target"], d["args"], k, [xs[a] for a in pooled], out_sizes)
            for a, w in zip(pooled, wins):
                if g.shape[a] == 1:
                    continue
                parts = []
                for idx in w:
                    sub = g.index_select(a, torch.tensor(idx or [0], dtype=torch.int64))
                    rep, prs = ax.reduce_pairs(sub, [a])
                    for x, y in prs:
                        if x >= 0 and y >= 0 and x != y:
                            self.uf.union(int(x), int(y))
                        elif (x >= 0 and y == FIX) or (y >= 0 and x == FIX):
                            self.killed.setdefault(int(max(x, y)), why)
                    parts.append(rep)
                g = torch.cat(parts, a)
            self.set(name, ax.compress(g))
        if tup:
            self.grid[name] = [self.grid.pop(name, None), None]

    def _pool_out_sizes(self, name: str, d: dict, xs: tuple[int, ...], k: int) -> list[int] | None:
        os_ = self.shape(name)
        if os_ is not None:
            return list(os_[-k:])
        users = [u for u in self.g.successors(name) if self.g.nodes[u].get("target") == "getitem"
                 and arg(self.g.nodes[u]["args"], 1) == 0]
        if users and self.shape(users[0]) is not None:
            return list(self.shape(users[0])[-k:])
        return None

    # -- parameterised layers ------------------------------------------------------------------
    def consume(self, use: str, key: str, waxis: int, g: torch.Tensor | None, xaxis: int, nd: int, xsize: int,
                rows_of: Any = None, why: str = "") -> None:
        """Weight slices along ``waxis`` undo the scaling of the input's entries at coordinate j of ``xaxis``
        (``rows_of(j)`` lists the weight indices for input j when they differ from j)."""
        if g is None:
            return
        g = ax.broadcast(g, nd)
        coord = ax.fresh([xsize if a == xaxis else 1 for a in range(nd)], [xaxis], 0)
        prs = ax.pairs(coord, g)
        for j, s in prs:
            if s >= 0:
                for w in (rows_of(int(j)) if rows_of else (int(j),)):
                    self.incidence(key, use, waxis, w, int(s), -1)
        # an input coordinate mixing moving and fixed entries cannot be undone by one column
        fixed_j = {int(j) for j, s in prs if s == FIX}
        for j, s in prs:
            if s >= 0 and int(j) in fixed_j:
                self.killed.setdefault(int(s), why or "a weight column reads moving and fixed entries")

    def produce(self, name: str, use: str, out_axis: int, members: list[tuple[str, int]], n: int, label: str) -> None:
        """Output entries along ``out_axis`` get fresh slots; each ``(param key, param axis)`` member scales."""
        oshape = self.shape(name)
        start = self.new_slots(n, label)
        for c in range(n):
            for key, paxis in members:
                self.incidence(key, use, paxis, c, start + c, 1)
        self.set(name, ax.fresh(oshape, [out_axis], start))

    def visit_affine(self, name: str, d: dict) -> None:
        target, args = d["target"], d["args"]
        x, w, b = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2))
        gx = self.operand(x)
        xs, ws, os_ = self.shape(x), self.shape(w), self.shape(name)
        if xs is None or ws is None or os_ is None or not self.is_param(w) or (b is not None and not self.is_param(b)):
            self.kill(gx, f"{target} with a computed weight or bias")
            return
        wkey = self.pkey(w)
        members = [(wkey, 0)] + ([(self.pkey(b), 0)] if b is not None else [])
        nd = len(xs)
        if target == "aten.linear":
            self.consume(name, wkey, 1, gx, nd - 1, nd, xs[-1])
            self.produce(name, name, len(os_) - 1, members, os_[-1], wkey)
            return
        transposed = target.startswith("aten.conv_transpose") or (target == "aten.convolution" and bool(arg(args, 6, False)))
        groups = arg(args, 8, 1) if target == "aten.convolution" else arg(args, 6 if not transposed else 7, 1)
        groups = int(groups or 1)
        spatial = len(ws) - 2
        caxis = nd - spatial - 1
        if transposed:
            if groups != 1:
                self.kill(gx, "grouped transposed convolution cannot absorb an input scaling")
                self.set(name, None)
                return
            self.consume(name, wkey, 0, gx, caxis, nd, xs[caxis])
            oc = len(os_) - spatial - 1
            self.produce(name, name, oc, [(wkey, 1)] + ([(self.pkey(b), 0)] if b is not None else []), os_[oc], wkey)
            return
        cin_g = ws[1]
        if groups == 1:
            self.consume(name, wkey, 1, gx, caxis, nd, xs[caxis])
        elif cin_g == 1:   # depthwise (channel multiplier m): input channel c feeds weight rows c·m … c·m+m−1
            m = ws[0] // xs[caxis]
            self.consume(name, wkey, 0, gx, caxis, nd, xs[caxis], rows_of=lambda c: range(c * m, c * m + m))
        else:
            self.kill(gx, f"grouped {target} (groups={groups}) cannot absorb an input scaling in one weight slice")
        oc = len(os_) - spatial - 1
        self.produce(name, name, oc, members, os_[oc], wkey)

    def visit_addmm(self, name: str, d: dict) -> None:
        args = d["args"]
        b, x, w = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2))
        gx = self.operand(x)
        xs, os_ = self.shape(x), self.shape(name)
        kw = d.get("kwargs") or {}
        if (xs is None or os_ is None or not self.is_param(w) or (b is not None and not self.is_param(b))
                or kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1 or (b is not None and len(self.shape(b) or ()) != 1)):
            self.kill(gx, "addmm with a computed weight, a 2-D bias or scaled terms")
            return
        self.consume(name, self.pkey(w), 0, gx, 1, 2, xs[1])
        self.produce(name, name, 1, [(self.pkey(w), 1)] + ([(self.pkey(b), 0)] if b else []), os_[1], self.pkey(w))

    def visit_embedding(self, name: str, d: dict) -> None:
        w = tensor_arg(arg(d["args"], 0))
        os_ = self.shape(name)
        if not self.is_param(w) or os_ is None:
            return
        self.produce(name, name, len(os_) - 1, [(self.pkey(w), 1)], os_[-1], self.pkey(w))

    def visit_matmul(self, name: str, d: dict) -> None:
        a, b = tensor_arg(arg(d["args"], 0)), tensor_arg(arg(d["args"], 1))
        sa, sb, so = self.shape(a), self.shape(b), self.shape(name)
        if sa is None or sb is None or so is None:
            self.kill_all([a, b], "matmul with unknown shapes")
            return
        if self.is_param(b) and len(sb) == 2 and not self.is_param(a) and len(sa) >= 2:
            ga = self.operand(a)
            self.consume(name, self.pkey(b), 0, ga, len(sa) - 1, len(sa), sa[-1])
            self.produce(name, name, len(so) - 1, [(self.pkey(b), 1)], so[-1], self.pkey(b))
            return
        if self.is_param(a) and len(sa) == 2 and not self.is_param(b) and len(sb) >= 2:
            gb = self.operand(b)
            self.consume(name, self.pkey(a), 1, gb, len(sb) - 2, len(sb), sb[-2])
            self.produce(name, name, len(so) - 2, [(self.pkey(a), 0)], so[-2], self.pkey(a))
            return
        ga, gb = self.operand(a), self.operand(b)
        if ga is None and gb is None:
            return
        if len(sa) < 2 or len(sb) < 2:
            self.kill_all([a, b], "matrix-vector product")
            for g in (ga, gb):
                self.kill(g, "matrix-vector product")
            return
        if gb is None:      # x @ fixed: mixes x's last axis
            ga = ax.broadcast(ga, len(sa))
            self.reduce(name, ga, [len(sa) - 1], True, "a product mixes moving and fixed entries")
            self.align_out(name)
        elif ga is None:    # fixed @ x: mixes x's second-to-last axis
            gb = ax.broadcast(gb, len(sb))
            self.reduce(name, gb, [len(sb) - 2], True, "a product mixes moving and fixed entries")
            self.align_out(name)
        else:
            self.bilinear(ga, gb, len(sa), len(sb))

    def align_out(self, name: str) -> None:
        g = self.grid.get(name)
        if isinstance(g, torch.Tensor):
            self.grid[name] = ax.compress(ax.broadcast(g, len(self.shape(name) or ())))

    def bilinear(self, ga: torch.Tensor, gb: torch.Tensor, na: int, nb: int, rel: int = -1) -> None:
        """``a @ b`` invariant: a[..., i, k] and b[..., k, j] scale inversely for every pair."""
        ga, gb = ax.broadcast(ga, na).unsqueeze(-1), ax.broadcast(gb, nb).unsqueeze(-3)
        why = "a product of moving and fixed entries"
        for x, y in ax.pairs(ga, gb):
            if x >= 0 and y >= 0:
                self.uf.union(int(x), int(y), rel)
            elif x >= 0 and y == FIX:
                self.killed.setdefault(int(x), why)
            elif y >= 0 and x == FIX:
                self.killed.setdefault(int(y), why)

    def visit_sdpa(self, name: str, d: dict) -> None:
        args, kw = d["args"], d.get("kwargs") or {}
        q, k, v = (tensor_arg(arg(args, i)) for i in range(3))
        mask = tensor_arg(arg(args, 3, kw.get("attn_mask")))
        self.kill(self.operand(mask), "a moving attention mask")
        gq, gk, gv = self.operand(q), self.operand(k), self.operand(v)
        sq, sk, sv = self.shape(q), self.shape(k), self.shape(v)
        if sq is None or sk is None or sv is None:
            self.kill_all([q, k, v], "attention with unknown shapes")
            return
        gqa = bool(kw.get("enable_gqa", arg(args, 7, False)))
        rep = sq[-3] // sk[-3] if gqa and len(sq) >= 3 and len(sk) >= 3 else 1
        if gq is not None or gk is not None:
            gq = gq if gq is not None else self.fixed_like(q)
            gk = gk if gk is not None else self.fixed_like(k)
            gk = ax.broadcast(gk, len(sk))
            if rep > 1 and gk.shape[-3] > 1:
                gk = gk.repeat_interleave(rep, dim=-3)
            self.bilinear(gq, gk.transpose(-1, -2), len(sq), len(sk))
        if gv is not None:
            gv = ax.broadcast(gv, len(sv))
            if rep > 1 and gv.shape[-3] > 1:
                gv = gv.repeat_interleave(rep, dim=-3)
            self.reduce(name, gv, [len(sv) - 2], True, "attention mixes moving and fixed values")
            self.align_out(name)

    def visit_einsum(self, name: str, d: dict) -> None:
        """Two operands: invariant when both move and scale inversely over every contracted pair; linear in
        one when the other is fixed (labels joined along its summed letters)."""
        args = d["args"]
        eq, ops = arg(args, 0), [tensor_arg(t) for t in (arg(args, 1) or [])]
        grids = [self.operand(o) for o in ops]
        if all(g is None for g in grids):
            return
        if not isinstance(eq, str) or "->" not in eq or "." in eq or len(ops) != 2 or None in ops:
            self.kill_all([o for o in ops if o], "einsum of this form")
            for g in grids:
                self.kill(g, "einsum of this form")
            return
        lhs, out = eq.replace(" ", "").split("->")
        la, lb = lhs.split(",")
        letters = sorted(set(la + lb + out))
        def joint(g: torch.Tensor, lab: str, shape) -> torch.Tensor:
            g = ax.broadcast(g, len(lab))
            t = g.permute([lab.index(c) for c in sorted(lab)])
            view = [t.shape[sorted(lab).index(c)] if c in lab else 1 for c in letters]
            return t.reshape(view)
        if grids[0] is not None and grids[1] is not None:
            ga, gb = joint(grids[0], la, None), joint(grids[1], lb, None)
            why = "a product of moving and fixed entries"
            for x, y in ax.pairs(ga, gb):
                if x >= 0 and y >= 0:
                    self.uf.union(int(x), int(y), -1)
                elif x >= 0 and y == FIX:
                    self.killed.setdefault(int(x), why)
                elif y >= 0 and x == FIX:
                    self.killed.setdefault(int(y), why)
            return
        i = 0 if grids[0] is not None else 1
        lab, g = (la, lb)[i], grids[i]
        summed = [lab.index(c) for c in lab if c not in out]
        g = ax.broadcast(g, len(lab))
        self.reduce(name, g, summed, True, "a contraction mixes moving and fixed entries")
        rep = self.grid.pop(name, None)
        if rep is None:
            return
        keep = [c for c in lab]
        view = [rep.shape[keep.index(c)] if c in keep else 1 for c in out]
        perm = [keep.index(c) for c in out if c in keep]
        t = rep.squeeze() if False else rep
        t = t.permute(perm + [a for a in range(len(keep)) if a not in perm]).reshape(
            [rep.shape[a] for a in perm] + [1] * (len(keep) - len(perm)))
        t = t.reshape([rep.shape[a] for a in perm]) if len(perm) else t.reshape(())
        self.set(name, ax.compress(t.reshape(view) if len(view) else t))

    # -- normalizers -----------------------------------------------------------------------------
    def normalize(self, g: torch.Tensor | None, group_axes: list[int], nd: int, why: str) -> None:
        """Each group (entries sharing the coordinates off ``group_axes``) scales together and is absorbed."""
        if g is None:
            return
        g = ax.broadcast(g, nd)
        rows = ax.group_rows(g, group_axes)
        rows = np.unique(rows, axis=0) if len(rows) > 1 else rows
        moving = rows >= 0
        bad = moving.any(1) & (rows == FIX).any(1)
        for s in np.unique(rows[bad][rows[bad] >= 0]):
            self.killed.setdefault(int(s), why)
        first = rows.max(1, keepdims=True)
        for a, b in ax.pairs(torch.from_numpy(np.broadcast_to(first, rows.shape).copy()), torch.from_numpy(rows)):
            if a >= 0 and b >= 0 and a != b:
                self.uf.union(int(a), int(b))
        self.normalized.update(int(v) for v in np.unique(rows[moving]))

    def affine_out(self, name: str, weight: str | None, bias: str | None, axes_: list[int], tuple_out: bool,
                   os_: tuple[int, ...] | None) -> None:
        """γ (and β) of a normalizer produce the output's slots over ``axes_``; without γ the output is fixed."""
        if weight is None or not self.is_param(weight) or (bias is not None and not self.is_param(bias)):
            out = None
        else:
            wshape = self.shape(weight) or ()
            n = prod(wshape)
            wkey = self.pkey(weight)
            bkey = self.pkey(bias) if bias is not None else None
            start = self.new_slots(n, wkey)
            one = len([s for s in wshape if s > 1]) <= 1 and len(wshape) == 1
            for c in range(n):
                self.incidence(wkey, name, 0 if one else FLAT, c, start + c, 1)
                if bkey is not None:
                    self.incidence(bkey, name, 0 if one else FLAT, c, start + c, 1)
            if os_ is None:
                out = None
            else:
                sizes = [os_[a] if a in axes_ else 1 for a in range(len(os_))]
                out = (torch.arange(n, dtype=torch.int64) + start).view(sizes)
        if tuple_out:
            self.grid[name] = [out, None, None, None, None]
        elif out is not None:
            self.set(name, out)

    def eps(self, value: Any) -> None:
        if isinstance(value, (int, float)):
            self.norm_eps.append(float(value))

    def visit_layer_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        x, nshape = tensor_arg(arg(args, 0)), list(arg(args, 1) or [])
        xs = self.shape(x)
        self.eps(arg(args, 4, 1e-5))
        if xs is None:
            return
        nd = len(xs)
        naxes = list(range(nd - len(nshape), nd))
        self.normalize(self.operand(x), naxes, nd, "layer_norm over entries that do not move")
        tup = d["target"] == "aten.native_layer_norm"
        self.affine_out(name, tensor_arg(arg(args, 2)), tensor_arg(arg(args, 3)), naxes, tup, xs)

    def visit_rms_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        x, nshape = tensor_arg(arg(args, 0)), list(arg(args, 1) or [])
        xs = self.shape(x)
        self.eps(arg(args, 3, None))
        if xs is None:
            return
        nd = len(xs)
        naxes = list(range(nd - len(nshape), nd))
        self.normalize(self.operand(x), naxes, nd, "rms_norm over entries that do not move")
        self.affine_out(name, tensor_arg(arg(args, 2)), None, naxes, False, xs)

    def visit_rms(self, name: str, x: str, dims: list[int], eps: float) -> None:
        """A recognised RMSNorm product x · rsqrt(mean(x², dims) + ε): scale-invariant, output fixed."""
        xs = self.shape(x)
        self.eps(eps)
        if xs is None:
            return
        nd = len(xs)
        self.normalize(self.operand(x), [a % nd for a in dims], nd, "RMS normalization over entries that do not move")

    def visit_batch_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        x = tensor_arg(arg(args, 0))
        xs = self.shape(x)
        training = bool(arg(args, 5, False)) and d["target"] != "aten._native_batch_norm_legit_no_training"
        self.eps(arg(args, 7))
        gx = self.operand(x)
        if xs is None or len(xs) < 2:
            self.kill(gx, "batch_norm on an unexpected layout")
            if d["target"] != "aten.batch_norm":
                self.grid[name] = [None] * 5
            return
        if training:
            self.normalize(gx, [a for a in range(len(xs)) if a != 1], len(xs), "batch_norm over entries that do not move")
        else:
            self.kill(gx, "eval-mode normalization uses fixed statistics")
        tup = d["target"] != "aten.batch_norm"
        self.affine_out(name, tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2)), [1], tup, xs)

    def visit_instance_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        x = tensor_arg(arg(args, 0))
        xs = self.shape(x)
        self.eps(arg(args, 7))
        gx = self.operand(x)
        if xs is None or len(xs) < 3 or not bool(arg(args, 5, True)):
            self.kill(gx, "instance_norm with fixed statistics")
            return
        self.normalize(gx, list(range(2, len(xs))), len(xs), "instance_norm over entries that do not move")
        self.affine_out(name, tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2)), [1], False, xs)

    def visit_group_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        native = d["target"] == "aten.native_group_norm"
        x = tensor_arg(arg(args, 0))
        groups = int(arg(args, 6) if native else arg(args, 1))
        w, b = (tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2))) if native else (tensor_arg(arg(args, 2)), tensor_arg(arg(args, 3)))
        self.eps(arg(args, 7) if native else arg(args, 4))
        xs = self.shape(x)
        gx = self.operand(x)
        if xs is None or len(xs) < 2:
            self.kill(gx, "group_norm on an unexpected layout")
            return
        if gx is not None:
            g = ax.broadcast(gx, len(xs))
            g = g.expand(*[xs[a] if a == 1 else g.shape[a] for a in range(len(xs))])
            g = g.reshape(*g.shape[:1], groups, xs[1] // groups, *g.shape[2:])
            self.normalize(g, list(range(2, g.ndim)), g.ndim, "group_norm over entries that do not move")
        self.affine_out(name, w, b, [1], native, xs)

    visit_native_group_norm = visit_group_norm

    # -- results ---------------------------------------------------------------------------------
    def shared_params(self) -> set[tuple[str, str]]:
        """Join the slots a parameter's uses touch so each entry gets one factor; returns the (param, use)
        pairs whose incidences are not members (every use but the first)."""
        by_param: dict[str, dict[str, list]] = defaultdict(dict)
        for rec in self.inc:
            by_param[rec[0]].setdefault(rec[1], []).append(rec)
        skip: set[tuple[str, str]] = set()
        for key, uses in by_param.items():
            if len(uses) < 2:
                continue
            names = list(uses)
            first = uses[names[0]]
            first_by = {(r[2], r[3]): (r[4], r[5]) for r in first}
            first_axes = {r[2] for r in first}
            for other in names[1:]:
                skip.add((key, other))
                recs = uses[other]
                axes_other = {r[2] for r in recs}
                if (FLAT in first_axes) != (FLAT in axes_other) and (first_axes | axes_other) != {FLAT}:
                    why = f"{key} is used elementwise and as a weight"
                    self.kill((r[4] for r in first + recs), why)
                    continue
                for r in recs:
                    hit = first_by.get((r[2], r[3]))
                    if hit is None:
                        self.killed.setdefault(r[4], f"{key} is shared and this use scales it differently")
                    else:
                        self.uf.union(hit[0], r[4], hit[1] * r[5])
                for (a, i), (s, _) in first_by.items():
                    if a not in axes_other:
                        self.killed.setdefault(s, f"{key} is shared and another use does not scale it")
        return skip

    def collect(self) -> ScalingResult:
        skip = self.shared_params()
        dead: set[int] = set()
        reasons: dict[str, int] = {}
        for s, why in self.killed.items():
            dead.add(self.uf.find(s)[0])
            reasons[why] = reasons.get(why, 0) + 1
        dead |= {self.uf.find(r)[0] for r in self.uf.bad}
        classes: dict[int, ScaleClass] = {}
        for param, use, axis, index, slot, sign in self.inc:
            if (param, use) in skip:
                continue
            root, par = self.uf.find(slot)
            if root in dead:
                continue
            c = classes.get(root)
            if c is None:
                c = classes[root] = ScaleClass({}, slot, False)
            k = (param, axis, index)
            c.entries[k] = c.entries.get(k, 0) + sign * par
            c.first_slot = min(c.first_slot, slot)
        for s in self.normalized:
            root = self.uf.find(s)[0]
            if root in classes:
                classes[root].normalized = True
        out = [c for c in classes.values()]
        return ScalingResult(out, self.slot_names, dict(self.cg.param_shapes), sorted(set(self.unknown)), self.norm_eps, reasons)


def scaling_pass(cg: CapturedGraph) -> ScalingResult:
    return _Pass(cg).run()
