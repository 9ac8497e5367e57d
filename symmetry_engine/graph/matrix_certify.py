"""Proof by numbers for matrix symmetries: random group elements in float64, loss and gradient checks.

Per symmetry, on a float64 copy of the model in train mode (dropout masks fixed by seed):
* finite action: a random element of the group — U diag(s) Vᵀ with s in [0.5, 2] for GL(r), expm(Σ c_k B_k)
  through the Lie-algebra basis for a subgroup (rotary) — applied to the member slices must leave the
  loss unchanged (relative change ≤ LOSS_TOL);
* first order: the gradient constraint.  With X the act-M views, Y the act-M⁻ᵀ views and G their
  gradients, Q = Σ G_X Xᵀ − Σ Y G_Yᵀ must vanish on the group's Lie algebra (all of Q for GL(r), its
  coordinates on the basis for a subgroup); reported as |Q|_𝔤 / (|ĝ| |θ_members|).

Inputs: floating example inputs give a standard-normal batch of ``batch_size``; integer inputs (token
ids) give uniform ids in the example's own range.  Logits with more than two axes ([B, S, V]) are scored
with cross-entropy over the last axis, as language models are trained.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..matrix_symmetry import GLSymmetry
from ..numeric.matrix_views import apply_matrix, member_view, random_group_element
from .capture import select_output
from .certify import GRAD_TOL, LOSS_TOL, Certificate

F64 = torch.float64


def certification_batch(example: torch.Tensor, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """A random batch shaped like one example sample: N(0, 1) floats, or ids within the example's range."""
    shape = (batch_size, *example.shape[1:])
    if example.is_floating_point():
        return torch.randn(shape, generator=gen, dtype=F64)
    lo, hi = int(example.min()), int(example.max())
    return torch.randint(lo, max(hi, lo) + 1, shape, generator=gen, dtype=example.dtype)


def loss_of(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "cross_entropy":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
    return F.mse_loss(out, target)


class _Model:
    def __init__(self, model: nn.Module, x: torch.Tensor, loss: str, seed: int, output: int | str | None = None):
        self.model, self.x, self.loss, self.seed, self.output = model, x, loss, seed, output
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = select_output(model(x), output)
        gen = torch.Generator().manual_seed(seed + 1)
        self.target = (torch.randint(0, out.shape[-1], out.shape[:-1], generator=gen) if loss == "cross_entropy"
                       else torch.randn(out.shape, generator=gen, dtype=out.dtype))
        self.params = {k: v.detach().clone() for k, v in model.named_parameters()}

    def loss_at(self, params: dict[str, torch.Tensor]) -> float:
        from torch.func import functional_call

        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return float(loss_of(self.loss, select_output(functional_call(self.model, params, (self.x,)), self.output),
                                 self.target))

    def grads(self) -> dict[str, torch.Tensor]:
        self.model.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            loss_of(self.loss, select_output(self.model(self.x), self.output), self.target).backward()
        return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in self.model.named_parameters()}


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
    ev = _Model(copy.deepcopy(model).double().train(), certification_batch(x0, batch_size, gen), loss, seed, output)
    base = ev.loss_at(ev.params)
    grads = ev.grads()
    gnorm = float(sum((g.double() * g.double()).sum() for g in grads.values())) ** 0.5
    certs = []
    for sym in symmetries:
        M = random_group_element(sym, gen)
        change = abs(ev.loss_at(apply_matrix(ev.params, sym, M)) - base) / max(abs(base), 1e-300)
        q, size = gradient_residual(sym, ev.params, grads)
        g_rel = q / max(gnorm * size, 1e-300)
        ok = change <= LOSS_TOL and g_rel <= GRAD_TOL
        certs.append(Certificate(sym.key + f":{sym.note}", "gl", ok, g_rel, change, change, g_rel))
    return certs
