"""Translation symmetries: adding a constant where a normalizer or softmax subtracts it again.

A shift is *absorbed* by softmax cross-entropy (constant across classes, may vary per sample), by
LayerNorm over the trailing feature axis (the same), and by train-mode BatchNorm / InstanceNorm /
GroupNorm / LayerNorm over (C, H, W) (constant across the normalized set). Shifts come from a producer's
bias (constant everywhere) or, for a Linear whose output features are the absorbed axis, from one weight
column (adds α·h_j to every feature of a sample). Between producer and absorber only shift-equivariant,
single-use ops are allowed (identity, max pooling, average pooling without zero padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..symmetry import Member
from .capture import CapturedGraph
from .op_semantics import semantics
from .scaling import arg, tensor_arg


@dataclass(frozen=True)
class TranslationGroup:
    members: tuple[Member, ...]
    producer: str          # the op node whose parameter moves
    label: str             # state_dict key the group lives in
    channel: int | None
    absorber: str


def _shift_equivariant(cg: CapturedGraph, node: str) -> bool:
    d = cg.graph.nodes[node]
    sem = semantics(d.get("target") or "")
    if not sem.shift_equivariant or sem.role == "cat":
        return False
    if sem.role == "pool" and "avg_pool" in d["target"] and "adaptive" not in d["target"]:
        args = d["args"]
        padding = arg(args, 3, 0)
        pads = padding if isinstance(padding, (list, tuple)) else [padding]
        count_include_pad = arg(args, 5, True)
        if any(p != 0 for p in pads) and count_include_pad:
            return False  # zero padding is averaged in: a shift does not pass unchanged
        if arg(args, 6) is not None:
            return False
    if sem.role == "flatten":
        return cg.graph.nodes[node]["shape"] == cg.graph.nodes[tensor_arg(d["args"][0])]["shape"]
    return True


def _producer_of(cg: CapturedGraph, start: str | None) -> str | None:
    """Walk back from an absorber's input through single-use shift-equivariant ops to an affine op."""
    node = start
    while node is not None:
        d = cg.graph.nodes[node]
        if d["kind"] != "op" or cg.graph.out_degree(node) != 1:
            return None
        if semantics(d["target"]).role == "affine":
            return node
        if not _shift_equivariant(cg, node):
            return None
        node = tensor_arg(d["args"][0])
    return None


def _param(cg: CapturedGraph, node: str | None) -> str | None:
    if node is None or cg.graph.nodes[node]["kind"] != "param" or cg.graph.out_degree(node) != 1:
        return None
    return cg.graph.nodes[node]["param"]


def translation_pass(cg: CapturedGraph) -> list[TranslationGroup]:
    groups: list[TranslationGroup] = []
    for name, d in cg.graph.nodes(data=True):
        target, args = d.get("target"), d.get("args", ())
        role = semantics(target or "").role if d["kind"] == "op" else None
        data = tensor_arg(arg(args, 0)) if args else None
        if d["kind"] == "loss" and target == "loss.cross_entropy":
            shp = cg.graph.nodes[data]["shape"]
            if shp is not None and len(shp) == 2:
                groups += _groups(cg, _producer_of(cg, data), name, columns=True, channel_groups=None)
        elif role in ("batch_norm", "instance_norm") and bool(arg(args, 5, False)):
            groups += _groups(cg, _producer_of(cg, data), name, columns=False, channel_groups="each")
        elif role == "group_norm":
            groups += _groups(cg, _producer_of(cg, data), name, columns=False, channel_groups=int(arg(args, 1)))
        elif role == "layer_norm":
            shp = cg.graph.nodes[data]["shape"] if data else None
            nshape = list(arg(args, 1) or [])
            if shp is None:
                continue
            prod_node = _producer_of(cg, data)
            if prod_node is None:
                continue
            is_linear = cg.graph.nodes[prod_node]["target"] == "aten.linear"
            if is_linear and len(nshape) == 1:
                groups += _groups(cg, prod_node, name, columns=True, channel_groups=None)
            elif not is_linear and len(nshape) == len(shp) - 1:
                groups += _groups(cg, prod_node, name, columns=False, channel_groups=None)
    return groups


def _groups(cg: CapturedGraph, producer: str | None, absorber: str, columns: bool, channel_groups) -> list[TranslationGroup]:
    """Groups of one producer: weight columns (linear only), then the bias (whole or per channel group)."""
    if producer is None:
        return []
    d = cg.graph.nodes[producer]
    args = d["args"]
    wkey, bkey = _param(cg, tensor_arg(arg(args, 1))), _param(cg, tensor_arg(arg(args, 2)))
    out: list[TranslationGroup] = []
    if columns and d["target"] == "aten.linear" and wkey is not None:
        for j in range(cg.param_shapes[wkey][1]):
            out.append(TranslationGroup((Member(wkey, 1, (j,), 1),), producer, wkey, j, absorber))
    if bkey is None:
        return out
    n = cg.param_shapes[bkey][0]
    if channel_groups is None:
        out.append(TranslationGroup((Member(bkey, None, (), 1),), producer, bkey, None, absorber))
    elif channel_groups == "each":
        out += [TranslationGroup((Member(bkey, 0, (c,), 1),), producer, bkey, c, absorber) for c in range(n)]
    else:
        per = n // channel_groups
        for gi in range(channel_groups):
            idx = tuple(range(gi * per, (gi + 1) * per))
            out.append(TranslationGroup((Member(bkey, 0, idx, 1),), producer, bkey, gi, absorber))
    return out
