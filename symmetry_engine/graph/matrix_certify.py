"""Proof by numbers for matrix symmetries: random group elements in float64, loss and gradient checks.

Per symmetry, on a float64 copy of the model in train mode (dropout masks fixed by seed):
* finite action: a random element of the group — U diag(s) Vᵀ with s in [0.5, 2] for GL(r), expm(Σ c_k B_k)
  through the Lie-algebra basis for a subgroup (rotary) — applied to the member slices must leave the
  loss unchanged (relative change ≤ LOSS_TOL);
* first order: the gradient constraint.  With X the act-M views, Y the act-M⁻ᵀ views and G their
  gradients, Q = Σ G_X Xᵀ − Σ Y G_Yᵀ must vanish on the group's Lie algebra (all of Q for GL(r), its
  coordinates on the basis for a subgroup); reported as |Q|_𝔤 / (|ĝ| |θ_members|).

Inputs, batch and loss are the diagonal certificates' (certify.py): a standard-normal batch of ``batch_size``
for floating inputs, uniform ids in [0, max] for token ids.  Logits with more than two axes ([B, S, V]) are scored
with cross-entropy over the last axis, as language models are trained.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..matrix_symmetry import GLSymmetry
from ..numeric.matrix_views import apply_matrix, member_view, random_group_element
from .certify import GRAD_TOL, LOSS_TOL, Certificate, _Evaluator, random_batch

F64 = torch.float64


def gradient_residual(sym: GLSymmetry, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(|Q restricted to the Lie algebra|, |θ_members|) for the first-order check."""
    Q = torch.zeros(sym.r, sym.r, dtype=F64)
    size = 0.0
    for m in sym.members:
        v, g = member_view(params[m.param].to(F64), m), member_view(grads[m.param].to(F64), m)
        Q = Q + (g @ v.T if m.act == "M" else -(v @ g.T))
        size += float((v * v).sum())
    if sym.basis is not None:                          # coordinates on an orthonormal basis of 𝔤
        return float(torch.linalg.norm(torch.as_tensor(sym.constraint_basis(), dtype=F64) @ Q.reshape(-1))), size ** 0.5
    return float(torch.linalg.norm(Q)), size ** 0.5


def certify_matrix(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                   symmetries: Sequence[GLSymmetry], loss: str = "cross_entropy", batch_size: int = 8,
                   seed: int = 0, output: int | str | None = None) -> list[Certificate]:
    """One certificate per matrix symmetry (see the module docstring); ``output`` picks the logits of a model
    with several outputs (capture.select_output)."""
    if not symmetries:
        return []
    x0 = example_inputs if isinstance(example_inputs, torch.Tensor) else example_inputs[0]
    gen = torch.Generator().manual_seed(seed)
    # the same float64 copy, batch and loss as the diagonal certificates (certify.py)
    ev = _Evaluator(copy.deepcopy(model).double().train(), random_batch(x0, batch_size, gen), loss, seed, output)
    params = {k: ev.state[k] for k, _ in ev.model.named_parameters()}
    base = ev.loss_at(ev.state)
    grads = ev.grads()
    gnorm = float(sum((g.double() * g.double()).sum() for g in grads.values())) ** 0.5
    certs = []
    for sym in symmetries:
        M = random_group_element(sym, gen)
        change = abs(ev.loss_at({**ev.state, **apply_matrix(params, sym, M)}) - base) / max(abs(base), 1e-300)
        q, size = gradient_residual(sym, params, grads)
        g_rel = q / max(gnorm * size, 1e-300)
        ok = change <= LOSS_TOL and g_rel <= GRAD_TOL
        certs.append(Certificate(sym.key + f":{sym.note}", "gl", ok, g_rel, change, change, g_rel))
    return certs
