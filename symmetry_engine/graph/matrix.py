"""Matrix symmetries of a captured graph, as :class:`GLSymmetry` members (format ``nmech-analysis/2``).

The label flow (``matrix_flow.py``) says where every producer feature ends: a consumer's input columns,
or one side of a query/key contraction.  This pass turns those ends into groups:

* **consumer groups** — the features of one producer vector that a consumer sees together (all of them
  for a Linear/Conv pair, one head's d_h after a probabilities × values product): producer rows and bias
  act by M, each copy of the consumer's columns by M⁻ᵀ (a grouped-query value head reaches several
  output-projection blocks: one member each);
* **query/key groups** — a key head and the query heads it is contracted with (one, or several with
  grouped-query attention): query rows and biases act by M, key rows and biases by M⁻ᵀ, aligned position by
  position;
* with rotary embeddings on the path, the group is the commutant of the rotations: a Lie-algebra
  ``basis`` (a·I + b·J on each rotated pair, all of GL on positions left unrotated).

Fail closed: a group is reported only when every one of its labels reaches exactly the ends above, none
is blocked on the way, and every label belongs to exactly one group.  Parameters shared between layers
(tied weights) never produce or consume (``matrix_flow._single_use_param``).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..matrix_symmetry import GLMember, GLSymmetry, gl_law_count
from .capture import CapturedGraph
from .matrix_flow import propagate
from .matrix_labels import FlowResult, Source


def rotation_commutant_basis(r: int, pairs: Iterable[tuple[int, int]]) -> list[list[list[float]]]:
    """Lie-algebra basis of {M : M commutes with every rotation of the given position pairs}:
    I and J = E_wu − E_uw on each pair (u, w); every E_ab on the positions in no pair."""
    pairs = list(pairs)
    paired = {p for pr in pairs for p in pr}
    free = [i for i in range(r) if i not in paired]
    out = []
    for u, w in pairs:
        eye, rot = np.zeros((r, r)), np.zeros((r, r))
        eye[u, u] = eye[w, w] = 1.0
        rot[u, w], rot[w, u] = -1.0, 1.0
        out += [eye.tolist(), rot.tolist()]
    for a in free:
        for b in free:
            e = np.zeros((r, r))
            e[a, b] = 1.0
            out.append(e.tolist())
    return out


def _position_pairs(rope: frozenset, position: dict[int, int]) -> list[tuple[int, int]] | None:
    """Rotated label pairs as position pairs of the group; None when they do not form a matching."""
    pairs, used = set(), set()
    for a, b in rope:
        if a in position and b in position:
            pr = tuple(sorted((position[a], position[b])))
            pairs.add(pr)
        elif a in position or b in position:
            return None
    for pr in pairs:
        if pr[0] in used or pr[1] in used:
            return None
        used.update(pr)
    return sorted(pairs)


def _layer(params: Iterable[str]) -> str:
    """The modules' common prefix (``m.layers.0.self_attn``), or the modules joined by + (``q+k``)."""
    mods = list(dict.fromkeys(p.rsplit(".", 1)[0] if "." in p else p for p in params))
    parts = [m.split(".") for m in mods]
    common = []
    for xs in zip(*parts):
        if len(set(xs)) != 1:
            break
        common.append(xs[0])
    return ".".join(common) if common else "+".join(mods)


