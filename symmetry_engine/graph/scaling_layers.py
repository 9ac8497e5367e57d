"""Scaling rules of parameterised layers and attention (a mixin of scaling._Pass).

Linear / convolution / addmm / embedding produce fresh slots along their output feature axis and consume
their input's slots with their weight columns (depthwise convolutions with rows); a matmul with a
parameter is a Linear; a matmul, einsum or attention logit of two moving tensors is a bilinear form,
invariant when the two sides scale inversely (a parity in the union-find); attention values pass through
the probabilities.
"""

from __future__ import annotations

from typing import Any

import torch

from . import axes as ax
from .scaling_base import FIX, arg, tensor_arg


class LayerRules:
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
