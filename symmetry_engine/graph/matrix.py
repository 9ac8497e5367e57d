"""GL(r) symmetries: two Linear layers joined by a path that is linear in the activation.

If z = W2 (P (W1 x + b1)) + b2 and the path P between the layers is the identity on each feature
vector, then (W1, b1, W2) → (M W1, M b1, W2 M⁻¹) leaves z unchanged for every invertible r×r M.
The diagonal passes (scaling.py) see only the positive diagonal of this group; this pass finds the
whole matrix group.  It fails closed: only ops listed here are allowed on the path (value-identity
ops, and reshapes that keep the trailing feature axis intact so every hidden feature vector stays
one vector), every intermediate tensor must have exactly one use (another use would see M h), and
the three parameters must be used nowhere else (tied weights would be transformed twice).
Nonlinearities, dropout (its per-unit mask does not commute with M) and unknown ops block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from .capture import CapturedGraph
from .op_semantics import semantics
from .scaling import arg, tensor_arg

#: Ops that are the identity on values (role "unary" in the semantics table).
IDENTITY_OPS = frozenset({"aten.clone", "aten.contiguous", "aten.alias", "aten.identity", "aten._to_copy"})
#: Reshapes, allowed when the trailing (feature) axis is unchanged.
RESHAPE_OPS = frozenset({"aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view"})


def generic_law_count(r: int, m: int, k: int) -> int:
    """Independent entries of C = W1a W1aᵀ − W2ᵀ W2 (W1a r×m with the bias column, W2 k×r).

    r(r+1)/2 when m + k ≥ r; otherwise C has rank ≤ s = m + k and the rank-s symmetric matrices
    form a manifold of dimension r·s − s(s−1)/2.  The symbolic engine's Jacobian rank
    (``independent_law_count``) confirms this formula in the tests.
    """
    s = m + k
    return r * (r + 1) // 2 if s >= r else r * s - s * (s - 1) // 2


@dataclass(frozen=True)
class MatrixSymmetry:
    """One GL(r) symmetry between a first Linear (weight, optional bias) and a second Linear."""

    first_weight: str
    first_bias: str | None
    second_weight: str
    hidden: int                   # r: output features of the first layer
    in_features: int              # columns of W1 (without the bias column)
    out_features: int             # rows of W2
    path: tuple[str, ...] = ()    # graph nodes strictly between the two linear ops

    @property
    def kind(self) -> str:
        return "gl"

    @property
    def laws(self) -> int:
        """Number of independent conservation laws, r(r+1)/2 in the generic case."""
        m = self.in_features + (1 if self.first_bias is not None else 0)
        return generic_law_count(self.hidden, m, self.out_features)

    def to_json(self) -> dict:
        return {"kind": self.kind, "first_weight": self.first_weight, "first_bias": self.first_bias,
                "second_weight": self.second_weight, "hidden": self.hidden,
                "in_features": self.in_features, "out_features": self.out_features,
                "laws": self.laws, "path": list(self.path)}


def _single_use_param(cg: CapturedGraph, node: str | None) -> str | None:
    if node is None or cg.graph.nodes[node]["kind"] != "param" or cg.graph.out_degree(node) != 1:
        return None
    return cg.graph.nodes[node]["param"]


def _passes(cg: CapturedGraph, node: str) -> bool:
    """Whether an op on the path maps each hidden feature vector to itself."""
    d = cg.graph.nodes[node]
    target = d["target"]
    sem = semantics(target)
    if target in IDENTITY_OPS and sem.role == "unary":
        return True
    if target in RESHAPE_OPS and sem.role == "flatten":
        src = tensor_arg(arg(d["args"], 0))
        before = cg.graph.nodes[src]["shape"] if src is not None else None
        after = d["shape"]
        return bool(before) and bool(after) and before[-1] == after[-1]
    return False


def _first_layer(cg: CapturedGraph, start: str | None) -> tuple[str | None, tuple[str, ...]]:
    """Walk back from the second layer's input through single-use linear ops to an aten.linear."""
    path: list[str] = []
    node = start
    while node is not None:
        d = cg.graph.nodes[node]
        if d["kind"] != "op" or cg.graph.out_degree(node) != 1:
            return None, ()
        if d["target"] == "aten.linear":
            return node, tuple(reversed(path))
        if not _passes(cg, node):
            return None, ()
        path.append(node)
        node = tensor_arg(arg(d["args"], 0))
    return None, ()


def matrix_pass(cg: CapturedGraph) -> list[MatrixSymmetry]:
    """All GL(r) symmetries of ``cg``, ordered by the first layer's weight key."""
    found: list[MatrixSymmetry] = []
    for name, d in cg.graph.nodes(data=True):
        if d["kind"] != "op" or d["target"] != "aten.linear":
            continue
        w2 = _single_use_param(cg, tensor_arg(arg(d["args"], 1)))
        first, path = _first_layer(cg, tensor_arg(arg(d["args"], 0)))
        if w2 is None or first is None:
            continue
        fargs = cg.graph.nodes[first]["args"]
        w1 = _single_use_param(cg, tensor_arg(arg(fargs, 1)))
        bias_node = tensor_arg(arg(fargs, 2))
        b1 = _single_use_param(cg, bias_node)
        bad_bias = (b1 is None) if bias_node is not None else arg(fargs, 2) is not None
        if w1 is None or bad_bias:
            continue  # tied/shared parameters or a non-parameter bias: M cannot be applied
        r, m = cg.param_shapes[w1]
        k, r2 = cg.param_shapes[w2]
        if r != r2:
            continue
        found.append(MatrixSymmetry(w1, b1, w2, r, m, k, path))
    return sorted(found, key=lambda s: s.first_weight)


def apply_matrix_action(params: Mapping[str, torch.Tensor], sym: MatrixSymmetry,
                        M: torch.Tensor) -> dict[str, torch.Tensor]:
    """(W1, b1, W2) → (M W1, M b1, W2 M⁻¹) on a copy of a state dict (for certification)."""
    out = dict(params)
    M = M.to(params[sym.first_weight].dtype)
    out[sym.first_weight] = M @ params[sym.first_weight]
    if sym.first_bias is not None:
        out[sym.first_bias] = M @ params[sym.first_bias]
    # W2 M⁻¹ = (M⁻ᵀ W2ᵀ)ᵀ: a solve, never an explicit inverse.
    out[sym.second_weight] = torch.linalg.solve(M.T, params[sym.second_weight].T).T
    return out
