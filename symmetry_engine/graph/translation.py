"""Translation symmetries: shifts of parameter entries that something downstream absorbs.

A *source* is one parameter with a pattern: entry i of it moves by α_i along one of its axes (a bias's
entries, a weight's rows or columns, the rows or columns of a position embedding or an embedding table).
Each use of the parameter turns that into a shift δ of its output, and δ is followed forward through the
graph (shift.py) as a label grid — which entries move together and how their factors vary — until it is
*absorbed* (a normalizer removes a shift constant over each normalization group: LayerNorm over its
trailing axes, train-mode BatchNorm per channel, GroupNorm per group, softmax along its axis — this is
how softmax over keys absorbs key biases — and cross-entropy along the class axis, of [B, C] or
[B, S, V] logits) or *breaks* (a non-linear op, a second moving operand, MSE). An absorber joins the
entries that share a group (so a bias before GroupNorm moves per group, before LayerNorm as a whole) and
drops entries whose shift is not constant there; a break drops the entries it sees. What is left are the
translation groups of the source. RMSNorm has no translations: its ops are not linear.

A second family pairs biases that meet at a sum: entry c of one moves by +α and the matching entry of
the other by ∓α (nested single-use sums count as one sum), when each reaches the sum through a chain of
single-use ops that carry its shift unmodulated to the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from ..symmetry import Member
from . import axes as ax
from .capture import CapturedGraph
from .op_semantics import semantics
from .scaling import arg, tensor_arg
from .shift import Broken, Shift, Stepper, source_shift


@dataclass(frozen=True)
class TranslationGroup:
    members: tuple[Member, ...]
    producer: str          # the node whose parameter moves
    label: str             # state_dict key the group lives in (with the axis when not 0)
    channel: int | None
    absorber: str


class _Entries:
    """Union-find over the entries of one source, with the ones a break removes."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n + 1))
        self.killed: set[int] = set()
        self.absorbed: set[int] = set()
        self.absorber: str | None = None
        self.n = n

    def find(self, e: int) -> int:
        while self.parent[e] != e:
            self.parent[e] = self.parent[self.parent[e]]
            e = self.parent[e]
        return e

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def kill(self, entries) -> None:
        self.killed.update(int(e) for e in entries if e > 0)

    def kill_all(self) -> None:
        self.killed.update(range(1, self.n + 1))

    @property
    def dead(self) -> bool:
        return len(self.killed) >= self.n


def _run_source(cg: CapturedGraph, order: list[str], param_node: str, axis: int, stepper: Stepper) -> _Entries | None:
    shape = cg.graph.nodes[param_node]["shape"]
    if not shape:
        return None
    n = shape[axis] if shape else 1
    ent = _Entries(n)
    state: dict[str, object] = {}
    uses = set(cg.graph.successors(param_node))
    for name in order:
        if ent.dead:
            break
        d = cg.graph.nodes[name]
        if d["kind"] == "loss":
            src = tensor_arg(d["args"][0])
            sh = state.get(src)
            if isinstance(sh, Shift):
                if d["target"] == "loss.cross_entropy":
                    stepper.absorb(sh, [len(cg.graph.nodes[src]["shape"] or ()) - 1], ent, name)
                else:
                    stepper.fail(sh, ent)
            continue
        if d["kind"] != "op":
            continue
        ins = stepper.inputs(d)
        shifted = {i: state[i] for i in ins if i in state}
        initial = None
        if name in uses:
            try:
                initial = source_shift(cg, name, param_node, axis, n)
            except Broken:
                ent.kill_all()
                break
            if initial == "data":
                shifted[param_node] = Shift.entries(shape, axis)
                initial = None
        if not shifted and initial is None:
            continue
        try:
            out = stepper.step(name, d, shifted, ent) if shifted else None
        except Broken:
            for sh in shifted.values():
                stepper.fail(sh, ent)
            continue
        if initial is not None:
            out = initial if out is None else stepper.add(out, initial)
        if out is not None:
            state[name] = out
    return ent


