"""Matrix symmetries (GL(r) and its subgroups) in the member form of ``nmech-analysis/2``.

Why a member form: a Linear pair, an attention head's Q/K or V/O block, a 1×1-conv pair are all the
same object — r-row slices of parameters on which an invertible r×r matrix acts from the left (or its
inverse transpose) — so one description serves detection, certification, the laws, the tracker and the
counting.  The JSON form (docs/json_schema.md, shared/design.md) is::

    {"kind": "gl", "r": r, "layer": ..., "note": ...,
     "members": [{"param": key, "axis": a, "indices": [r ints], "act": "M" | "M^-T"}, ...],
     "basis": null | [r×r matrices]}

Applying M: take each member's slice of ``param`` along ``axis`` at ``indices``, move that axis to the
front, view it as [r, rest] and left-multiply by M (act "M") or by M⁻ᵀ (act "M^-T").  ``basis`` lists
a Lie-algebra basis when the group is a proper subgroup (M = expm(Σ c_i B_i)); null means all of GL(r).

This module is pure Python + numpy (no torch, no sympy): the symbolic engine, the CLI and the numeric
back end all read it.  ``from_json`` also accepts the older pair form of ``nmech-analysis/1``
(``first_weight``, ``first_bias``, ``second_weight``, ``hidden``), converted to members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

ACTS = ("M", "M^-T")


@dataclass(frozen=True)
class GLMember:
    """``param`` sliced along ``axis`` at ``indices`` (r of them), acted on by M or M⁻ᵀ from the left."""

    param: str
    axis: int
    indices: tuple[int, ...]
    act: str = "M"

    def __post_init__(self) -> None:
        if self.act not in ACTS:
            raise ValueError(f"member act must be one of {ACTS}, got {self.act!r}")
        if not self.indices:
            raise ValueError(f"member {self.param}: no indices")

    def to_json(self) -> dict[str, Any]:
        return {"param": self.param, "axis": self.axis, "indices": list(self.indices), "act": self.act}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GLMember":
        return cls(str(data["param"]), int(data["axis"]), tuple(int(i) for i in data["indices"]), str(data["act"]))

    def rest(self, shape: Sequence[int]) -> int:
        """Columns of this member's [r, rest] view for a parameter of ``shape``."""
        if not 0 <= self.axis < len(shape):
            raise ValueError(f"member {self.param}: axis {self.axis} out of range for shape {tuple(shape)}")
        return int(np.prod([s for i, s in enumerate(shape) if i != self.axis], dtype=np.int64))

    def flat_index(self, shape: Sequence[int]) -> np.ndarray:
        """[r, rest] array of positions in ``param.reshape(-1)`` forming this member's view."""
        if any(i < 0 or i >= shape[self.axis] for i in self.indices):
            raise ValueError(f"member {self.param}: indices out of range for shape {tuple(shape)}")
        pos = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(tuple(shape))
        return np.moveaxis(np.take(pos, list(self.indices), axis=self.axis), self.axis, 0).reshape(len(self.indices), -1)


