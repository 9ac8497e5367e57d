"""Scale and rescale symmetries: which channel scalings leave the loss unchanged.

Every tensor with a known channel axis gets one *slot* per channel. Ops that are positively homogeneous
per channel (ReLU, pooling, dropout, flatten, residual add, concat) join input and output slots in a
union-find; the slots of one class must all be scaled by the same α. Parameterised layers *produce*
slots (scaling their weight row and bias entry by α scales the output channel) and *consume* them
(scaling the matching weight columns by 1/α undoes an input scaling). Normalizers in train mode absorb a
scaling of their whole normalization group. A class is a symmetry when every slot in it is produced by a
parameter (not by the network input, a constant or a non-homogeneous op) and every use of it is
homogeneous, a consumer or a normalizer; the loss head blocks. Unknown ops block (fail closed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import prod
from typing import Any, Iterable

import networkx as nx
from networkx.utils import UnionFind

from .capture import CapturedGraph
from .op_semantics import semantics


# A member entry before merging: (state_dict key, axis, index along it, sign). Plain tuples keep the pass
# cheap on wide layers; detect.py turns a class's entries into merged `Member`s once.
Entry = tuple[str, int, int, int]


@dataclass
class Layout:
    axis: int
    size: int


@dataclass
class ScalingResult:
    classes: list[tuple[list[tuple[str, int]], list[Entry], list[Entry], bool]]
    layouts: dict[str, Layout]
    unknown_ops: list[str]
    norm_eps: list[float]
    blocked_reasons: dict[str, int]   # slots without a symmetry, by the first reason found for their tensor


def tensor_arg(arg: Any) -> str | None:
    if isinstance(arg, tuple) and len(arg) == 2 and arg[0] == "node":
        return arg[1]
    return None


def arg(args: tuple, i: int, default: Any = None) -> Any:
    return args[i] if len(args) > i else default


class _Pass:
    def __init__(self, cg: CapturedGraph):
        self.cg = cg
        self.g: nx.DiGraph = cg.graph
        self.uf = UnionFind()
        self.layouts: dict[str, Layout] = {}
        # per channel slot: entries that scale it (+1) and that undo its scaling (−1); slots a normalizer absorbs
        self.producers: dict[tuple[str, int], list[Entry]] = defaultdict(list)
        self.consumers: dict[tuple[str, int], list[Entry]] = defaultdict(list)
        self.normalized: set[tuple[str, int]] = set()
        self.unknown: list[str] = []
        self.norm_eps: list[float] = []
        # blocking always concerns every channel of a tensor, so reasons are kept per tensor (first one wins)
        self.blocked: dict[str, str] = {}      # a use of the tensor does not commute with scaling
        self.unscalable: dict[str, str] = {}   # the tensor comes from a source that cannot be scaled

    # -- helpers -------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.g.nodes[name].get("shape")

    def set_layout(self, name: str, axis: int, size: int) -> None:
        self.layouts[name] = Layout(axis, size)
        for c in range(size):
            self.uf[(name, c)]  # register the slot

    def slots(self, name: str | None) -> list[tuple[str, int]]:
        if name is None or name not in self.layouts:
            return []
        return [(name, c) for c in range(self.layouts[name].size)]

    def block_uses(self, name: str | None, why: str) -> None:
        if name in self.layouts:
            self.blocked.setdefault(name, why)

    def mark_unscalable(self, name: str, why: str) -> None:
        if name in self.layouts:
            self.unscalable.setdefault(name, why)

    def same_layout(self, src: str, dst: str) -> bool:
        lay, shp = self.layouts.get(src), self.shape(dst)
        if lay is None or shp is None or self.shape(src) is None:
            return False
        if len(shp) <= lay.axis or shp[lay.axis] != lay.size:
            return False
        self.set_layout(dst, lay.axis, lay.size)
        return True

    def join(self, src: str, dst: str, mapping: Iterable[tuple[int, int]]) -> None:
        for a, b in mapping:
            self.uf.union((src, a), (dst, b))

    def param_key(self, name: str | None) -> str | None:
        """State-dict key of a parameter node used by exactly one op, else None (shared or computed)."""
        if name is None or self.g.nodes[name]["kind"] != "param":
            return None
        if self.g.out_degree(name) != 1:
            return None
        return self.g.nodes[name]["param"]

    def fail(self, node: str, ins: list[str], why: str) -> None:
        for i in ins:
            self.block_uses(i, why)
        data = ins[0] if ins else None
        if data in self.layouts and self.same_layout(data, node):
            self.mark_unscalable(node, why)

    # -- the pass ------------------------------------------------------------------------------
    def run(self) -> ScalingResult:
        for name in nx.topological_sort(self.g):
            d = self.g.nodes[name]
            if d["kind"] == "input":
                shp = d["shape"]
                if shp and len(shp) >= 2:
                    self.set_layout(name, 1, shp[1])
                    self.mark_unscalable(name, "network input")
            elif d["kind"] == "op":
                self.visit(name, d)
            elif d["kind"] == "loss":
                self.block_uses(tensor_arg(d["args"][0]), f"the {d['target']} head is not scale-invariant")
        return self.collect()

    def visit(self, name: str, d: dict) -> None:
        target, args = d["target"], d["args"]
        sem = semantics(target)
        ins = [tensor_arg(a) for a in args if tensor_arg(a) is not None]
        data = tensor_arg(arg(args, 0))
        role = sem.role
        if role == "unknown":
            self.unknown.append(target)
            self.fail(name, ins, f"unknown op {target}")
        elif role == "block":
            self.fail(name, ins, f"{target}: {sem.note}")
        elif role == "ignore":
            return
        elif role in ("unary", "pool", "getitem"):
            self.visit_passthrough(name, d, data, role)
        elif role == "mean":
            self.visit_mean(name, args, data)
        elif role == "affine":
            self.visit_affine(name, d)
        elif role in ("batch_norm", "instance_norm"):
            self.visit_channel_norm(name, d, role)
        elif role == "layer_norm":
            self.visit_layer_norm(name, d)
        elif role == "group_norm":
            self.visit_group_norm(name, d)
        elif role in ("add", "sub"):
            self.visit_sum(name, args, ins)
        elif role == "mul":
            self.visit_mul(name, args, ins)
        elif role == "cat":
            self.visit_cat(name, args)
        elif role == "flatten":
            self.visit_reshape(name, data)
        else:  # a role without a handler must not silently pass
            self.fail(name, ins, f"no scaling rule for role {role}")

    def visit_passthrough(self, name: str, d: dict, data: str | None, role: str) -> None:
        if data not in self.layouts:
            return
        lay = self.layouts[data]
        if role == "getitem":
            if arg(d["args"], 1) != 0:
                return  # indices of max pooling: not data
            self.set_layout(name, lay.axis, lay.size)
        elif self.shape(name) is None and role == "pool":  # tuple output (values, indices)
            self.set_layout(name, lay.axis, lay.size)
        elif not self.same_layout(data, name):
            self.block_uses(data, f"{d['target']} changes the channel axis")
            return
        # (PReLU's slope is not a member: max(0, x) + a·min(0, x) is homogeneous in x)
        self.join(data, name, ((c, c) for c in range(lay.size)))

    def visit_mean(self, name: str, args: tuple, data: str | None) -> None:
        if data not in self.layouts:
            return
        lay, dims = self.layouts[data], arg(args, 1)
        nd = len(self.shape(data) or ())
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if dims and all((x % nd) not in (0, lay.axis) for x in dims) and lay.axis < len(self.shape(name) or ()):
            self.set_layout(name, lay.axis, lay.size)
            self.join(data, name, ((c, c) for c in range(lay.size)))
        else:
            self.fail(name, [data], "mean over the channel or batch axis")

    def visit_affine(self, name: str, d: dict) -> None:
        target, args = d["target"], d["args"]
        data, w, b = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2))
        shp = self.shape(name)
        if target == "aten.linear":
            out_axis = len(shp) - 1 if shp else None
            in_axis_expected = len(self.shape(data) or ()) - 1
            groups = 1
        else:
            out_axis, in_axis_expected = 1, 1
            if target == "aten.convolution":
                groups = arg(args, 8, 1)
                if arg(args, 6, False):
                    groups = -1  # transposed convolution: weight layout differs; not modelled
            else:
                groups = arg(args, 6, 1)
        wkey, bkey = self.param_key(w), self.param_key(b)
        # grouped/depthwise convolutions still produce output channel c from weight row c; consuming an
        # input channel would need a slice restricted on two axes, which a member cannot express
        ok = wkey is not None and (b is None or bkey is not None) and groups >= 1
        # output channels: produced by the weight rows (and bias entries)
        if shp is not None and out_axis is not None:
            self.set_layout(name, out_axis, shp[out_axis])
            if not ok:
                self.mark_unscalable(name, f"{target} with shared, computed or transposed weights")
            else:
                self.produce(name, wkey, bkey, 0)
        # input channels: absorbed by the weight columns
        if data in self.layouts:
            lay = self.layouts[data]
            if not ok or groups != 1 or lay.axis != in_axis_expected:
                self.block_uses(data, f"{target} cannot absorb this input scaling")
            else:
                for c in range(lay.size):
                    self.consumers[(data, c)].append((wkey, 1, c, -1))
        for extra in (w, b):  # a weight computed from activations would be a use we do not model
            if extra is not None and self.g.nodes[extra]["kind"] not in ("param",):
                self.block_uses(extra, f"{target} uses an activation as a weight")

    def produce(self, name: str, wkey: str, bkey: str | None, axis: int) -> None:
        """Channel c of ``name`` is produced by weight[c] (and bias[c]) along ``axis``."""
        for c in range(self.layouts[name].size):
            prods = self.producers[(name, c)]
            prods.append((wkey, axis, c, 1))
            if bkey is not None:
                prods.append((bkey, axis, c, 1))

    def produce_affine(self, name: str, weight: str | None, bias: str | None, why: str) -> None:
        """Output channel c of an affine normalizer is produced by γ[c] (and β[c])."""
        wkey, bkey = self.param_key(weight), self.param_key(bias)
        if wkey is None or (bias is not None and bkey is None):
            self.mark_unscalable(name, why)
        else:
            self.produce(name, wkey, bkey, 0)

    def visit_channel_norm(self, name: str, d: dict, role: str) -> None:
        args = d["args"]
        data = tensor_arg(arg(args, 0))
        if data not in self.layouts or self.layouts[data].axis != 1 or not self.same_layout(data, name):
            self.fail(name, [data] if data else [], f"{d['target']} on an unexpected layout")
            return
        training = bool(arg(args, 5, False))
        eps = arg(args, 7)
        if isinstance(eps, (int, float)):
            self.norm_eps.append(float(eps))
        if training:
            for s in self.slots(data):
                self.normalized.add(s)
        else:
            self.block_uses(data, "eval-mode normalization uses fixed statistics")
        self.produce_affine(name, tensor_arg(arg(args, 1)), tensor_arg(arg(args, 2)), "normalizer without affine weight")

    def visit_layer_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        data, nshape = tensor_arg(arg(args, 0)), list(arg(args, 1) or [])
        shp = self.shape(data) if data else None
        eps = arg(args, 4)
        if isinstance(eps, (int, float)):
            self.norm_eps.append(float(eps))
        if data not in self.layouts or shp is None or not self.same_layout(data, name):
            self.fail(name, [data] if data else [], "layer_norm on an unexpected layout")
            return
        lay, first = self.layouts[data], len(shp) - len(nshape)
        if lay.axis < first:  # channels are not normalized together: each channel alone
            self.fail(name, [data], "layer_norm not over the channel axis")
            return
        slots = self.slots(data)
        for s in slots:
            self.normalized.add(s)
            self.uf.union(slots[0], s)
        w, b = tensor_arg(arg(args, 2)), tensor_arg(arg(args, 3))
        wkey, bkey = self.param_key(w), self.param_key(b)
        if wkey is None or (b is not None and bkey is None):
            self.mark_unscalable(name, "layer_norm without affine weight")
        else:
            self.produce(name, wkey, bkey, lay.axis - first)

    def visit_group_norm(self, name: str, d: dict) -> None:
        args = d["args"]
        data, groups = tensor_arg(arg(args, 0)), arg(args, 1)
        eps = arg(args, 4)
        if isinstance(eps, (int, float)):
            self.norm_eps.append(float(eps))
        if data not in self.layouts or self.layouts[data].axis != 1 or not self.same_layout(data, name):
            self.fail(name, [data] if data else [], "group_norm on an unexpected layout")
            return
        size = self.layouts[data].size
        per = size // int(groups)
        for c in range(size):
            self.normalized.add((data, c))
            self.uf.union((data, (c // per) * per), (data, c))
        self.produce_affine(name, tensor_arg(arg(args, 2)), tensor_arg(arg(args, 3)), "group_norm without affine weight")

    def visit_sum(self, name: str, args: tuple, ins: list[str]) -> None:
        a, b = tensor_arg(arg(args, 0)), tensor_arg(arg(args, 1))
        if a is None or b is None or self.shape(a) != self.shape(b) or self.shape(a) != self.shape(name):
            self.fail(name, ins, "sum with a constant or a broadcast operand is not homogeneous")
            return
        if a not in self.layouts or b not in self.layouts or self.layouts[a].axis != self.layouts[b].axis:
            self.fail(name, ins, "sum of tensors with different channel layouts")
            return
        self.same_layout(a, name)
        n = self.layouts[a].size
        self.join(a, name, ((c, c) for c in range(n)))
        self.join(b, name, ((c, c) for c in range(n)))

    def visit_mul(self, name: str, args: tuple, ins: list[str]) -> None:
        data, other = tensor_arg(arg(args, 0)), arg(args, 1)
        if data in self.layouts and isinstance(other, (int, float)) and other != 0 and self.same_layout(data, name):
            self.join(data, name, ((c, c) for c in range(self.layouts[data].size)))
        else:
            self.fail(name, ins, "product of two tensors")

    def visit_cat(self, name: str, args: tuple) -> None:
        parts = [tensor_arg(t) for t in (arg(args, 0) or [])]
        shp = self.shape(name)
        dim = arg(args, 1, 0)
        if shp is None or any(p not in self.layouts for p in parts):
            self.fail(name, [p for p in parts if p], "concatenation of tensors without channel layout")
            return
        axes = {self.layouts[p].axis for p in parts}
        dim = dim % len(shp)
        if len(axes) != 1:
            self.fail(name, parts, "concatenation of tensors with different channel axes")
            return
        axis = axes.pop()
        self.set_layout(name, axis, shp[axis])
        offset = 0
        for p in parts:
            n = self.layouts[p].size
            shift = offset if dim == axis else 0
            self.join(p, name, ((c, c + shift) for c in range(n)))
            offset += n

    def visit_reshape(self, name: str, data: str | None) -> None:
        if data not in self.layouts:
            return
        src, dst, lay = self.shape(data), self.shape(name), self.layouts[data]
        if src is None or dst is None:
            self.fail(name, [data], "reshape with unknown shapes")
        elif src == dst:
            self.same_layout(data, name)
            self.join(data, name, ((c, c) for c in range(lay.size)))
        elif lay.axis == 1 and len(dst) == 2 and dst[0] == src[0] and dst[1] == prod(src[1:]):
            block = prod(src[2:])
            self.set_layout(name, 1, dst[1])
            self.join(data, name, ((c, c * block + k) for c in range(lay.size) for k in range(block)))
        else:
            self.fail(name, [data], "reshape that does not flatten channels into feature blocks")

    def collect(self) -> ScalingResult:
        bad_roots = {self.uf[(node, c)] for node in set(self.blocked) | set(self.unscalable)
                     for c in range(self.layouts[node].size)}
        classes = []
        for group in self.uf.to_sets():
            if self.uf[next(iter(group))] in bad_roots:
                continue
            slots = sorted(group)
            producers = [e for s in slots if s in self.producers for e in self.producers[s]]
            consumers = [e for s in slots if s in self.consumers for e in self.consumers[s]]
            normalized = not self.normalized.isdisjoint(slots)
            if not producers or not (consumers or normalized):
                continue
            classes.append((slots, producers, consumers, normalized))
        reasons: dict[str, int] = {}
        for table in (self.blocked, self.unscalable):
            for node, why in table.items():
                reasons[why] = reasons.get(why, 0) + self.layouts[node].size
        return ScalingResult(classes, self.layouts, sorted(set(self.unknown)), self.norm_eps, reasons)


def scaling_pass(cg: CapturedGraph) -> ScalingResult:
    return _Pass(cg).run()