def _sources(cg: CapturedGraph) -> list[tuple[str, int]]:
    """(param node, axis) patterns worth following: a bias or norm β along its axis, a weight along its
    input axis (a row shift is never absorbed where the columns' sum is not), an embedding table along
    rows and columns, a parameter used as data along each non-trivial axis."""
    out: list[tuple[str, int]] = []
    for name, d in cg.graph.nodes(data=True):
        if d["kind"] != "param" or not d["shape"]:
            continue
        shape = d["shape"]
        axes: set[int] = set()
        for use in cg.graph.successors(name):
            ud = cg.graph.nodes[use]
            if ud["kind"] != "op":
                continue
            role = semantics(ud["target"]).role
            pos = [p[0] for p in cg.graph.edges[name, use]["pos"] if len(p) == 1]
            if role == "affine" and 1 in pos:
                transposed = ud["target"].startswith("aten.conv_transpose") or (
                    ud["target"] == "aten.convolution" and bool(arg(ud["args"], 6, False)))
                axes.add(0 if transposed else 1)
            elif role == "addmm" and 2 in pos:
                axes.add(0)
            elif role == "matmul":
                axes.add(0 if 1 in pos else 1)
            elif role == "embedding":
                axes.update((0, 1))
            elif role in ("affine", "addmm", "layer_norm", "batch_norm", "instance_norm", "group_norm"):
                axes.add(0)
            else:
                axes.update(a for a, s_ in enumerate(shape) if s_ > 1)
        axes = {a for a in axes if a < len(shape)} or {0}
        out += [(name, a) for a in sorted(axes)]
    return out


def translation_pass(cg: CapturedGraph) -> tuple[list[TranslationGroup], list[str]]:
    order = [n for n in nx.topological_sort(cg.graph)]
    stepper = Stepper(cg)
    groups: list[TranslationGroup] = []
    seen: set[tuple] = set()
    sources = _sources(cg)
    patterns: dict[str, int] = {}
    absorbers: dict[tuple[str, int], str] = {}
    for p, _ in sources:
        patterns[p] = patterns.get(p, 0) + 1
    per_param: dict[str, list[tuple[int, int, list[list[int]]]]] = {}
    for param_node, axis in sources:
        ent = _run_source(cg, order, param_node, axis, stepper)
        if ent is None:
            continue
        classes: dict[int, list[int]] = {}
        for e in range(1, ent.n + 1):
            if e in ent.killed or e not in ent.absorbed:
                continue
            classes.setdefault(ent.find(e), []).append(e - 1)
        dead_roots = {ent.find(e) for e in ent.killed}
        kept = [idx for root, idx in sorted(classes.items()) if root not in dead_roots]
        per_param.setdefault(param_node, []).append((axis, ent.n, kept))
        absorbers[(param_node, axis)] = ent.absorber or "loss"
    for param_node, results in per_param.items():
        key = cg.graph.nodes[param_node]["param"]
        # the whole tensor is the sum of the entries of an axis whose every index is a group of its own
        covered = any(len(kept) == n and n > 1 for _, n, kept in results)
        for axis, n, kept in results:
            for idx in kept:
                whole = len(idx) == n     # every index along the axis: every entry of the parameter
                if whole and covered:
                    continue
                member = Member(key, None, (), 1) if whole else Member(key, axis, tuple(idx), 1)
                form = (member.param, member.axis, member.indices)
                if form in seen:
                    continue
                seen.add(form)
                label = key if patterns[param_node] == 1 or whole else f"{key}@{axis}"
                groups.append(TranslationGroup((member,), param_node, label, None if whole else idx[0],
                                               absorbers[(param_node, axis)]))
    groups += _sum_groups(cg, stepper)
    return groups, sorted(set(stepper.unknown))


# -- biases meeting at a sum -----------------------------------------------------------------------
def _plain_sum(cg: CapturedGraph, node: str) -> bool:
    """``a + b`` or ``a - b`` of two different tensors of the output's shape (no ``alpha``)."""
    d = cg.graph.nodes[node]
    if d["kind"] != "op" or semantics(d["target"]).role not in ("add", "sub") or len(d["args"]) != 2:
        return False
    if (d.get("kwargs") or {}).get("alpha", 1) != 1:
        return False
    ops = [tensor_arg(a) for a in d["args"]]
    return all(o is not None and cg.graph.nodes[o]["shape"] == d["shape"] for o in ops) and ops[0] != ops[1]


def _single_use(cg: CapturedGraph, node: str) -> bool:
    g = cg.graph
    if g.out_degree(node) != 1:
        return False
    (user,) = g.successors(node)
    return len(g.edges[node, user]["pos"]) == 1


