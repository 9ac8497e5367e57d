"""Scaling rules of normalizers (a mixin of scaling._Pass): each normalization group scales together and
is absorbed; the output gets the gain's fresh slots (none without a gain)."""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import torch

from . import axes as ax
from .scaling_base import FIX, FLAT, arg, tensor_arg


class NormRules:
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
