"""Independent numerical checks used by the property tests (tests/test_props_*.py).

Nothing here calls the analyzer's own certification (``graph/certify.py``): a certifier that accepts
anything must not be able to make these checks pass. Everything runs on a float64 copy whose normalizer ε
is 1e-300 (``random_arch.exact_copy``), where symmetries of the architecture hold to round-off.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from model_zoo.random_arch import RandomArch, exact_copy
from symmetry_engine.matrix_symmetry import GLSymmetry
from symmetry_engine.symmetry import Symmetry, apply_action, canonical_form

LOSS_TOL = 1e-9   # relative loss change under a finite action
GRAD_TOL = 1e-8   # |<g, xi>| / (|g| |xi|)
HESS_TOL = 1e-7   # |H xi + (d xi)^T g| / (|g| + |H xi| + |(d xi)^T g|)


class Problem:
    """One float64 loss L(θ) of an architecture on a fixed batch (train mode, ε → 0)."""

    def __init__(self, arch: RandomArch, batch: int = 8, seed: int = 0, like_certify: bool = False) -> None:
        self.arch, self.model = arch, exact_copy(arch.model)
        if like_certify:  # the batch and targets graph/certify.py draws (seed, batch), rebuilt independently
            self.x = torch.randn((batch, *arch.input_shape), generator=torch.Generator().manual_seed(seed),
                                 dtype=torch.float64)
            gen = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                out = self.model(self.x)
            self.y = (torch.randint(0, out.shape[-1], (out.shape[0],), generator=gen) if arch.loss == "cross_entropy"
                      else torch.randn(out.shape, generator=gen, dtype=out.dtype))
        else:
            self.x = arch.example_inputs(batch, seed, torch.float64)
            self.y = arch.targets(batch, seed, torch.float64)
        self.names = [n for n, _ in self.model.named_parameters()]
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def ill_conditioned(self, rel: float = 1e-13, tol: float = 1e-6, seed: int = 0) -> bool:
        """True when round-off-sized changes of the parameters move the ε → 0 loss by more than ``tol``:
        a normalizer sees a zero-variance set (a GroupNorm over two entries returns ±1, and the next one
        can see equal inputs), where ε → 0 amplifies round-off by up to 1e150 — a finite-action check there
        measures that amplification, not the symmetry. Healthy models move by ~``rel``."""
        gen = torch.Generator().manual_seed(seed)
        moved = {k: (v * (1 + rel * torch.randn(v.shape, generator=gen, dtype=v.dtype)) if k in self.names else v)
                 for k, v in self.state.items()}
        base, other = self.loss(), self.loss(moved)
        self.model.load_state_dict(self.state)
        return not (abs(other - base) <= tol * max(1.0, abs(base)))

    def loss(self, state: Mapping[str, torch.Tensor] | None = None) -> float:
        self.model.load_state_dict(state if state is not None else self.state)
        with torch.no_grad():
            return float(self.arch.loss_fn(self.model(self.x), self.y))

    def functional_loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        buffers = {k: v.clone() for k, v in self.state.items() if k not in params}
        out = torch.func.functional_call(self.model, {**buffers, **params}, (self.x,))
        return self.arch.loss_fn(out, self.y)

    def params(self) -> dict[str, torch.Tensor]:
        return {n: self.state[n].clone() for n in self.names}

    def grad(self, params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        p = {k: v.clone().requires_grad_(True) for k, v in (params or self.params()).items()}
        gs = torch.autograd.grad(self.functional_loss(p), list(p.values()), allow_unused=True)
        return {k: (g if g is not None else torch.zeros_like(v)) for (k, v), g in zip(p.items(), gs)}

    def hvp(self, v: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(g, H v) at the current parameters by double backward."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        p = {k: t.clone().requires_grad_(True) for k, t in self.params().items()}
        with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernels have no double backward
            loss = self.functional_loss(p)
        gs = torch.autograd.grad(loss, list(p.values()), create_graph=True, allow_unused=True)
        dot = sum((g * v[k]).sum() for k, g in zip(p, gs) if g is not None)
        hv = torch.autograd.grad(dot, list(p.values()), allow_unused=True) if torch.is_tensor(dot) and dot.requires_grad else [None] * len(p)
        g = {k: (x.detach() if x is not None else torch.zeros_like(p[k])) for k, x in zip(p, gs)}
        return g, {k: (x if x is not None else torch.zeros_like(p[k])) for k, x in zip(p, hv)}


def direction(sym: Symmetry, params: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ξ(θ) (the generator at α = 1) and the diagonal D with ∂ξ = D (scale/rescale; zero for translations)."""
    xi = {k: torch.zeros_like(v) for k, v in params.items()}
    d = {k: torch.zeros_like(v) for k, v in params.items()}
    for m in sym.members:
        idx = m.index(params[m.param].ndim)
        if sym.kind == "translation":
            xi[m.param][idx] += m.sign
        else:
            xi[m.param][idx] += m.sign * params[m.param][idx]
            d[m.param][idx] += m.sign
    return xi, d


