"""Translation symmetries: adding a constant where a normalizer or softmax subtracts it again.

A shift is *absorbed* by softmax cross-entropy (constant across classes, may vary per sample), by
LayerNorm over the trailing feature axis (the same), and by train-mode BatchNorm / InstanceNorm /
GroupNorm / LayerNorm over (C, H, W) (constant across the normalized set). Shifts come from a producer's
bias (constant everywhere) or, for a Linear whose output features are the absorbed axis, from one weight
column (adds α·h_j to every feature of a sample). Between producer and absorber only shift-equivariant,
single-use ops are allowed (identity, max pooling, average pooling without zero padding).

Two further cases, both built from per-channel bias shifts:

* *Further upstream of a per-channel normalizer* (train-mode BatchNorm / InstanceNorm): a shift α·e_j of
  entry j of an earlier bias, passed through a Linear (or a convolution without zero padding, which maps
  a spatially constant input to a spatially constant output), arrives as the per-channel constant
  α·W e_j, which the normalizer removes. So every entry of that earlier bias is a translation group, for
  each layer of such a chain. A zero-padded convolution does not keep the shift constant near the border.
* *Biases meeting at a sum*: when two or more per-channel biases (of Linear/Conv layers or of affine
  normalizers) reach one residual add (or sub) through single-use, shift-equivariant ops that keep the
  channel axis, moving α from one to another leaves the sum unchanged: per channel c, the first bias
  entry with sign +1 against each other one with the sign that cancels it. Other contributors to the sum
  (a ReLU output, the input) do not matter: their values do not move.
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


def _single_use(cg: CapturedGraph, node: str) -> bool:
    """One user, which takes it as one argument (``h + h`` uses ``h`` twice through one edge)."""
    g = cg.graph
    if g.out_degree(node) != 1:
        return False
    (user,) = g.successors(node)
    return len(g.edges[node, user]["pos"]) == 1


_NORM_BIAS_ARG = {"batch_norm": 2, "instance_norm": 2, "group_norm": 3, "layer_norm": 3}


def _bias_source(cg: CapturedGraph, node: str | None) -> tuple[str, int] | None:
    """``(bias key, channel axis)`` when ``node`` adds its own per-channel bias (Linear/Conv bias, or β of
    an affine normalizer whose β is one entry per channel), else None."""
    if node is None or cg.graph.nodes[node]["kind"] != "op":
        return None
    d = cg.graph.nodes[node]
    role, args, shp = semantics(d["target"]).role, d["args"], d["shape"]
    if not shp:
        return None
    if role == "affine":
        bkey, axis = _param(cg, tensor_arg(arg(args, 2))), (len(shp) - 1 if d["target"] == "aten.linear" else 1)
    elif role in _NORM_BIAS_ARG:
        bkey, axis = _param(cg, tensor_arg(arg(args, _NORM_BIAS_ARG[role]))), 1
        if role == "layer_norm":
            if len(arg(args, 1) or []) != 1:
                return None  # β over (C, H, W) is per position, not per channel
            axis = len(shp) - 1
    else:
        return None
    if bkey is None or len(shp) < 2 or cg.param_shapes[bkey] != (shp[axis],):
        return None
    return bkey, axis


def _walk_back(cg: CapturedGraph, start: str | None, channel_axis_one: bool) -> str | None:
    """From a tensor, back through single-use shift-equivariant ops (channel-keeping ones when the channel
    axis may not be 1) to the op that made it; None when a use or an op on the way breaks the shift."""
    node = start
    while node is not None:
        d = cg.graph.nodes[node]
        if d["kind"] != "op" or not _single_use(cg, node):
            return None
        if not (_shift_equivariant(cg, node) and semantics(d["target"]).role != "mean"):
            return node
        if not channel_axis_one and semantics(d["target"]).role == "pool":
            return None
        node = tensor_arg(d["args"][0])
    return None


def _passes_constant(cg: CapturedGraph, node: str) -> bool:
    """A Linear, or a non-transposed convolution without zero padding: maps an input shift that is constant
    along every non-feature axis to an output shift constant along them (α·W e_j per output channel)."""
    d = cg.graph.nodes[node]
    args = d["args"]
    weight = tensor_arg(arg(args, 1))
    if weight is None or cg.graph.nodes[weight]["kind"] != "param":
        return False  # a weight computed from activations could move with the shift
    if d["target"] == "aten.linear":
        return True
    if d["target"] not in ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution"):
        return False
    if d["target"] == "aten.convolution" and arg(args, 6, False):
        return False
    padding = arg(args, 4, 0)
    pads = padding if isinstance(padding, (list, tuple)) else [padding]
    return all(p == 0 or p == "valid" for p in pads)


def _upstream_groups(cg: CapturedGraph, first: str | None, absorber: str) -> list[TranslationGroup]:
    """Per-entry groups of the biases that reach ``first`` (the layer right before a per-channel
    normalizer) through chains of Linear / unpadded convolutions and shift-equivariant single-use ops."""
    out: list[TranslationGroup] = []
    node = first
    while node is not None and _passes_constant(cg, node):
        d = cg.graph.nodes[node]
        data = tensor_arg(arg(d["args"], 0))
        lin = d["target"] == "aten.linear"
        in_shape = cg.graph.nodes[data]["shape"] if data is not None else None
        if not in_shape or len(in_shape) < 2:
            return out
        up = _walk_back(cg, data, channel_axis_one=not lin)
        src = _bias_source(cg, up)
        if src is not None and src[1] == (len(in_shape) - 1 if lin else 1):
            bkey = src[0]
            out += [TranslationGroup((Member(bkey, 0, (j,), 1),), up, bkey, j, absorber)
                    for j in range(cg.param_shapes[bkey][0])]
        node = up if up is not None and semantics(cg.graph.nodes[up]["target"]).role == "affine" else None
    return out


def _plain_sum(cg: CapturedGraph, node: str) -> bool:
    """``a + b`` or ``a - b`` of two tensors of the output's shape (no ``alpha``, no broadcasting)."""
    d = cg.graph.nodes[node]
    if d["kind"] != "op" or semantics(d["target"]).role not in ("add", "sub") or len(d["args"]) != 2:
        return False
    if d.get("kwargs", {}).get("alpha", 1) != 1:
        return False
    ops = [tensor_arg(a) for a in d["args"]]
    return all(o is not None and cg.graph.nodes[o]["shape"] == d["shape"] for o in ops) and ops[0] != ops[1]


