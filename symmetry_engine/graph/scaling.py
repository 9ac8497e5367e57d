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
from .scaling_base import FIX, FLAT, PARAM_ENTRY_LIMIT, ZERO, SignedUnionFind, arg, tensor_arg
from .scaling_layers import LayerRules
from .scaling_norms import NormRules

__all__ = ["FIX", "FLAT", "ZERO", "ScaleClass", "ScalingResult", "SignedUnionFind", "arg", "scaling_pass", "tensor_arg"]

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


class _Pass(LayerRules, NormRules):
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
            n = prod(shp)
            # one incidence per entry, all distinct: appended in bulk (a position embedding has ~10⁵ entries)
            axis = one[0] if len(one) == 1 else FLAT
            recs = [(key, "data", axis, i, start + i, 1) for i in range(n)]
            self.inc.extend(recs)
            self.first_key.update({(key, "data", axis, i, 1): (start + i, 1) for i in range(n)})
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