_BIAS_ARG = {"affine": 2, "addmm": 0, "layer_norm": 3, "batch_norm": 2, "instance_norm": 2, "group_norm": 3}


def _bias_param(cg: CapturedGraph, node: str) -> str | None:
    d = cg.graph.nodes[node]
    role = semantics(d["target"]).role
    if role not in _BIAS_ARG:
        return None
    p = tensor_arg(arg(d["args"], _BIAS_ARG[role]))
    if p is None or cg.graph.nodes[p]["kind"] != "param" or cg.graph.out_degree(p) != 1:
        return None
    if len(cg.graph.nodes[p]["shape"] or ()) != 1:
        return None
    return p


def _chain(cg: CapturedGraph, start: str | None) -> tuple[str, str, list[str]] | None:
    """Back from a sum operand through single-use one-input ops to a layer with a bias:
    (layer node, bias param node, ops after the layer in forward order)."""
    path: list[str] = []
    node = start
    while node is not None:
        d = cg.graph.nodes[node]
        if d["kind"] != "op" or not _single_use(cg, node):
            return None
        bias = _bias_param(cg, node)
        if bias is not None:
            return node, bias, list(reversed(path))
        role = semantics(d["target"]).role
        if role not in ("unary", "movement", "flatten", "pool", "mul", "div", "getitem"):
            return None
        ins = [t for t in (tensor_arg(a) for a in d["args"]) if t is not None]
        if len(ins) != 1:
            return None
        path.append(node)
        node = ins[0]
    return None


def _terms(cg: CapturedGraph, top: str, stepper: Stepper, inner: set[str]) -> list[tuple[str, int, np.ndarray]]:
    """(bias key, sign at the sum, entry grid at the sum) of every bias reaching the (nested) sum."""
    terms: list[tuple[str, int, np.ndarray]] = []
    stack = [(top, 1)]
    while stack:
        node, sign = stack.pop()
        d = cg.graph.nodes[node]
        for i, a in enumerate(d["args"]):
            operand = tensor_arg(a)
            s = -sign if (semantics(d["target"]).role == "sub" and i == 1) else sign
            if operand is not None and _plain_sum(cg, operand) and _single_use(cg, operand):
                inner.add(operand)
                stack.append((operand, s))
                continue
            found = _chain(cg, operand)
            if found is None:
                continue
            layer, bias, path = found
            n = cg.graph.nodes[bias]["shape"][0]
            try:
                sh = source_shift(cg, layer, bias, 0, n)
                if not isinstance(sh, Shift):
                    continue
                ent = _Entries(n)
                for op in path:
                    sh = stepper.step(op, cg.graph.nodes[op], {stepper.inputs(cg.graph.nodes[op])[0]: sh}, ent)
                    if not isinstance(sh, Shift):
                        break
            except Broken:
                continue
            if not isinstance(sh, Shift) or ent.killed or not sh.unmodulated():
                continue
            terms.append((cg.graph.nodes[bias]["param"], s, ax.broadcast(sh.E, len(cg.graph.nodes[top]["shape"]))))
    return terms


def _sum_groups(cg: CapturedGraph, stepper: Stepper) -> list[TranslationGroup]:
    found: dict[str, list] = {}
    inner: set[str] = set()
    for top in (n for n in cg.graph.nodes if _plain_sum(cg, n)):
        found[top] = _terms(cg, top, stepper, inner)
    out: list[TranslationGroup] = []
    for top, terms in found.items():
        if top in inner or len(terms) < 2:
            continue
        k0, s0, g0 = terms[0]
        for k, s, g in terms[1:]:
            fwd: dict[int, set[int]] = {}
            back: dict[int, set[int]] = {}
            for e0, e in ax.pairs(g0, g):
                fwd.setdefault(int(e0), set()).add(int(e))
                back.setdefault(int(e), set()).add(int(e0))
            for e0, partners in sorted(fwd.items()):
                if e0 <= 0 or len(partners) != 1:
                    continue
                (e2,) = partners
                if e2 <= 0 or back.get(e2) != {e0}:
                    continue   # the shifts must cover exactly the same positions to cancel
                out.append(TranslationGroup((Member(k0, 0, (e0 - 1,), 1), Member(k, 0, (e2 - 1,), -s0 * s)),
                                            top, k, e0 - 1, top))
    return out