def _dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    return float(sum((a[k] * b[k]).sum() for k in a))


def _norm(a: Mapping[str, torch.Tensor]) -> float:
    return _dot(a, a) ** 0.5


def diag_errors(pb: Problem, sym: Symmetry, rng: random.Random, g: Mapping[str, torch.Tensor] | None = None) -> tuple[float, float]:
    """(relative loss change under a random finite action, |<g, ξ>| / (|g| |ξ|))."""
    base = pb.loss()
    a = rng.uniform(-2.0, 2.0) if sym.kind == "translation" else rng.choice((rng.uniform(0.4, 0.9), rng.uniform(1.2, 2.5)))
    moved = pb.loss(apply_action(pb.state, sym, a))
    g = g if g is not None else pb.grad()
    xi, _ = direction(sym, pb.params())
    den = _norm(g) * _norm(xi)
    return abs(moved - base) / max(abs(base), 1e-3), (abs(_dot(g, xi)) / den if den > 0 else 0.0)


def hessian_error(pb: Problem, sym: Symmetry) -> float:
    """Relative residual of H ξ = −(∂ξ)ᵀ g (differentiating ⟨g(θ), ξ(θ)⟩ = 0)."""
    xi, d = direction(sym, pb.params())
    g, hv = pb.hvp(xi)
    dg = {k: d[k] * g[k] for k in g}
    res = {k: hv[k] + dg[k] for k in g}
    den = _norm(g) + _norm(hv) + _norm(dg)
    return _norm(res) / den if den > 0 else 0.0


# -- matrix symmetries -----------------------------------------------------------------------------------

def as_gl(m: Any) -> GLSymmetry:
    """The analyzer's matrix symmetry in the member form (pair form of nmech-analysis/1 converted)."""
    return m if isinstance(m, GLSymmetry) else GLSymmetry.from_json(m.to_json())


def gl_form(g: GLSymmetry) -> tuple:
    basis = None if g.basis is None else tuple(np.round(np.asarray(g.basis), 12).ravel().tolist())
    return (g.r, tuple(sorted((m.param, m.axis, m.indices, m.act) for m in g.members)), basis)


def _view(t: torch.Tensor, axis: int, idx: Sequence[int]) -> torch.Tensor:
    return torch.movedim(t.index_select(axis, torch.tensor(idx)), axis, 0).reshape(len(idx), -1)


def _put(t: torch.Tensor, axis: int, idx: Sequence[int], value: torch.Tensor) -> torch.Tensor:
    moved = torch.movedim(t, axis, 0).clone()
    moved[list(idx)] = value.reshape(len(idx), *moved.shape[1:])
    return torch.movedim(moved, 0, axis)


def apply_gl(state: Mapping[str, torch.Tensor], g: GLSymmetry, M: torch.Tensor) -> dict[str, torch.Tensor]:
    """Left-multiply each member's [r, rest] view by M or M⁻ᵀ (design.md, matrix symmetries)."""
    out = dict(state)
    Mt = torch.linalg.inv(M).T
    for m in g.members:
        t = out[m.param]
        out[m.param] = _put(t, m.axis, m.indices, (M if m.act == "M" else Mt) @ _view(t, m.axis, m.indices))
    return out


def random_group_element(g: GLSymmetry, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, A): a finite element M = exp(A) with A a random Lie-algebra element (basis when given)."""
    basis = torch.as_tensor(g.basis_array())
    A = torch.einsum("k,kij->ij", 0.4 * torch.randn(basis.shape[0], generator=gen, dtype=torch.float64), basis)
    return torch.linalg.matrix_exp(A), A


def gl_errors(pb: Problem, g: GLSymmetry, seed: int = 0) -> tuple[float, float]:
    """(relative loss change under a random M, |<ĝ, ξ_A>| / (|ĝ| |ξ_A|) for a random algebra element A)."""
    gen = torch.Generator().manual_seed(seed)
    M, A = random_group_element(g, gen)
    base = pb.loss()
    moved = pb.loss(apply_gl(pb.state, g, M))
    grads = pb.grad()
    inner, xsq = 0.0, 0.0
    for m in g.members:
        v = _view(pb.state[m.param], m.axis, m.indices)
        xi = A @ v if m.act == "M" else -A.T @ v
        inner += float((_view(grads[m.param], m.axis, m.indices) * xi).sum())
        xsq += float((xi * xi).sum())
    den = _norm(grads) * xsq ** 0.5
    return abs(moved - base) / max(abs(base), 1e-3), (abs(inner) / den if den > 0 else 0.0)


def forms(syms: Iterable[Symmetry], shapes: Mapping[str, tuple[int, ...]]) -> list[tuple]:
    return [canonical_form(s, shapes) for s in syms]