class _Build:
    def __init__(self, cg: CapturedGraph, flow: FlowResult):
        self.cg, self.flow = cg, flow
        self.bad: set[int] = set(flow.blocked)
        self.owner: dict[int, tuple] = {}             # label -> the end it belongs to

    def claim(self, labels: Iterable[int], end: tuple) -> None:
        for lbl in labels:
            if self.owner.setdefault(lbl, end) != end:
                self.bad.add(lbl)

    def producer_members(self, labels: tuple[int, ...], act: str) -> tuple[list[GLMember], Source] | None:
        srcs = {self.flow.source_of(lbl) for lbl in labels}
        if len(srcs) != 1:
            return None
        s = srcs.pop()
        idx = tuple(lbl - s.first for lbl in labels)
        out = [GLMember(s.weight, s.weight_axis, idx, act)]
        if s.bias is not None:
            out.append(GLMember(s.bias, 0, tuple(i + s.bias_offset for i in idx), act))
        return out, s

    def run(self) -> list[GLSymmetry]:
        # 1. who owns which label
        cons: dict[tuple[int, ...], list[tuple[Any, tuple[int, ...]]]] = {}
        for use in self.flow.consumers:
            for labels, positions in use.groups:
                self.claim(labels, ("consumer", labels))
                cons.setdefault(labels, []).append((use, positions))
        hubs: dict[tuple[int, ...], dict[tuple[int, ...], dict[int, int]]] = {}
        for use in self.flow.qk:
            for q, k in use.pairs:
                k_sorted = tuple(sorted(k))
                self.claim(q, ("query", tuple(sorted(q))))
                self.claim(k, ("key", k_sorted))
                pairing = dict(zip(k, q))                  # key label -> query label
                prev = hubs.setdefault(k_sorted, {}).setdefault(tuple(sorted(q)), pairing)
                if prev != pairing:
                    self.bad.update(q)
        q_hub: dict[tuple[int, ...], tuple[int, ...]] = {}
        for k, qs in hubs.items():
            for q in qs:
                if q_hub.setdefault(q, k) != k:
                    self.bad.update(q)
        rope = frozenset().union(*(u.rope for u in self.flow.consumers), *(u.rope for u in self.flow.qk))
        found: list[GLSymmetry] = []
        # 2. consumer groups
        for labels, uses in cons.items():
            if self.bad.intersection(labels):
                continue
            prod = self.producer_members(labels, "M")
            if prod is None:
                continue
            members, src = prod
            for use, positions in uses:
                members.append(GLMember(use.weight, use.weight_axis, positions, "M^-T"))
            pv = any(u.pv for u, _ in uses)
            heads = [positions[0] // len(labels) for _, positions in uses]     # the consumer's column blocks
            if not pv:
                note = f"{'Conv' if 'conv' in src.op else 'Linear'} pair (only linear ops between)"
            elif len(heads) == 1:
                note = f"head {heads[0]}: value/output"
            else:
                v = sum(1 for other in cons if other[0] < labels[0] and self.flow.source_of(other[0]) == src)
                note = f"value head {v}: value/output (output heads {', '.join(map(str, heads))})"
            found.append(self.group(labels, members, note, rope))
        # 3. query/key groups (the key head is the hub; grouped-query heads share it)
        for k, qs in hubs.items():
            everything = set(k).union(*qs)
            if self.bad.intersection(everything):
                continue
            members, heads = [], []
            ok = True
            for q, pairing in sorted(qs.items()):
                prod = self.producer_members(tuple(pairing[lbl] for lbl in k), "M")
                if prod is None:
                    ok = False
                    break
                members += prod[0]
                heads.append((min(q) - prod[1].first) // len(q))
            kprod = self.producer_members(k, "M^-T")
            if not ok or kprod is None:
                continue
            members += kprod[0]
            kv = sum(1 for other in hubs if other[0] < k[0] and self.flow.source_of(other[0]) == kprod[1])
            note = f"head {heads[0]}: query/key logits" if len(heads) == 1 else \
                f"key head {kv}: query/key logits (query heads {', '.join(map(str, heads))})"
            label_pos = {lbl: i for i, lbl in enumerate(k)}
            for q, pairing in qs.items():
                label_pos.update({pairing[lbl]: i for i, lbl in enumerate(k)})
            found.append(self.group(k, members, note, rope, label_pos))
        found = [s for s in found if s is not None]
        return sorted(found, key=lambda s: (s.layer, s.members[0].param, s.members[0].indices))

    def group(self, labels: tuple[int, ...], members: list[GLMember], note: str, rope: frozenset,
              label_pos: dict[int, int] | None = None) -> GLSymmetry | None:
        r = len(labels)
        pos = label_pos or {lbl: i for i, lbl in enumerate(labels)}
        pairs = _position_pairs(rope, pos)
        if pairs is None:
            return None
        basis = None
        if pairs:
            basis = tuple(tuple(tuple(row) for row in b) for b in rotation_commutant_basis(r, pairs))
            note += " (rotary: commutant of the rotations)"
        layer = _layer(m.param for m in members)
        shapes = self.cg.param_shapes
        m = sum(mm.rest(shapes[mm.param]) for mm in members if mm.act == "M")
        k = sum(mm.rest(shapes[mm.param]) for mm in members if mm.act == "M^-T")
        extra = {"laws": gl_law_count(r, m, k)} if basis is None else {}
        return GLSymmetry(r, tuple(members), layer, note, basis, extra)


def matrix_pass(cg: CapturedGraph) -> list[GLSymmetry]:
    """Every matrix symmetry of ``cg`` (GL(r) or a rotary subgroup), ordered by layer and first member."""
    return _Build(cg, propagate(cg)).run()


def matrix_pass_with_flow(cg: CapturedGraph) -> tuple[list[GLSymmetry], FlowResult]:
    """The symmetries and the flow they came from (blocked labels and reasons, for reports)."""
    flow = propagate(cg)
    return _Build(cg, flow).run(), flow
