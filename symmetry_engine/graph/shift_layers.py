"""Shift step rules of normalizers and contractions (a mixin of shift.Stepper).

Normalizers absorb a shift constant over each normalization group (eval-mode BatchNorm passes it on,
scaled per channel); a Linear, convolution, addmm or matmul with an activation turns a shift into a mixed
one (each output entry combines several source entries); attention absorbs a key shift constant over
keys and passes a value shift constant over keys unchanged (probability rows sum to 1).
"""

from __future__ import annotations

from typing import Any

from . import axes as ax
from .op_semantics import semantics
from .scaling_base import arg, tensor_arg
from .shift_base import Broken, Shift, _mixed, _modulate, _signature, _varying


class ContractionRules:
    def norm(self, name: str, d: dict, shifted: dict, ent) -> Any:
        args, target = d["args"], d["target"]
        role = semantics(target).role
        src = tensor_arg(arg(args, 0))
        if set(shifted) != {src}:
            raise Broken()
        sh = shifted[src]
        xs = self.shape(src) or ()
        nd = len(xs)
        tup = target in ("aten.native_layer_norm", "aten.native_group_norm") or (role == "batch_norm" and target != "aten.batch_norm")
        if role == "layer_norm":
            self.absorb(sh, list(range(nd - len(arg(args, 1) or []), nd)), ent, name)
        elif role == "batch_norm":
            training = bool(arg(args, 5, False)) and target != "aten._native_batch_norm_legit_no_training"
            if not training:   # fixed statistics: a per-channel affine map passes the shift on
                out = _modulate(sh, _varying(xs, [1] if nd > 1 else []))
                return [out] + [None] * 4 if tup else out
            self.absorb(sh, [a for a in range(nd) if a != 1], ent, name)
        elif role == "instance_norm":
            self.absorb(sh, list(range(2, nd)), ent, name)
        else:
            groups = int(arg(args, 6) if role == "native_group_norm" else arg(args, 1))
            C = xs[1]
            def split(t):
                t = ax.broadcast(t, nd)
                t = t.expand(*[C if a == 1 else t.shape[a] for a in range(nd)])
                return t.reshape(*t.shape[:1], groups, C // groups, *t.shape[2:])
            self.absorb(Shift(split(sh.E) if sh.E is not None else None, split(sh.M)), list(range(2, nd + 1)), ent, name)
        return [None] * 5 if tup else None

    def contraction(self, name: str, d: dict, shifted: dict, ent) -> Any:
        target, args = d["target"], d["args"]
        role = semantics(target).role
        os_ = d["shape"]
        if os_ is None:
            raise Broken()
        nd = len(os_)
        if role == "affine":
            x, w = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1))
            if set(shifted) != {x} or w is None or self.cg.graph.nodes[w]["kind"] != "param":
                raise Broken()
            lab = ax.broadcast(shifted[x].labels(), len(self.shape(x)))
            if target == "aten.linear":
                sig = _signature(lab, [lab.ndim - 1])
                return _mixed(ax.combine(sig, ax.fresh(os_, [nd - 1], 1), zero_a=True)[0], shifted[x].involved())
            transposed = target.startswith("aten.conv_transpose") or (target == "aten.convolution" and bool(arg(args, 6, False)))
            spatial = len(self.shape(w)) - 2
            caxis = nd - spatial - 1
            padding = arg(args, 4, 0)
            pads = padding if isinstance(padding, (list, tuple)) else [padding]
            sig = _signature(lab, [caxis])
            sp = list(range(caxis + 1, nd))
            if transposed or any(lab.shape[a] > 1 for a in sp) or any(p not in (0, "valid") for p in pads):
                sig = ax.combine(sig, _varying(os_, sp), zero_a=True)[0]
            return _mixed(ax.combine(sig, ax.fresh(os_, [caxis], 1), zero_a=True)[0], shifted[x].involved())
        if role == "addmm":
            x, w = tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2))
            if set(shifted) != {x} or w is None:
                raise Broken()
            lab = ax.broadcast(shifted[x].labels(), 2)
            return _mixed(ax.combine(_signature(lab, [1]), ax.fresh(os_, [1], 1), zero_a=True)[0], shifted[x].involved())
        if role == "embedding":
            raise Broken()
        if role == "matmul":
            a, b = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1))
            if a in shifted and b in shifted:
                if not shifted[a].pure or a == b:
                    raise Broken()
                # entries are independent: those on the left (queries) cannot pass; follow the right alone
                self.fail(shifted[a], ent)
                shifted = {b: shifted[b]}
            sa, sb = self.shape(a) or (), self.shape(b) or ()
            if len(sa) < 2 or len(sb) < 2:
                raise Broken()
            if b in shifted:
                sh = shifted[b]
                nb = len(sb)
                if self._rows_sum_to_one(a) and all(t.shape[-2] == 1 for t in (ax.broadcast(sh.M, nb),) + ((ax.broadcast(sh.E, nb),) if sh.pure else ())):
                    return self.fit(sh, os_)
                lab = ax.broadcast(sh.labels(), nb)
                sig = ax.broadcast(_signature(lab, [nb - 2]), nd)
                return _mixed(ax.combine(sig, _varying(os_, [nd - 2]), zero_a=True)[0], sh.involved())
            sh = shifted[a]
            na = len(sa)
            lab = ax.broadcast(sh.labels(), na)
            sig = ax.broadcast(_signature(lab, [na - 1]), nd)
            return _mixed(ax.combine(sig, _varying(os_, [nd - 1]), zero_a=True)[0], sh.involved())
        if role == "sdpa":
            kw = d.get("kwargs") or {}
            q, k, v = (tensor_arg(arg(args, i)) for i in range(3))
            if any(t not in (q, k, v) for t in shifted):
                raise Broken()
            if q in shifted:
                if q in (k, v) or not shifted[q].pure:
                    raise Broken()
                self.fail(shifted[q], ent)   # entries are independent: the query part cannot pass
                shifted = {t: sh for t, sh in shifted.items() if t != q}
            out = None
            if k in shifted:
                sh = shifted[k]
                nk = len(self.shape(k))
                const = ax.broadcast(sh.M, nk).shape[-2] == 1 and (not sh.pure or ax.broadcast(sh.E, nk).shape[-2] == 1)
                if not const:
                    raise Broken()
                self.absorb(sh, [nk - 2], ent, name)   # constant over keys: softmax removes it
            if v in shifted:
                sh = shifted[v]
                nv = len(self.shape(v))
                p = arg(args, 4, kw.get("dropout_p", 0.0))
                const = ax.broadcast(sh.M, nv).shape[-2] == 1 and (not sh.pure or ax.broadcast(sh.E, nv).shape[-2] == 1)
                if const and p == 0:
                    out = self.fit(sh, os_)
                else:
                    lab = ax.broadcast(sh.labels(), nv)
                    out = _mixed(ax.combine(_signature(lab, [nv - 2]), _varying(os_, [nd - 2]), zero_a=True)[0], sh.involved())
            return out
        raise Broken()

    def _rows_sum_to_one(self, node: str | None) -> bool:
        """A softmax over its last axis, through identity ops and dropout with p = 0."""
        while node is not None:
            d = self.cg.graph.nodes[node]
            if d["kind"] != "op":
                return False
            t = d["target"]
            if t in ax.IDENTITY or (t == "aten.dropout" and arg(d["args"], 1, 0.5) == 0):
                node = tensor_arg(d["args"][0])
                continue
            if semantics(t).role == "softmax" and t in ("aten.softmax", "aten._softmax"):
                nd = len(d["shape"] or ())
                return arg(d["args"], 1, -1) % nd == nd - 1
            return False
        return False
