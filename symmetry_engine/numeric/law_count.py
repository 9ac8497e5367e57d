"""How many independent conservation laws a model's symmetries give: a Jacobian rank at a random point.

Every symmetry contributes conserved functions of θ (under gradient flow):
translation ⟨1_A, θ⟩ (signed sum of its slices); scale |θ_A|²; rescale |θ_A1|² − |θ_A2|²; a matrix
symmetry ⟨S_l, C⟩ for an orthonormal basis S_l of 𝔤 ∩ Sym(r) (GL(r): C's upper triangle;
C = Σ_M X Xᵀ − Σ_{M⁻ᵀ} Y Yᵀ).  These overlap — the rescale of hidden unit c inside a GL block is C_cc —
so the number of *independent* laws is not the number of functions but the rank of their Jacobian
at a generic point (Marcotte, Gribonval, Peyré 2023 count this way).  The Jacobian is assembled sparse
(each function touches only its slices) at θ ~ N(0, 1) in float64, rows scaled to unit length.

Rank, robustly: rows that share no parameter entry are independent blocks (connected components of the
row-overlap graph), so the rank is a sum over components.  A component's rank is the number of
singular values above ``SVD_TOL``·σ_max (dense SVD of the rows × touched columns, when that has at most
``DENSE_LIMIT`` entries) or, for larger components, the eigenvalues of the Gram matrix J Jᵀ above
``GRAM_TOL``·λ_max (σ above 1e-6·σ_max).  Structural dependencies give singular values at round-off
(~1e-15 relative); generic independent rows give singular values far above the tolerance.  The report
carries the smallest kept and the largest dropped relative singular value, so the gap is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sps
from scipy.sparse.csgraph import connected_components

from ..matrix_symmetry import GLSymmetry
from ..symmetry import Symmetry

SVD_TOL = 1e-9
GRAM_TOL = 1e-12
DENSE_LIMIT = 20_000_000


@dataclass
class LawCount:
    """The count and how it was obtained."""

    count: int
    functions: int
    by_family: dict[str, int] = field(default_factory=dict)        # conserved functions per family
    components: int = 0
    smallest_kept: float = float("nan")                           # relative singular values at the cut
    largest_dropped: float = 0.0
    method: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "functions": self.functions, "by_family": dict(self.by_family),
                "components": self.components, "smallest_kept": self.smallest_kept,
                "largest_dropped": self.largest_dropped, "method": self.method,
                "tolerance": {"svd": SVD_TOL, "gram": GRAM_TOL}}


def _as_symmetry(s: Symmetry | Mapping[str, Any]) -> Symmetry:
    return s if isinstance(s, Symmetry) else Symmetry.from_json(s)


def _as_matrix(s: GLSymmetry | Mapping[str, Any]) -> GLSymmetry:
    return s if isinstance(s, GLSymmetry) else GLSymmetry.from_json(s)


def conserved_jacobian(symmetries: Sequence[Symmetry | Mapping[str, Any]],
                       matrix_symmetries: Sequence[GLSymmetry | Mapping[str, Any]],
                       param_shapes: Mapping[str, Sequence[int]], theta: np.ndarray) -> tuple[sps.csr_matrix, dict[str, int]]:
    """Sparse [functions, parameters] Jacobian of all conserved functions at the flat point ``theta``."""
    shapes = {k: tuple(int(v) for v in s) for k, s in param_shapes.items()}
    offsets, pos = {}, 0
    for k, s in shapes.items():
        offsets[k] = pos
        pos += int(np.prod(s, dtype=np.int64))
    if theta.shape != (pos,):
        raise ValueError(f"theta has shape {theta.shape}, expected ({pos},)")
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    fam: dict[str, int] = {}
    n = 0

    def flat(name: str) -> np.ndarray:
        if name not in shapes:
            raise ValueError(f"a symmetry names {name!r}, which is not among the parameters")
        s = shapes[name]
        return offsets[name] + np.arange(int(np.prod(s, dtype=np.int64))).reshape(s)

    for raw in symmetries:
        s = _as_symmetry(raw)
        c, v = [], []
        for m in s.members:
            idx = flat(m.param)
            p = np.asarray(idx[m.index(idx.ndim)]).reshape(-1)
            c.append(p)
            v.append(np.full(p.shape, float(m.sign)) if s.kind == "translation" else 2.0 * m.sign * theta[p])
        c_all = np.concatenate(c)
        rows.append(np.full(c_all.shape, n))
        cols.append(c_all)
        vals.append(np.concatenate(v))
        fam[s.kind] = fam.get(s.kind, 0) + 1
        n += 1
    for raw in matrix_symmetries:
        s = _as_matrix(raw)
        dirs = s.conserved_directions()
        name = "gl" if s.basis is None else "gl-subgroup"
        for m in s.members:
            if m.param not in shapes:
                raise ValueError(f"matrix symmetry {s.key} names {m.param!r}, which is not among the parameters")
            pos_m = m.flat_index(shapes[m.param]) + offsets[m.param]
            X = theta[pos_m]                                             # [r, rest]
            sign = 2.0 if m.act == "M" else -2.0
            grads = sign * np.einsum("lij,jk->lik", dirs, X)             # ∂⟨S_l, C⟩/∂X = ±2 S_l X
            for l in range(len(dirs)):
                rows.append(np.full(pos_m.size, n + l))
                cols.append(pos_m.reshape(-1))
                vals.append(grads[l].reshape(-1))
        fam[name] = fam.get(name, 0) + len(dirs)
        n += len(dirs)
    if n == 0:
        return sps.csr_matrix((0, pos)), fam
    J = sps.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, pos))
    J.sum_duplicates()
    return J, fam


def _component_singulars(J: sps.csr_matrix) -> tuple[np.ndarray, str]:
    """Relative singular values (σ/σ_max) of one component's rows."""
    used = np.unique(J.indices)
    sub = J[:, used]
    if sub.shape[0] * sub.shape[1] <= DENSE_LIMIT:
        s = np.linalg.svd(sub.toarray(), compute_uv=False)
        return s / s[0], "svd"
    g = (sub @ sub.T).toarray()
    e = np.clip(np.linalg.eigvalsh(g)[::-1], 0.0, None)
    return np.sqrt(e / e[0]), "gram"


