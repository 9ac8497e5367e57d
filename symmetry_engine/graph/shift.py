"""How a parameter shift δ moves through ops: the step rules of the translation pass (translation.py).

A :class:`Shift` is δ's structure on one tensor as label grids (axes.py), never its values:

* *pure*: ``E`` labels each entry with the source entry i whose α_i it carries (0: no shift) and ``M``
  partitions the entries by the factor multiplying it (a mask, an input value): δ = f(M)·α_E;
* *mixed*: after a contraction (a Linear, a matmul with an activation) an entry carries a combination of
  several α_i; ``E`` is None and ``M`` only partitions entries into groups with equal δ (0: no shift).

A normalizer absorbs δ when it is constant over each normalization group: for a pure shift that joins
the entries of a group (they must move together) and drops entries mixed with unmoved ones or with other
factors; a mixed shift must be constant on each group outright. A non-linear op, an unknown op or a
second moving operand of a product breaks the shift: pure entries seen there are dropped, a mixed shift
drops the whole source.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import axes as ax
from .capture import CapturedGraph
from .op_semantics import semantics
from .scaling_base import arg, tensor_arg
from .shift_base import Broken, Shift, _mixed, _modulate, _signature, _union, _varying
from .shift_layers import ContractionRules

__all__ = ["Broken", "Shift", "Stepper", "source_shift"]


_BIAS_ARG = {"affine": 2, "addmm": 0, "layer_norm": 3, "batch_norm": 2, "instance_norm": 2, "group_norm": 3}


def source_shift(cg: CapturedGraph, use: str, param: str, axis: int, n: int) -> Shift | str | None:
    """The shift at ``use``'s output when entry i of ``param`` along ``axis`` moves by α_i; "data" when the
    parameter enters as an ordinary operand (the step rules take it from there)."""
    d = cg.graph.nodes[use]
    role = semantics(d["target"]).role
    args = d["args"]
    pos = [p for p in cg.graph.edges[param, use]["pos"]]
    flat = [p[0] if len(p) == 1 else None for p in pos]
    os_ = d["shape"]
    pshape = cg.graph.nodes[param]["shape"]
    if role in ("affine", "addmm", "matmul", "embedding", "layer_norm", "batch_norm", "instance_norm",
                "group_norm", "rms_norm", "native_group_norm", "sdpa") and len(flat) != 1:
        raise Broken()
    i = flat[0] if flat else None
    if os_ is None:
        raise Broken()
    nd = len(os_)
    if role == "affine":
        spatial = len(cg.graph.nodes[tensor_arg(args[1])]["shape"] or ()) - 2 if d["target"] != "aten.linear" else 0
        oaxis = nd - 1 if d["target"] == "aten.linear" else nd - spatial - 1
        transposed = d["target"].startswith("aten.conv_transpose") or (d["target"] == "aten.convolution" and bool(arg(args, 6, False)))
        if transposed:
            raise Broken()
        others = [a for a in range(nd) if a != oaxis]
        if i == 2:
            return Shift(ax.fresh(os_, [oaxis], 1), ax.constant(os_, 1))
        if i == 1 and axis == 0:     # rows: output feature i moves by α_i times a sum of inputs
            return Shift(ax.fresh(os_, [oaxis], 1), _varying(os_, others))
        groups = arg(args, 8, 1) if d["target"] == "aten.convolution" else arg(args, 6, 1)
        if i == 1 and axis == 1 and d["target"] != "aten.linear" and int(groups or 1) != 1:
            return _mixed(_varying(os_, range(nd)))   # grouped: each output channel reads its own group
        if i == 1 and axis == 1:     # columns: every output feature moves by Σ α_j x_j
            return _mixed(_varying(os_, others))
        raise Broken()
    if role == "addmm":
        if i == 0 and len(pshape) == 1:
            return Shift(ax.fresh(os_, [1], 1), ax.constant(os_, 1))
        if i == 2 and axis == 1:
            return Shift(ax.fresh(os_, [1], 1), _varying(os_, [0]))
        if i == 2 and axis == 0:
            return _mixed(_varying(os_, [0]))
        raise Broken()
    if role == "matmul":
        other = tensor_arg(args[1 - i])
        if other is None or cg.graph.nodes[other]["kind"] == "param" or len(pshape) != 2:
            raise Broken()
        if i == 1:
            return (Shift(ax.fresh(os_, [nd - 1], 1), _varying(os_, range(nd - 1))) if axis == 1
                    else _mixed(_varying(os_, range(nd - 1))))
        return (Shift(ax.fresh(os_, [nd - 2], 1), _varying(os_, [a for a in range(nd) if a != nd - 2])) if axis == 0
                else _mixed(_varying(os_, [a for a in range(nd) if a != nd - 2])))
    if role == "embedding":
        if i != 0:
            raise Broken()
        if axis == 1:
            return Shift(ax.fresh(os_, [nd - 1], 1), ax.constant(os_, 1))
        return _mixed(_varying(os_, range(nd - 1)))
    if role in _BIAS_ARG and i == _BIAS_ARG[role]:
        # β of a normalizer: entries broadcast over the parameter's axes
        if role == "layer_norm":
            paxes = list(range(nd - len(pshape), nd))
        else:
            paxes = [1]
        return Shift(ax.fresh(os_, [paxes[axis]], 1), ax.constant(os_, 1))
    if role in ("affine", "addmm", "layer_norm", "batch_norm", "instance_norm", "group_norm", "rms_norm",
                "native_group_norm", "sdpa", "embedding"):
        raise Broken()   # a gain or a weight in a role that does not pass a shift linearly
    return "data"


class Stepper(ContractionRules):
    """Step rules for one op given the shifts of its inputs (see the module docstring)."""

    def __init__(self, cg: CapturedGraph) -> None:
        self.cg = cg
        self.unknown: list[str] = []
        self._inputs: dict[int, list[str]] = {}   # node attribute dicts live as long as the graph

    def shape(self, name: str | None):
        return None if name is None else self.cg.graph.nodes[name].get("shape")

    def inputs(self, d: dict) -> list[str]:
        key = id(d)
        hit = self._inputs.get(key)
        if hit is not None:
            return hit
        out: list[str] = []

        def walk(a: Any) -> None:
            t = tensor_arg(a)
            if t is not None:
                out.append(t)
            elif isinstance(a, (list, tuple)):
                for x in a:
                    walk(x)
        walk(d["args"])
        walk(tuple((d.get("kwargs") or {}).values()))
        self._inputs[key] = out
        return out

    # -- outcomes -----------------------------------------------------------------------------
    def fail(self, sh: Any, ent) -> None:
        for s in (sh if isinstance(sh, list) else [sh]):
            if isinstance(s, Shift):
                inv = s.involved()
                if inv is None:
                    ent.kill_all()
                else:
                    ent.kill(inv)

    def absorb(self, sh: Shift, group_axes: list[int], ent, where: str) -> None:
        nd = max(sh.M.ndim, sh.E.ndim if sh.E is not None else 0, max(group_axes, default=-1) + 1)
        if sh.pure:
            E, M = torch.broadcast_tensors(ax.broadcast(sh.E, nd), ax.broadcast(sh.M, nd))
            re, rm = ax.group_rows(E, group_axes), ax.group_rows(M, group_axes)
            moving = re > 0
            has = moving.any(1)
            big = np.iinfo(np.int64).max
            mmin = np.where(moving, rm, big).min(1)
            mmax = np.where(moving, rm, -big).max(1)
            bad = has & (((~moving).any(1)) | (mmin != mmax))
            if bad.any():
                ent.kill(np.unique(re[bad][re[bad] > 0]))
            good = has & ~bad
            if good.any():
                rows = re[good]
                first = rows.max(1, keepdims=True)
                prs = ax.pairs(torch.from_numpy(np.broadcast_to(first, rows.shape).copy()), torch.from_numpy(rows))
                for a, b in prs:
                    if b > 0 and a != b:
                        ent.union(int(a), int(b))
                ent.absorbed.update(int(e) for e in np.unique(rows[rows > 0]))
        else:
            inv = sh.involved()
            rows = ax.group_rows(ax.broadcast(sh.M, nd), group_axes)
            if not (rows == rows[:, :1]).all():
                self.fail(sh, ent)
                return
            ent.absorbed.update(range(1, ent.n + 1) if inv is None else inv)
        ent.absorber = ent.absorber or where

    def add(self, a: Shift, b: Shift) -> Shift:
        if a.pure and b.pure and torch.equal(a.E, b.E) and torch.equal(a.M, b.M):
            return a
        la, lb = a.labels(), b.labels()
        nd = max(la.ndim, lb.ndim)
        la, lb = ax.broadcast(la, nd), ax.broadcast(lb, nd)
        lab, _ = ax.combine(la, lb, zero_a=False)
        zero = (ax.broadcast(la, nd) == 0) & (ax.broadcast(lb, nd) == 0)
        lab = torch.where(torch.broadcast_tensors(zero, lab)[0], torch.tensor(0), lab)
        return _mixed(lab, _union(a, b))

    # -- the rules ----------------------------------------------------------------------------
    def step(self, name: str, d: dict, shifted: dict, ent) -> Any:
        target, args = d["target"], d["args"]
        sem = semantics(target)
        role = sem.role
        os_ = d.get("shape")
        if role == "ignore":
            return None
        if role == "getitem":
            src = tensor_arg(arg(args, 0))
            sh = shifted.get(src)
            i = arg(args, 1)
            if isinstance(sh, list) and isinstance(i, int) and i < len(sh):
                return sh[i]
            if isinstance(sh, Shift):
                raise Broken()
            return None
        if any(isinstance(s, list) for s in shifted.values()):
            raise Broken()
        if role == "unknown":
            self.unknown.append(target)
            raise Broken()
        if role == "source" and target not in ("aten.bernoulli", "aten.tril", "aten.triu", "aten.cos", "aten.sin"):
            return None   # zeros_like, new_zeros …: the output does not depend on the values
        if role in ("block", "source", "compare", "rms_norm"):
            raise Broken()
        if role == "unary":
            (src,) = [tensor_arg(arg(args, 0))]
            sh = shifted.get(src)
            if sh is None:
                raise Broken()   # only a parameter argument moves (PReLU's slope)
            if target in ("aten.dropout", "aten.native_dropout", "aten.feature_dropout", "aten.alpha_dropout"):
                p, train = arg(args, 1, 0.5), arg(args, 2, True)
                out = sh if (p == 0 or train is False) else _modulate(sh, _varying(os_, range(len(os_))))
                return [out, None] if target == "aten.native_dropout" else out
            if sem.linear:       # the table says a shift passes (identity ops, negation)
                return sh
            raise Broken()
        if role in ("movement", "flatten"):
            return self.movement(name, d, shifted)
        if role in ("add", "sub"):
            outs = []
            for a in args[:2]:
                t = tensor_arg(a)
                if t in shifted:
                    outs.append(shifted[t])
            if len(outs) == 2:
                return self.add(outs[0], outs[1])
            return self.fit(outs[0], os_)
        if role in ("mul", "div"):
            ent = ent
            ta, tb = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1))
            if ta in shifted and tb in shifted:
                if not shifted[ta].pure or ta == tb:
                    raise Broken()
                self.fail(shifted[ta], ent)
                shifted = {tb: shifted[tb]}
            if role == "div" and tb in shifted:
                raise Broken()
            sh = shifted[ta] if ta in shifted else shifted[tb]
            other = tb if ta in shifted else ta
            sh = self.fit(sh, os_)
            if other is None:
                return sh
            oshape = self.shape(other) or ()
            var = _varying(os_, [len(os_) - len(oshape) + a for a, s in enumerate(oshape) if s > 1])
            return _modulate(sh, var)
        if role in ("where", "masked_fill"):
            cond = tensor_arg(arg(args, 1 if role == "masked_fill" else 0))
            if cond in shifted:
                raise Broken()
            sh = self.fit(next(iter(shifted.values())), os_)
            cs = self.shape(cond) or ()
            return _modulate(sh, _varying(os_, [len(os_) - len(cs) + a for a, s in enumerate(cs) if s > 1]))
        if role == "reduce":
            if target in ("aten.linalg_vector_norm", "aten.norm"):
                raise Broken()
            return self.reduce(d, shifted)
        if role == "pool":
            return self.pool(d, shifted)
        if role == "softmax":
            src = tensor_arg(arg(args, 0))
            if set(shifted) != {src}:
                raise Broken()
            nd = len(self.shape(src) or ())
            self.absorb(shifted[src], [arg(args, 1, -1) % nd], ent, name)
            return None
        if role in ("layer_norm", "batch_norm", "instance_norm", "group_norm", "native_group_norm"):
            return self.norm(name, d, shifted, ent)
        if role in ("affine", "addmm", "matmul", "embedding", "sdpa"):
            return self.contraction(name, d, shifted, ent)
        raise Broken()

    def fit(self, sh: Shift, shape) -> Shift:
        nd = len(shape or ())
        return Shift(ax.broadcast(sh.E, nd) if sh.E is not None else None, ax.broadcast(sh.M, nd), sh.inv)

    def movement(self, name: str, d: dict, shifted: dict) -> Any:
        ins = self.inputs(d)
        shapes = {i: self.shape(i) for i in ins}
        pure = all(s.pure for s in shifted.values())
        try:
            if pure:
                eg, mg, off = {}, {}, 0
                for i in ins:
                    s = shifted.get(i)
                    eg[i] = s.E if s is not None else ax.constant(shapes[i] or (), 0)
                    if s is not None:
                        mg[i] = torch.where(s.M > 0, s.M + off, s.M)
                        off += int(s.M.max()) + 1
                    else:
                        mg[i] = ax.constant(shapes[i] or (), 0)
                vals = ax.index_values(self.cg, ins)
                eg = {i: g for i, g in eg.items() if i not in vals}
                mg = {i: g for i, g in mg.items() if i not in vals}
                e = ax.run_movement(d["target"], d["args"], d.get("kwargs") or {}, eg, shapes, 0, vals)
                m = ax.run_movement(d["target"], d["args"], d.get("kwargs") or {}, mg, shapes, 0, vals)
                if isinstance(e, list):
                    return [Shift(a, b) if bool((a > 0).any()) else None for a, b in zip(e, m)]
                return Shift(e, m)
            lg, off = {}, 0
            for i in ins:
                s = shifted.get(i)
                if s is None:
                    lg[i] = ax.constant(shapes[i] or (), 0)
                else:
                    lab = s.labels()
                    lg[i] = torch.where(lab > 0, lab + off, lab)
                    off += int(lab.max()) + 1
            vals = ax.index_values(self.cg, ins)
            lg = {i: g for i, g in lg.items() if i not in vals}
            out = ax.run_movement(d["target"], d["args"], d.get("kwargs") or {}, lg, shapes, 0, vals)
            if isinstance(out, list):
                inv = _union(*shifted.values())
                return [_mixed(o, inv) if bool((o > 0).any()) else None for o in out]
            return _mixed(out, _union(*shifted.values()))
        except ax.GridError:
            raise Broken() from None

    def _only_data_shift(self, d: dict, shifted: dict) -> tuple[Shift, int]:
        """The shift of arg 0 and its rank, when arg 0 is the only shifted input (reductions, pooling)."""
        src = tensor_arg(arg(d["args"], 0))
        if set(shifted) != {src}:
            raise Broken()
        return shifted[src], len(self.shape(src) or ())

    def reduce(self, d: dict, shifted: dict) -> Shift:
        args = d["args"]
        sh, nd = self._only_data_shift(d, shifted)
        dims = arg(args, 1, (d.get("kwargs") or {}).get("dim"))
        dims = list(range(nd)) if dims in (None, []) else ([dims] if isinstance(dims, int) else list(dims))
        dims = [x % nd for x in dims]
        keep = bool(arg(args, 2, (d.get("kwargs") or {}).get("keepdim", False)))
        if d["target"] in ("aten.max", "aten.min") and len(args) >= 2:
            out = self._reduce(sh, dims, nd, linear=False)
            return [self._squeeze(out, dims, keep), None]
        out = self._reduce(sh, dims, nd, linear=semantics(d["target"]).linear)
        return self._squeeze(out, dims, keep)

    def _squeeze(self, sh: Shift, dims: list[int], keep: bool) -> Shift:
        if keep:
            return sh
        def sq(t):
            for a in sorted(dims, reverse=True):
                t = t.squeeze(a) if t.ndim > a else t
            return t
        return Shift(sq(sh.E) if sh.E is not None else None, sq(sh.M), sh.inv)

    def _const(self, sh: Shift, dims: list[int], nd: int) -> bool:
        E = ax.broadcast(sh.E, nd) if sh.E is not None else None
        M = ax.broadcast(sh.M, nd)
        return all((E is None or E.shape[a] == 1) and M.shape[a] == 1 for a in dims)

    def _reduce(self, sh: Shift, dims: list[int], nd: int, linear: bool) -> Shift:
        E = ax.broadcast(sh.E, nd) if sh.E is not None else None
        M = ax.broadcast(sh.M, nd)
        const = all((E is None or E.shape[a] == 1) and M.shape[a] == 1 for a in dims)
        if const:
            return Shift(E, M, sh.inv)
        if not linear:
            raise Broken()
        lab = ax.broadcast(sh.labels(), nd)
        return _mixed(_signature(lab, [a for a in dims if lab.shape[a] > 1]), sh.involved())

    def pool(self, d: dict, shifted: dict) -> Any:
        args = d["args"]
        sh, nd = self._only_data_shift(d, shifted)
        k = semantics(d["target"]).pool_axes
        dims = list(range(nd - k, nd))
        linear = semantics(d["target"]).linear
        out = self._reduce(sh, dims, nd, linear)
        if not out.pure and not self._const(sh, dims, nd):   # windows at different places see different δ
            out = _mixed(ax.combine(out.M, _varying(d["shape"], dims), zero_a=True)[0], out.inv)
        if linear and "adaptive" not in d["target"]:
            padding = arg(args, 3, 0)
            pads = padding if isinstance(padding, (list, tuple)) else [padding]
            if any(p != 0 for p in pads) and arg(args, 5, True):
                os_ = d["shape"]
                out = _modulate(out, _varying(os_, dims))   # zero padding is averaged in near the border
        tup = d["target"].endswith("with_indices") or d["target"].startswith("aten.adaptive_max")
        return [out, None] if tup else out
