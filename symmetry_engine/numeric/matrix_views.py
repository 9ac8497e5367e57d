"""Member views of matrix symmetries on torch tensors: gather (batched over heads), apply, sample M.

Why batched: a transformer layer has one Q/K and one V/O symmetry per head, all on the same parameters
with different rows.  Symmetries whose members name the same (param, axis, act) in the same order are
one *plan*: each member position is one ``index_select`` of all heads' rows at once, reshaped to
[S, r, rest], so the r×r statistics of every head come out of a single ``bmm`` (in float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..matrix_symmetry import GLMember, GLSymmetry

F64 = torch.float64


def member_view(t: torch.Tensor, m: GLMember) -> torch.Tensor:
    """The [r, rest] view of member ``m`` of tensor ``t`` (a copy: index_select)."""
    idx = torch.as_tensor(m.indices, device=t.device)
    return t.index_select(m.axis, idx).movedim(m.axis, 0).reshape(len(m.indices), -1)


def apply_matrix(params: Mapping[str, torch.Tensor], sym: GLSymmetry, M: torch.Tensor) -> dict[str, torch.Tensor]:
    """ψ(M, θ) on a copy of a parameter dict: M X for act "M", M⁻ᵀ X (a solve) for act "M^-T"."""
    out = dict(params)
    for m in sym.members:
        t = out[m.param].clone()
        Mt = M.to(device=t.device, dtype=t.dtype)
        view = member_view(t, m)
        new = Mt @ view if m.act == "M" else torch.linalg.solve(Mt.T, view)
        moved = t.movedim(m.axis, 0)                       # a view of t
        moved[torch.as_tensor(m.indices, device=t.device)] = new.reshape((len(m.indices),) + tuple(moved.shape[1:]))
        out[m.param] = t
    return out


def random_group_element(sym: GLSymmetry, generator: torch.Generator, spread: float = 0.5) -> torch.Tensor:
    """A well-conditioned element of the group (float64): U diag(s) Vᵀ with s in [0.5, 2] for GL(r);
    expm(Σ c_k B_k) with c_k ~ N(0, spread²) for a subgroup."""
    r = sym.r
    if sym.basis is None:
        U, _ = torch.linalg.qr(torch.randn(r, r, generator=generator, dtype=F64))
        V, _ = torch.linalg.qr(torch.randn(r, r, generator=generator, dtype=F64))
        s = 0.5 + 1.5 * torch.rand(r, generator=generator, dtype=F64)
        return U @ torch.diag(s) @ V.T
    B = torch.as_tensor(sym.basis_array(), dtype=F64)
    c = spread * torch.randn(B.shape[0], generator=generator, dtype=F64)
    return torch.linalg.matrix_exp((c[:, None, None] * B).sum(0))


@dataclass
class ViewPlan:
    """Symmetries sharing one member signature, gathered together ([S, r, ·] per member position)."""

    sym_ids: list[int]
    r: int
    params: list[str]
    axes: list[int]
    acts: list[str]
    index: list[torch.Tensor]          # per member position: [S·r] rows, head-major
    basis: tuple | None = None         # the symmetries' Lie-algebra basis (None: GL(r))

    def views(self, tensors: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(X [S, r, m], Y [S, r, k]) in float64: act-M members and act-M⁻ᵀ members, columns concatenated."""
        S = len(self.sym_ids)
        xs, ys = [], []
        for name, axis, act, idx in zip(self.params, self.axes, self.acts, self.index):
            t = tensors[name].detach()
            v = t.index_select(axis, idx).movedim(axis, 0).to(F64).reshape(S, self.r, -1)
            (xs if act == "M" else ys).append(v)
        dev = self.index[0].device
        empty = torch.zeros(S, self.r, 0, dtype=F64, device=dev)
        return (torch.cat(xs, 2) if xs else empty), (torch.cat(ys, 2) if ys else empty)


def build_plans(symmetries: Sequence[GLSymmetry], shapes: Mapping[str, Sequence[int]],
                device: torch.device | str = "cpu") -> list[ViewPlan]:
    """Group symmetries by (r, [(param, axis, act)], basis); precompute the row indices (checked in range)."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(symmetries):
        for m in s.members:
            if m.param not in shapes:
                raise ValueError(f"matrix symmetry {s.key} names {m.param!r}, which is not a parameter of the model")
            shape = shapes[m.param]
            if not 0 <= m.axis < len(shape) or min(m.indices) < 0 or max(m.indices) >= shape[m.axis]:
                raise ValueError(f"matrix symmetry {s.key}: member {m.param} axis {m.axis} indices out of range "
                                 f"for shape {tuple(shape)}")
        sig = (s.r, tuple((m.param, m.axis, m.act) for m in s.members), s.basis)
        groups.setdefault(sig, []).append(i)
    plans = []
    for (r, sig, basis), ids in groups.items():
        index = [torch.as_tensor([j for i in ids for j in symmetries[i].members[p].indices], device=device)
                 for p in range(len(sig))]
        plans.append(ViewPlan(ids, r, [x[0] for x in sig], [x[1] for x in sig], [x[2] for x in sig], index, basis))
    return plans


def pair(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """P(a, b) = X_a X_bᵀ − Y_b Y_aᵀ, batched: [S, r, r] (C = P(θ, θ), Q = P(ĝ, θ), Γ, D)."""
    return a[0] @ b[0].transpose(1, 2) - b[1] @ a[1].transpose(1, 2)