def law_count_report(symmetries: Sequence[Symmetry | Mapping[str, Any]],
                     matrix_symmetries: Sequence[GLSymmetry | Mapping[str, Any]],
                     param_shapes: Mapping[str, Sequence[int]], seed: int = 0) -> LawCount:
    """:func:`law_count` with the number of functions, per-family counts and the singular-value gap."""
    total = int(sum(int(np.prod(s, dtype=np.int64)) for s in param_shapes.values()))
    theta = np.random.default_rng(seed).standard_normal(total)
    J, fam = conserved_jacobian(symmetries, matrix_symmetries, param_shapes, theta)
    F = J.shape[0]
    if F == 0:
        return LawCount(0, 0, fam, 0, method="no conserved functions")
    norms = np.sqrt(np.asarray(J.multiply(J).sum(axis=1)).reshape(-1))
    J = sps.diags(np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)) @ J
    J = J.tocsr()
    pattern = J.copy()
    pattern.data[:] = 1.0
    ncomp, label = connected_components(pattern @ pattern.T, directed=False)
    count, kept, dropped, methods = 0, [], [], set()
    for c in range(ncomp):
        rows = np.flatnonzero(label == c)
        if rows.size == 1:                     # one function alone: independent unless identically 0
            nonzero = bool(norms[rows[0]] > 0)
            count += int(nonzero)
            (kept if nonzero else dropped).append(1.0 if nonzero else 0.0)
            continue
        rel, how = _component_singulars(J[rows])
        methods.add(how)
        tol = SVD_TOL if how == "svd" else np.sqrt(GRAM_TOL)
        keep = rel > tol
        count += int(keep.sum())
        kept += rel[keep].tolist()
        dropped += rel[~keep].tolist()
    return LawCount(count, F, fam, ncomp, float(min(kept)) if kept else float("nan"),
                    float(max(dropped)) if dropped else 0.0,
                    "+".join(sorted(methods)) or "independent components")


def law_count(symmetries: Sequence[Symmetry | Mapping[str, Any]],
              matrix_symmetries: Sequence[GLSymmetry | Mapping[str, Any]],
              param_shapes: Mapping[str, Sequence[int]], seed: int = 0) -> int:
    """The number of independent conserved functions: rank of their Jacobian at a random point.

    ``symmetries`` are the diagonal families (Symmetry objects or their JSON), ``matrix_symmetries``
    the GL(r)/subgroup ones (GLSymmetry objects or JSON in member or pair form), ``param_shapes`` maps
    every parameter named by them to its shape.
    """
    return law_count_report(symmetries, matrix_symmetries, param_shapes, seed).count