@dataclass(frozen=True)
class GLSymmetry:
    """One matrix symmetry: GL(r) (``basis`` None) or the subgroup exp(span basis) on ``members``."""

    r: int
    members: tuple[GLMember, ...]
    layer: str = ""
    note: str = ""
    basis: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.r < 1 or not self.members:
            raise ValueError("a matrix symmetry needs r >= 1 and at least one member")
        for m in self.members:
            if len(m.indices) != self.r:
                raise ValueError(f"member {m.param} has {len(m.indices)} indices, expected r = {self.r}")
        if self.basis is not None:
            b = np.asarray(self.basis, dtype=np.float64)
            if b.ndim != 3 or b.shape[1:] != (self.r, self.r) or b.shape[0] == 0:
                raise ValueError(f"basis must be a non-empty list of {self.r}x{self.r} matrices")

    @property
    def kind(self) -> str:
        return "gl"

    @property
    def acts(self) -> tuple[str, ...]:
        return tuple(m.act for m in self.members)

    @property
    def key(self) -> str:
        first = self.members[0]
        return f"gl:{first.param}[{first.indices[0]}..{first.indices[-1]}]" + ("" if self.basis is None else "/subgroup")

    def basis_array(self) -> np.ndarray:
        """[K, r, r] Lie-algebra basis (all E_ij for GL(r))."""
        if self.basis is None:
            return np.eye(self.r * self.r).reshape(self.r * self.r, self.r, self.r)
        return np.asarray(self.basis, dtype=np.float64)

    def conserved_directions(self) -> np.ndarray:
        """[L, r, r] orthonormal (Frobenius) basis of 𝔤 ∩ Sym(r): the S with ⟨S, C⟩ conserved.

        Derived in ``symbolic/matrix_members.py``: under gradient flow d⟨B, C⟩/dt = −⟨B + Bᵀ, Q⟩ and the
        symmetry gives only Q ⊥ 𝔤, so ⟨B, C⟩ is conserved for every B in 𝔤 whose transpose is in 𝔤,
        and ⟨B, C⟩ = ⟨sym B, C⟩ (C is symmetric).  For GL(r) this is all of Sym(r) (C's upper triangle).
        """
        if self.basis is None:
            return symmetric_basis(self.r)
        return symmetric_part_of_span(self.basis_array())

    def constraint_basis(self) -> np.ndarray | None:
        """[K, r²] orthonormal rows spanning 𝔤 (the constraint is: Q's coordinates on them vanish);
        None for GL(r), where the constraint is Q = 0."""
        if self.basis is None:
            return None
        b = self.basis_array().reshape(len(self.basis), -1)
        _, s, vt = np.linalg.svd(b, full_matrices=False)
        return vt[s > 1e-10 * max(s.max(initial=0.0), 1.0)]

    def rest_sizes(self, shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
        return tuple(m.rest(shapes[m.param]) for m in self.members)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "gl", "r": self.r, "layer": self.layer, "note": self.note,
                               "members": [m.to_json() for m in self.members],
                               "basis": None if self.basis is None else [[list(row) for row in b] for b in self.basis]}
        out.update({k: v for k, v in self.extra.items() if k not in out})   # e.g. "laws" from the analyzer
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GLSymmetry":
        """The member form, or the pair form of ``nmech-analysis/1`` (converted)."""
        if "members" not in data and "first_weight" in data:
            return from_pair(data["first_weight"], data.get("first_bias"), data["second_weight"], int(data["hidden"]),
                             layer=str(data.get("layer", data["first_weight"].rsplit(".", 1)[0])))
        if data.get("kind", "gl") != "gl":
            raise ValueError(f"not a matrix symmetry: kind {data.get('kind')!r}")
        basis = data.get("basis")
        return cls(int(data["r"]), tuple(GLMember.from_json(m) for m in data["members"]),
                   str(data.get("layer", "")), str(data.get("note", "")),
                   None if basis is None else tuple(tuple(tuple(float(v) for v in row) for row in b) for b in basis))


def symmetric_basis(r: int) -> np.ndarray:
    """[r(r+1)/2, r, r] Frobenius-orthonormal basis of Sym(r): E_ii and (E_ij + E_ji)/√2, i < j
    (so ⟨S, C⟩ runs over C's upper triangle, off-diagonal entries scaled by √2)."""
    iu = np.triu_indices(r)
    out = np.zeros((len(iu[0]), r, r))
    for k, (i, j) in enumerate(zip(*iu)):
        v = 1.0 if i == j else 1.0 / np.sqrt(2.0)
        out[k, i, j] = out[k, j, i] = v
    return out


