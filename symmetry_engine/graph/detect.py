"""Run the symmetry passes over a captured graph and label the results for people and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from math import prod

import numpy as np

from ..symmetry import Member, Symmetry
from .capture import CapturedGraph
from ..matrix_symmetry import GLSymmetry
from .matrix import matrix_pass
from .scaling import FLAT, scaling_pass
from .translation import translation_pass


@dataclass
class Detection:
    symmetries: list[Symmetry]
    unknown_ops: list[str]
    norm_eps: float
    blocked_reasons: dict[str, int] = field(default_factory=dict)
    matrix_symmetries: list[GLSymmetry] = field(default_factory=list)


@lru_cache(maxsize=None)
def _module(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else key


def merge_members(entries: list[tuple[str, int, int, int]]) -> tuple[Member, ...]:
    """One member per (param, axis, sign), indices sorted: the form people and tools expect."""
    merged: dict[tuple[str, int | None, int], list[int]] = {}
    for param, axis, index, sign in entries:
        merged.setdefault((param, axis, sign), []).append(index)
    out = []
    for (param, axis, sign), idx in merged.items():
        out.append(Member(param, axis, tuple(sorted(set(idx))), sign))
    return tuple(sorted(out, key=lambda m: (-m.sign, m.param, -1 if m.axis is None else m.axis, m.indices)))


def flat_members(param: str, shape: tuple[int, ...], flat: set[int], sign: int) -> list[Member] | None:
    """Elementwise entries of one parameter as one member: the whole tensor, or every entry whose index
    along one axis lies in a set; None when the entries are no such slice."""
    n = prod(shape)
    if len(flat) == n:
        return [Member(param, None, (), sign)]
    coords = np.array(np.unravel_index(np.fromiter(sorted(flat), dtype=np.int64), shape)).T
    for axis in range(len(shape)):
        keep = sorted(set(int(v) for v in coords[:, axis]))
        if len(keep) * (n // shape[axis]) == len(flat):
            return [Member(param, axis, tuple(keep), sign)]
    return None


def class_members(entries: dict[tuple[str, int, int], int], shapes: dict[str, tuple[int, ...]]) -> tuple[Member, ...] | None:
    """Members of one scaling class from net exponents per (param, axis, index); None when a slice cannot
    be written as members (an exponent other than ±1, or elementwise entries that are no slice)."""
    axis_entries: list[tuple[str, int, int, int]] = []
    flat: dict[tuple[str, int], set[int]] = {}
    for (param, axis, index), e in entries.items():
        if e == 0:
            continue
        if e not in (1, -1):
            return None
        if axis == FLAT:
            flat.setdefault((param, e), set()).add(index)
        else:
            axis_entries.append((param, axis, index, e))
    members = list(merge_members(axis_entries))
    for (param, sign), idx in flat.items():
        got = flat_members(param, shapes[param], idx, sign)
        if got is None:
            return None
        members += got
    if members and all(m.sign < 0 for m in members):
        members = [Member(m.param, m.axis, m.indices, 1) for m in members]
    return tuple(sorted(members, key=lambda m: (-m.sign, m.param, -1 if m.axis is None else m.axis, m.indices)))


def detect_symmetries(cg: CapturedGraph) -> Detection:
    scaling = scaling_pass(cg)
    eps_max = max(scaling.norm_eps, default=0.0)
    symmetries: list[Symmetry] = []
    blocked = dict(scaling.blocked_reasons)
    used_keys: set[str] = set()
    for cls in sorted(scaling.classes, key=lambda c: c.first_slot):
        members = class_members(cls.entries, cg.param_shapes)
        if members is None:
            why = "a scaling class that is no set of parameter slices"
            blocked[why] = blocked.get(why, 0) + 1
            continue
        if not members:
            continue
        consumers = any(m.sign < 0 for m in members)
        if not consumers and not cls.normalized:
            continue   # nothing absorbs it: its parameters do not reach the loss
        key, index = scaling.slot_names[cls.first_slot]
        layer = _module(key)
        producers = [m for m in members if m.sign > 0]
        same = {m.indices for m in producers if m.axis is not None}
        channel = index if len(same) == 1 and len(next(iter(same))) == 1 and all(m.axis is not None for m in producers) else None
        kind = "rescale" if consumers else "scale"
        prod_mods = sorted({_module(m.param) for m in members if m.sign > 0})
        cons_mods = sorted({_module(m.param) for m in members if m.sign < 0})
        if f"{kind}:{layer}" + ("" if channel is None else f"[{channel}]") in used_keys:
            channel = index if channel is None else channel
            while f"{kind}:{layer}[{channel}]" in used_keys:
                channel += 1_000_000
        used_keys.add(f"{kind}:{layer}" + ("" if channel is None else f"[{channel}]"))
        if consumers:
            note = f"{', '.join(prod_mods)} → {', '.join(cons_mods)}: positively homogeneous path"
        else:
            note = f"{', '.join(prod_mods)} feeds a normalizer"
        # a normalizer's ε makes scale invariance approximate (the evaluation's verdicts read it);
        # mean subtraction is exact, so translations carry none
        extra = {"normalizer": "normalization", "eps": eps_max} if cls.normalized and eps_max > 0 else {}
        symmetries.append(Symmetry(kind, members, layer, channel, note, extra))
    translations, trans_unknown = translation_pass(cg)
    for t in translations:
        target = cg.graph.nodes[t.absorber]["target"]
        symmetries.append(Symmetry("translation", t.members, t.label, t.channel, f"shift absorbed by {target}"))
    order = {"translation": 0, "scale": 1, "rescale": 2}
    symmetries.sort(key=lambda s: (order[s.kind], s.layer, -1 if s.channel is None else s.channel))
    return Detection(symmetries, sorted(set(scaling.unknown_ops) | set(trans_unknown)), eps_max, blocked, matrix_pass(cg))
