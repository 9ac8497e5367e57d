"""Rotary embeddings: prove from the graph that cos/sin tables are equal on paired positions.

Why: a rotary embedding x·C + rot(x)·S is a rotation of each position pair (u, w) only when
C[..., u] = C[..., w] and S[..., u] = S[..., w]; then exactly the M commuting with every rotation (a·I + b·J
per pair) survive as a symmetry of the query/key logits.  The tables are computed inside the model from
positions (no values in the graph), so equality is proved structurally: walking back through
elementwise ops and ops that leave the last axis alone to ``cat([f, f], -1)`` (pairs (j, j + n/2), the
"rotate half" layout) or ``repeat_interleave(f, 2, -1)`` (pairs (2p, 2p + 1), the interleaved layout).
Anything else is not proved (fail closed).
"""

from __future__ import annotations

from typing import Any, Sequence

import networkx as nx

from .scaling import arg, tensor_arg

ELEMENTWISE = frozenset("""aten.cos aten.sin aten.neg aten.exp aten.clone aten.contiguous aten.alias aten.detach
aten.lift_fresh_copy aten._to_copy aten.to aten.type_as aten.mul aten.div aten.add aten.sub aten.pow aten.sqrt
aten.rsqrt aten.reciprocal aten.float aten.abs""".split())
KEEP_LAST = frozenset("""aten.unsqueeze aten.squeeze aten.expand aten.slice aten.select aten.narrow aten.view
aten.reshape aten._unsafe_view aten.flatten aten.unflatten aten.transpose aten.permute aten.index_select""".split())
MAX_DEPTH = 64


def _pairing(n: int, layout: str) -> list[int]:
    if layout == "half":
        return [(j + n // 2) % n for j in range(n)]
    return [j + 1 if j % 2 == 0 else j - 1 for j in range(n)]


def pair_symmetric(g: nx.DiGraph, node: str | None, perm: Sequence[int], depth: int = 0) -> bool:
    """Whether ``node``'s value v satisfies v[..., j] = v[..., perm[j]] for every j (proved, not sampled)."""
    if node is None or depth > MAX_DEPTH:
        return False
    d = g.nodes[node]
    shape = d.get("shape")
    if shape is None:
        return False
    if len(shape) == 0 or shape[-1] == 1:
        return True                                    # broadcast along the last axis
    if shape[-1] != len(perm) or d["kind"] != "op":
        return False
    t, args = d["target"], d["args"]
    nd = len(shape)
    if t in ELEMENTWISE:
        tensors = [tensor_arg(a) for a in args if tensor_arg(a) is not None]
        if t == "aten.type_as":
            tensors = tensors[:1]
        return bool(tensors) and all(pair_symmetric(g, x, perm, depth + 1) for x in tensors)
    if t in KEEP_LAST:
        src = tensor_arg(arg(args, 0))
        sshape = g.nodes[src]["shape"] if src is not None else None
        if sshape is None or not sshape or sshape[-1] != shape[-1] or not _keeps_last(t, args, len(sshape), nd):
            return False
        return pair_symmetric(g, src, perm, depth + 1)
    if t in ("aten.cat", "aten.concat", "aten.concatenate"):
        parts = [tensor_arg(a) for a in arg(args, 0, [])]
        dim = arg(args, 1, 0) % nd
        if dim != nd - 1:
            return all(pair_symmetric(g, x, perm, depth + 1) for x in parts)
        return len(parts) == 2 and parts[0] == parts[1] and parts[0] is not None and \
            list(perm) == _pairing(len(perm), "half")
    if t == "aten.repeat_interleave":
        dim = arg(args, 2, d.get("kwargs", {}).get("dim"))
        return arg(args, 1) == 2 and dim is not None and dim % nd == nd - 1 and \
            list(perm) == _pairing(len(perm), "interleaved")
    return False


def _keeps_last(t: str, args: Any, nin: int, nout: int) -> bool:
    """The op leaves the last axis (its size and element order) alone."""
    if t in ("aten.view", "aten.reshape", "aten._unsafe_view", "aten.expand"):
        return True                                    # last size equal (checked) ⇒ same last-axis fibers
    if t == "aten.unsqueeze":
        return arg(args, 1) % nout != nout - 1
    if t == "aten.squeeze":
        dims = arg(args, 1)
        dims = [dims] if isinstance(dims, int) else (dims or [])
        return all(x % nin != nin - 1 for x in dims)
    if t in ("aten.slice", "aten.select", "aten.narrow", "aten.index_select"):
        return arg(args, 1, 0) % nin != nin - 1
    if t == "aten.flatten":
        end = arg(args, 2, -1) % nin
        return end != nin - 1 or arg(args, 1, 0) % nin == nin - 1
    if t == "aten.unflatten":
        return arg(args, 1) % nin != nin - 1
    if t == "aten.transpose":
        return all(x % nin != nin - 1 for x in (arg(args, 1), arg(args, 2)))
    if t == "aten.permute":
        return [x % nin for x in arg(args, 1)][-1] == nin - 1
    return False