def symmetric_part_of_span(basis: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of {B ∈ span(basis) : B = Bᵀ} as [L, r, r] (float64, via SVD)."""
    b = np.asarray(basis, dtype=np.float64)
    K, r, _ = b.shape
    flat = b.reshape(K, r * r)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    span = vt[s > tol * max(s.max(initial=0.0), 1.0)]               # orthonormal basis of span(basis)
    anti = (span.reshape(-1, r, r) - np.swapaxes(span.reshape(-1, r, r), 1, 2)).reshape(len(span), -1)
    _, s2, vt2 = np.linalg.svd(anti.T, full_matrices=True)         # c with Σ c_k anti_k = 0
    rank = int((s2 > tol).sum())
    null = vt2[rank:]
    sym = null @ span
    if sym.shape[0] == 0:
        return np.zeros((0, r, r))
    q, rr = np.linalg.qr(sym.T)
    keep = np.abs(np.diag(rr)) > tol
    return q.T[keep].reshape(-1, r, r)


def gl_law_count(r: int, m: int, k: int) -> int:
    """Independent entries of C = X Xᵀ − Y Yᵀ with X r×m (act M columns), Y r×k (act M⁻ᵀ columns).

    r(r+1)/2 when m + k ≥ r; otherwise C has rank ≤ s = m + k and the rank-s symmetric matrices form a
    manifold of dimension r·s − s(s−1)/2 (the Jacobian rank, checked in the tests).
    """
    s = m + k
    return r * (r + 1) // 2 if s >= r else r * s - s * (s - 1) // 2


# -- builders (until the analyzer emits the member form; also handy for hand-built lists) -------------

def from_pair(first_weight: str, first_bias: str | None, second_weight: str, r: int, layer: str = "",
              rows: Sequence[int] | None = None) -> GLSymmetry:
    """Linear → Linear: W1 (axis 0) and b1 act by M, W2 (axis 1) by M⁻ᵀ."""
    idx = tuple(rows) if rows is not None else tuple(range(r))
    members = [GLMember(first_weight, 0, idx, "M")]
    if first_bias is not None:
        members.append(GLMember(first_bias, 0, idx, "M"))
    members.append(GLMember(second_weight, 1, idx, "M^-T"))
    return GLSymmetry(len(idx), tuple(members), layer or first_weight.rsplit(".", 1)[0],
                          "Linear pair (only linear ops between)")


def attention_heads(q_weight: tuple[str, int], k_weight: tuple[str, int], v_weight: tuple[str, int],
                    out_weight: str, num_heads: int, head_dim: int, layer: str = "",
                    q_bias: tuple[str, int] | None = None, k_bias: tuple[str, int] | None = None,
                    v_bias: tuple[str, int] | None = None, qk_basis: Any = None) -> list[GLSymmetry]:
    """Per head h: Q/K block (W_Q[R_h], b_Q act M; W_K[R_h], b_K act M⁻ᵀ) and V/O block
    (W_V[R_h], b_V act M; W_O[:, R_h] act M⁻ᵀ).  Each projection is (param, first row); packed
    in-projections (nn.MultiheadAttention's ``in_proj_weight``) give offsets 0, E, 2E of one tensor.
    ``qk_basis`` (e.g. :func:`rope_basis`) restricts the Q/K group to a subgroup."""
    out: list[GLSymmetry] = []
    for h in range(num_heads):
        def rows(off: int) -> tuple[int, ...]:
            return tuple(range(off + h * head_dim, off + (h + 1) * head_dim))

        qk = [GLMember(q_weight[0], 0, rows(q_weight[1]), "M")]
        if q_bias is not None:
            qk.append(GLMember(q_bias[0], 0, rows(q_bias[1]), "M"))
        qk.append(GLMember(k_weight[0], 0, rows(k_weight[1]), "M^-T"))
        if k_bias is not None:
            qk.append(GLMember(k_bias[0], 0, rows(k_bias[1]), "M^-T"))
        vo = [GLMember(v_weight[0], 0, rows(v_weight[1]), "M")]
        if v_bias is not None:
            vo.append(GLMember(v_bias[0], 0, rows(v_bias[1]), "M"))
        vo.append(GLMember(out_weight, 1, rows(0), "M^-T"))
        basis = None if qk_basis is None else tuple(tuple(tuple(float(v) for v in row) for row in b) for b in qk_basis)
        out.append(GLSymmetry(head_dim, tuple(qk), layer, f"head {h}: query/key logits", basis))
        out.append(GLSymmetry(head_dim, tuple(vo), layer, f"head {h}: value/output"))
    return out


def multihead_attention(prefix: str, embed_dim: int, num_heads: int, bias: bool = True,
                        packed: bool = True) -> list[GLSymmetry]:
    """The per-head symmetries of an ``nn.MultiheadAttention`` registered under ``prefix`` (e.g. "attn").

    Packed (``in_proj_weight`` [3E, E], ``in_proj_bias`` [3E]) when kdim = vdim = embed_dim; otherwise
    ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` with biases still in ``in_proj_bias``.
    """
    p = f"{prefix}." if prefix else ""
    E, d = embed_dim, embed_dim // num_heads
    if d * num_heads != E:
        raise ValueError("embed_dim must be divisible by num_heads")
    w = ((f"{p}in_proj_weight", 0), (f"{p}in_proj_weight", E), (f"{p}in_proj_weight", 2 * E)) if packed else \
        ((f"{p}q_proj_weight", 0), (f"{p}k_proj_weight", 0), (f"{p}v_proj_weight", 0))
    b = ((f"{p}in_proj_bias", 0), (f"{p}in_proj_bias", E), (f"{p}in_proj_bias", 2 * E)) if bias else (None, None, None)
    return attention_heads(w[0], w[1], w[2], f"{p}out_proj.weight", num_heads, d, prefix or "attention",
                           q_bias=b[0], k_bias=b[1], v_bias=b[2])


def rope_basis(r: int, pairs: Iterable[tuple[int, int]] | None = None) -> list[list[list[float]]]:
    """Lie-algebra basis of the matrices commuting with every rotary embedding: per frequency pair (i, j)
    the 2×2 blocks I and J = [[0, −1], [1, 0]].  Default pairs (2p, 2p+1) (interleaved); Llama-style
    "rotate half" pairs are (p, p + r/2)."""
    if r % 2:
        raise ValueError("rotary embeddings need an even head dimension")
    pairs = list(pairs) if pairs is not None else [(2 * p, 2 * p + 1) for p in range(r // 2)]
    out = []
    for i, j in pairs:
        eye = np.zeros((r, r))
        eye[i, i] = eye[j, j] = 1.0
        rot = np.zeros((r, r))
        rot[i, j], rot[j, i] = -1.0, 1.0
        out += [eye.tolist(), rot.tolist()]
    return out
