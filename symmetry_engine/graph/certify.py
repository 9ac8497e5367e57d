"""Proof by numbers: apply each symmetry to a float64 copy of the model and measure what changes.

Two checks per symmetry, on a random batch in train mode:
* finite action: a random group element (α uniform in [0.5, 2]) must leave the loss unchanged;
* first order: the gradient constraint ⟨ĝ, ξ⟩ = 0, reported as |⟨ĝ, ξ⟩| / (|ĝ| |ξ|) with |ĝ| the norm
  of the whole model's gradient (a slice norm would make a one-entry group's ratio 1 even at ĝ ≈ 1e-18).

Normalizers' ε makes scale symmetries approximate (⟨ĝ, θ_A⟩ = −2ε ∂L/∂ε). To certify the symmetry of
the architecture itself, the float64 copy runs with every normalization module's ε set to 1e-300 (the
ε → 0 limit, still safe for a dead channel), where the only error left is float64 round-off: hence the
tolerances 1e-9 (loss) and 1e-8 (gradient). The breaking at the model's own ε is measured separately
and reported, not hidden.

Finite actions are applied per kind all at once (independent α per group; the actions commute up to a
symmetry of the loss), which costs one forward pass per kind. If a joint check fails, every group of
that kind is checked alone, so a failing group is always named. A random sample of groups is also
checked alone even when the joint check passes.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..symmetry import Symmetry, apply_action
from .capture import select_output

LOSS_TOL = 1e-9
GRAD_TOL = 1e-8
CERT_EPS = 1e-300


@dataclass
class Certificate:
    key: str
    kind: str
    certified: bool
    grad_rel: float                 # |<g, xi>| / (|g| |xi|) in the eps -> 0 copy
    loss_rel_joint: float           # relative loss change of the joint action of this kind
    loss_rel_single: float | None   # relative loss change of this group's own action (when checked)
    eps_grad_rel: float             # the same gradient measure at the model's own eps

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    """Normalization modules with an ε: torch's BatchNorm/InstanceNorm/LayerNorm/GroupNorm/RMSNorm, and
    any other module whose class name ends in "Norm" with a float ``eps`` or ``variance_epsilon``
    (Hugging Face's LlamaRMSNorm, T5LayerNorm, …)."""
    kinds = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    out = []
    for m in model.modules():
        named = type(m).__name__.endswith("Norm")
        if (isinstance(m, kinds) or named) and (isinstance(getattr(m, "eps", None), float)
                                                or isinstance(getattr(m, "variance_epsilon", None), float)):
            out.append(m)
    return out


def set_norm_eps(model: nn.Module, eps: float) -> None:
    """Set every normalization module's ε (see :func:`_norm_modules`)."""
    for m in _norm_modules(model):
        if isinstance(getattr(m, "eps", None), float):
            m.eps = eps
        if isinstance(getattr(m, "variance_epsilon", None), float):
            m.variance_epsilon = eps


def _loss_fn(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last axis (``[B, C]`` or, as Hugging Face computes it for language models,
    ``[B, S, V]`` logits with ``[B, S]`` targets), or MSE."""
    if kind == "cross_entropy":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
    return F.mse_loss(out, target)


def random_batch(x0: torch.Tensor, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """A fresh batch like ``x0``: standard normal in float64, or integer ids in [0, max(x0)] (token ids)."""
    if not torch.is_floating_point(x0):
        return torch.randint(0, int(x0.max()) + 1, (batch_size, *x0.shape[1:]), generator=gen, dtype=x0.dtype)
    return torch.randn((batch_size, *x0.shape[1:]), generator=gen, dtype=torch.float64)


class _Evaluator:
    """Loss and gradient of one float64 model copy on one fixed batch (dropout masks fixed by seed)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, loss: str, seed: int, output: int | str | None = None):
        self.model, self.x, self.loss, self.seed, self.output = model, x, loss, seed, output
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = select_output(model(x), output)
        gen = torch.Generator().manual_seed(seed + 1)
        if loss == "cross_entropy":
            self.target = torch.randint(0, out.shape[-1], tuple(out.shape[:-1]), generator=gen)
        else:
            self.target = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        # parameters by their first name (tied weights once) and buffers: loading a state_dict with two
        # names for one tensor would let the second overwrite the first
        self.tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        self.state = {k: v.detach().clone() for k, v in self.tensors.items()}

    def load(self, state: dict) -> None:
        with torch.no_grad():
            for k, t in self.tensors.items():
                t.copy_(state[k])

    def loss_at(self, state: dict) -> float:
        self.load(state)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return float(_loss_fn(self.loss, select_output(self.model(self.x), self.output), self.target))

    def grads(self) -> dict[str, torch.Tensor]:
        self.load(self.state)
        self.model.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            _loss_fn(self.loss, select_output(self.model(self.x), self.output), self.target).backward()
        return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in self.model.named_parameters()}


def _grad_rel(sym: Symmetry, grads: dict, state: dict, gnorm: float) -> float:
    inner, xsq = 0.0, 0.0
    for m in sym.members:
        g = grads[m.param][m.index(grads[m.param].ndim)]
        if sym.kind == "translation":
            xi = torch.ones_like(g)
        else:
            xi = state[m.param][m.index(state[m.param].ndim)]
        inner += m.sign * float((g * xi).sum())
        xsq += float((xi * xi).sum())
    denom = gnorm * xsq ** 0.5
    return abs(inner) / denom if denom > 0 else 0.0


def certify(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], symmetries: Sequence[Symmetry],
            loss: str = "cross_entropy", batch_size: int = 8, seed: int = 0, samples: int = 16,
            output: int | str | None = None) -> list[Certificate]:
    """Certify every symmetry numerically (see the module docstring for the checks and tolerances)."""
    x0 = example_inputs if isinstance(example_inputs, torch.Tensor) else example_inputs[0]
    gen = torch.Generator().manual_seed(seed)
    x = random_batch(x0, batch_size, gen)
    exact = copy.deepcopy(model).double().train()
    set_norm_eps(exact, CERT_EPS)
    ev = _Evaluator(exact, x, loss, seed, output)
    base = ev.loss_at(ev.state)
    grads = ev.grads()
    own = _Evaluator(copy.deepcopy(model).double().train(), x, loss, seed, output)
    own_grads = own.grads()
    gnorm = float(sum((g * g).sum() for g in grads.values())) ** 0.5
    own_gnorm = float(sum((g * g).sum() for g in own_grads.values())) ** 0.5
    rng = random.Random(seed)

    def rel(value: float) -> float:
        return abs(value - base) / max(abs(base), 1e-300)

    certs: list[Certificate] = []
    for kind in ("translation", "scale", "rescale"):
        group = [s for s in symmetries if s.kind == kind]
        if not group:
            continue
        state = {k: v.clone() for k, v in ev.state.items()}
        for s in group:
            apply_action(state, s, rng.uniform(0.5, 2.0), copy=False)
        joint = rel(ev.loss_at(state))
        single_idx = set(range(len(group))) if joint > LOSS_TOL else set(rng.sample(range(len(group)), min(samples, len(group))))
        for i, s in enumerate(group):
            single = rel(ev.loss_at(apply_action(ev.state, s, rng.uniform(0.5, 2.0)))) if i in single_idx else None
            g_rel = _grad_rel(s, grads, ev.state, gnorm)
            ok = g_rel <= GRAD_TOL and (single <= LOSS_TOL if single is not None else joint <= LOSS_TOL)
            certs.append(Certificate(s.key, kind, ok, g_rel, joint, single, _grad_rel(s, own_grads, own.state, own_gnorm)))
    return certs
