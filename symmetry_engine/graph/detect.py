"""Run the symmetry passes over a captured graph and label the results for people and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from ..symmetry import Member, Symmetry
from .capture import CapturedGraph
from ..matrix_symmetry import GLSymmetry
from .matrix import matrix_pass
from .scaling import scaling_pass
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


def detect_symmetries(cg: CapturedGraph) -> Detection:
    scaling = scaling_pass(cg)
    eps_max = max(scaling.norm_eps, default=0.0)
    symmetries: list[Symmetry] = []
    for slots, producers, consumers, normalized in scaling.classes:
        members = merge_members(producers + consumers)
        layer = _module(producers[0][0])
        channel = producers[0][2] if len({e[2] for e in producers}) == 1 else None
        prod_mods = sorted({_module(e[0]) for e in producers})
        cons_mods = sorted({_module(e[0]) for e in consumers})
        if consumers:
            kind = "rescale"
            note = f"{', '.join(prod_mods)} → {', '.join(cons_mods)}: positively homogeneous path"
        else:
            kind = "scale"
            note = f"{', '.join(prod_mods)} feeds a normalizer"
        # a normalizer's ε makes scale invariance approximate (the evaluation's verdicts read it);
        # mean subtraction is exact, so translations carry none
        extra = {"normalizer": "normalization", "eps": eps_max} if normalized and eps_max > 0 else {}
        symmetries.append(Symmetry(kind, members, layer, channel, note, extra))
    for t in translation_pass(cg):
        target = cg.graph.nodes[t.absorber]["target"]
        symmetries.append(Symmetry("translation", t.members, t.label, t.channel, f"shift absorbed by {target}"))
    order = {"translation": 0, "scale": 1, "rescale": 2}
    symmetries.sort(key=lambda s: (order[s.kind], s.layer, -1 if s.channel is None else s.channel))
    return Detection(symmetries, scaling.unknown_ops, max(scaling.norm_eps, default=0.0), scaling.blocked_reasons,
                     matrix_pass(cg))