def _sum_groups(cg: CapturedGraph) -> list[TranslationGroup]:
    """Pair translations of biases meeting at a sum; nested single-use sums count as one sum."""
    found: dict[str, list[tuple[str, int, int]]] = {}   # sum node → (bias key, ±1 the sum sees, channel axis)
    inner: set[str] = set()
    for top in (n for n in cg.graph.nodes if _plain_sum(cg, n)):
        shape, terms = cg.graph.nodes[top]["shape"], []
        stack = [(top, 1)]
        while stack:
            node, sign = stack.pop()
            d = cg.graph.nodes[node]
            for i, operand in enumerate(tensor_arg(a) for a in d["args"]):
                s = -sign if (semantics(d["target"]).role == "sub" and i == 1) else sign
                up = _walk_back(cg, operand, channel_axis_one=True)
                if up is not None and _plain_sum(cg, up):
                    inner.add(up)
                    stack.append((up, s))
                    continue
                src = _bias_source(cg, up)
                if src is None:
                    continue  # a contributor without a bias of its own: its value does not move
                pooled = any(semantics(cg.graph.nodes[p]["target"]).role == "pool" for p in _path(cg, operand, up))
                if (src[1] != 1 and pooled) or cg.param_shapes[src[0]][0] != shape[src[1]]:
                    continue  # a pool over the trailing axes would mix the channels of a Linear's output
                terms.append((src[0], s, src[1]))
        found[top] = terms
    out: list[TranslationGroup] = []
    for top, terms in found.items():
        if top in inner:
            continue
        for axis in sorted({a for _, _, a in terms}):
            same = [(k, s) for k, s, a in terms if a == axis]
            (k0, s0), rest = same[0], same[1:]
            for k, s in rest:
                out += [TranslationGroup((Member(k0, 0, (c,), 1), Member(k, 0, (c,), -s0 * s)), top, k, c, top)
                        for c in range(cg.param_shapes[k0][0])]
    return out


def _path(cg: CapturedGraph, start: str | None, end: str) -> list[str]:
    """The ops from ``start`` back to (not including) ``end`` along argument 0."""
    out, node = [], start
    while node is not None and node != end:
        out.append(node)
        node = tensor_arg(cg.graph.nodes[node]["args"][0])
    return out


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
            prod = _producer_of(cg, data)
            groups += _groups(cg, prod, name, columns=False, channel_groups="each")
            if prod is not None:
                lin = cg.graph.nodes[prod]["target"] == "aten.linear"
                if (lin and role == "batch_norm" and len(cg.graph.nodes[prod]["shape"] or ()) == 2) or not lin:
                    groups += _upstream_groups(cg, prod, name)
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
    return groups + _sum_groups(cg)


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
