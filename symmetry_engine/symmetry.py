"""Symmetry objects: the contract between the analyzer, the tracker, the laws and outside programs.

A symmetry is a list of *member slices* of named parameters (``state_dict`` keys) with signs. The
diagonal families act on them as follows (α > 0 for scale/rescale, any real α for translation):

* ``scale`` / ``rescale``: every entry of each member slice is multiplied by ``α ** sign``;
* ``translation``: ``α * sign`` is added to every entry of each member slice.

Generators follow (theory.md §1): translation ξ = Σ sign·1_slice; scale/rescale ξ = Σ sign·θ_slice.
The JSON form (``to_json``) is what ``nmech analyze --json`` prints; it is documented in
docs/json_schema.md and must stay stable, because outside programs apply actions from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

KINDS = ("translation", "scale", "rescale")


@dataclass(frozen=True)
class Member:
    """One slice of one parameter: ``param[..., indices along axis, ...]``, or the whole tensor."""

    param: str
    axis: int | None = None
    indices: tuple[int, ...] = ()
    sign: int = 1

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"member sign must be +1 or -1, got {self.sign}")
        if self.axis is None and self.indices:
            raise ValueError("a whole-tensor member (axis=None) takes no indices")
        if self.axis is not None and not self.indices:
            raise ValueError("a member with an axis needs at least one index")

    def to_json(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "axis": self.axis,
            "indices": list(self.indices) if self.axis is not None else None,
            "sign": self.sign,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Member":
        axis = data.get("axis")
        idx = data.get("indices") or ()
        return cls(str(data["param"]), None if axis is None else int(axis), tuple(int(i) for i in idx), int(data.get("sign", 1)))

    def index(self, ndim: int) -> tuple:
        """Index tuple selecting this slice from a tensor with ``ndim`` axes."""
        if self.axis is None:
            return (Ellipsis,)
        sel: list[Any] = [slice(None)] * ndim
        sel[self.axis] = list(self.indices) if len(self.indices) > 1 else self.indices[0]
        return tuple(sel)


@dataclass(frozen=True)
class Symmetry:
    """One one-parameter symmetry group acting on a set of member slices.

    ``layer`` and ``channel`` locate the group for summaries and plots (e.g. the conv layer whose output
    channel it scales); ``note`` says in words why the symmetry holds.
    """

    kind: str
    members: tuple[Member, ...]
    layer: str = ""
    channel: int | None = None
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown symmetry kind {self.kind!r}; expected one of {KINDS}")
        if not self.members:
            raise ValueError("a symmetry needs at least one member")

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.param for m in self.members))

    @property
    def key(self) -> str:
        """Stable identifier: kind, layer and channel (unique within one analysis)."""
        ch = "" if self.channel is None else f"[{self.channel}]"
        return f"{self.kind}:{self.layer}{ch}"

    def to_json(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "layer": self.layer,
            "channel": self.channel,
            "note": self.note,
            "members": [m.to_json() for m in self.members],
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Symmetry":
        return cls(
            kind=str(data["kind"]),
            members=tuple(Member.from_json(m) for m in data["members"]),
            layer=str(data.get("layer", "")),
            channel=data.get("channel"),
            note=str(data.get("note", "")),
            extra=dict(data.get("extra") or {}),
        )


def apply_action(state: Mapping[str, Any], symmetry: Symmetry, alpha: float, copy: bool = True) -> dict[str, Any]:
    """Return a state dict with the group element ``alpha`` applied.

    With ``copy=True`` (default) the input is not modified; ``copy=False`` edits the tensors in place,
    which lets certification compose thousands of actions without copying large weights each time.
    Works for torch tensors and numpy arrays alike.
    """
    out = dict(state)
    copied: set[str] = set() if copy else set(out)
    for m in symmetry.members:
        if m.param not in out:
            raise KeyError(f"symmetry member names unknown parameter {m.param!r}")
        if m.param not in copied:
            t = out[m.param]
            out[m.param] = t.clone() if hasattr(t, "clone") else t.copy()
            copied.add(m.param)
        t = out[m.param]
        idx = m.index(t.ndim)
        if symmetry.kind == "translation":
            t[idx] = t[idx] + alpha * m.sign
        else:
            if alpha <= 0:
                raise ValueError("scale/rescale actions need alpha > 0")
            t[idx] = t[idx] * (alpha ** m.sign)
    return out


def symmetries_to_json(symmetries: Iterable[Symmetry]) -> list[dict[str, Any]]:
    return [s.to_json() for s in symmetries]


def symmetries_from_json(data: Iterable[Mapping[str, Any]]) -> list[Symmetry]:
    return [Symmetry.from_json(d) for d in data]


def count_by_kind(symmetries: Iterable[Symmetry]) -> dict[str, int]:
    counts = {k: 0 for k in KINDS}
    for s in symmetries:
        counts[s.kind] += 1
    return counts


def canonical_form(symmetry: Symmetry, shapes: Mapping[str, tuple[int, ...]]) -> tuple:
    """Hashable form that ignores labels and member ordering/splitting.

    Members on the same (param, axis, sign) are merged; a slice covering a whole 1-D... N-D tensor
    along its axis becomes a whole-tensor member. Two symmetries with equal canonical forms act
    identically, which is what the random-architecture tests compare.
    """
    merged: dict[tuple[str, int | None, int], set[int]] = {}
    for m in symmetry.members:
        merged.setdefault((m.param, m.axis, m.sign), set()).update(m.indices)
    items = []
    for (param, axis, sign), idx in merged.items():
        if axis is not None and len(idx) == shapes[param][axis]:
            axis, idx = None, set()
        items.append((param, axis, tuple(sorted(idx)), sign))
    return (symmetry.kind, tuple(sorted(items, key=lambda t: (t[0], -1 if t[1] is None else t[1], t[2], t[3]))))
