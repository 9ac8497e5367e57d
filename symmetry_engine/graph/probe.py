"""Completeness probe: elementary symmetries a model has, found from the model alone, and whether the
analyzer's output implies them (certification only proves *reported* symmetries, and the generator oracle
shares the conventions' blind spots, so neither sees a symmetry that nobody reports).

Candidates: translation of a bias entry, a whole bias, a Linear weight column, or entry c of two equal-size
biases in opposite directions; scale of a producer row (Conv/Linear ``W[c]``, ``b[c]``; norm ``γ[c]``,
``β[c]``); rescale of that row against the columns consuming channel c, found numerically and not from the
analyzer: channel c is multiplied by a distinct s_c while every other Conv/Linear returns its unperturbed
output, and an input feature whose values all changed by exactly s_c consumes c (grouped convolutions are
not consumers). A candidate ξ is a symmetry when |⟨ĝ, ξ⟩| ≤ 1e-8 |ĝ| |ξ| (float64, normalizer ε → 1e-300
as in ``certify``) on every batch at every random parameter draw; it is *implied* when it lies in the span
of the analyzer's generators at the same θ (relative least-squares residual ≤ 1e-8).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import nn

from .certify import CERT_EPS, GRAD_TOL, _loss_fn, _norm_modules, set_norm_eps
from ..symmetry import Member, Symmetry
from .capture import select_output

SPAN_TOL = 1e-8
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class ProbeResult:
    candidates: list[Symmetry]              # every candidate tested
    symmetric: list[Symmetry]               # those that are numerical symmetries
    missed: list[tuple[Symmetry, float]]    # symmetric but not implied by the analyzer: (candidate, residual)


def _channel_axis(mod: nn.Module, ndim: int) -> int:
    return ndim - 1 if isinstance(mod, nn.Linear) else ndim - len(mod.normalized_shape) if isinstance(mod, nn.LayerNorm) else 1


def producers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv/Linear layers and affine normalizers: output channel c has a row ``W[c]`` / ``γ[c]``."""
    norms = set(_norm_modules(model))
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _AFFINE) or (m in norms and m.weight is not None)]


def _forward(model: nn.Module, x: torch.Tensor, seed: int, hooks: list, layers: dict | None = None) -> tuple[dict, dict]:
    """One no-grad pass (dropout masks fixed by ``seed``) with ``(module, is_pre_hook, fn)`` hooks, which go
    first and may change outputs; returns the inputs and outputs of ``layers`` seen in that pass."""
    ins, outs = {}, {}  # type: dict[str, torch.Tensor], dict[str, torch.Tensor]
    hooks = hooks + [(m, True, lambda mod, a, n=n: ins.__setitem__(n, a[0].clone())) for n, m in (layers or {}).items()] \
        + [(m, False, lambda mod, a, o, n=n: outs.__setitem__(n, o.clone())) for n, m in (layers or {}).items()]
    handles = [m.register_forward_pre_hook(f) if pre else m.register_forward_hook(f) for m, pre, f in hooks]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
    return ins, outs


def _consumer_columns(model: nn.Module, x: torch.Tensor, prod: nn.Module, seed: int, layers: dict, base_in: dict,
                      base_out: dict) -> dict[int, dict[str, list[int]]]:
    """channel c of ``prod`` → {consumer weight key: input columns whose values all scale by s_c}."""
    C = prod.weight.shape[0]
    s = 1.0 + (torch.arange(C, dtype=torch.float64) + 1) / (C + 1)

    def perturb(mod, a, o):
        return o * s.to(o.dtype).view([-1 if i == _channel_axis(mod, o.ndim) else 1 for i in range(o.ndim)])

    frozen = [(m, False, lambda mod, a, o, n=n: base_out[n]) for n, m in layers.items() if m is not prod]
    ins, _ = _forward(model, x, seed, [(prod, False, perturb)] + frozen, layers)
    cols: dict[int, dict[str, list[int]]] = {}
    for n, m in layers.items():
        if m is prod or n not in base_in:
            continue
        axis = _channel_axis(m, base_in[n].ndim)
        x0, x1 = (t.movedim(axis, 0).reshape(t.shape[axis], -1).numpy() for t in (base_in[n], ins[n]))
        for f in range(x0.shape[0]):
            live = x0[f] != 0
            r = x1[f][live] / x0[f][live]
            c = int(np.argmin(np.abs(s.numpy() - r[0]))) if live.any() and not np.any(x1[f][~live]) else -1
            if c >= 0 and np.all(np.abs(r - float(s[c])) <= 1e-9):
                cols.setdefault(c, {}).setdefault(f"{n}.weight", []).append(f)
    return cols


def candidates(model: nn.Module, x: torch.Tensor, seed: int = 0) -> list[Symmetry]:
    """Every elementary candidate of the module docstring (``model``: the probe's float64 copy)."""
    params = dict(model.named_parameters())
    biases = [f"{n}.bias" for n, _ in producers(model) if f"{n}.bias" in params and params[f"{n}.bias"].ndim == 1]
    out: list[Symmetry] = []
    for b in biases:
        out += [Symmetry("translation", (Member(b, 0, (c,)),), b, c) for c in range(len(params[b]))] + [
            Symmetry("translation", (Member(b),), b)]
    out += [Symmetry("translation", (Member(f"{n}.weight", 1, (j,)),), f"{n}.weight", j)
            for n, m in model.named_modules() if isinstance(m, nn.Linear) for j in range(m.in_features)]
    for i, b1 in enumerate(biases):
        out += [Symmetry("translation", (Member(b1, 0, (c,)), Member(b2, 0, (c,), -1)), f"{b1}-{b2}", c)
                for b2 in biases[i + 1:] if params[b1].shape == params[b2].shape for c in range(len(params[b1]))]
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _AFFINE) and getattr(m, "groups", 1) == 1}
    base = _forward(model, x, seed, [], layers)
    for n, m in producers(model):
        rows = [k for k in (f"{n}.weight", f"{n}.bias") if k in params]
        cols = _consumer_columns(model, x, m, seed, layers, *base)
        for c in range(params[rows[0]].shape[0]):
            prod = tuple(Member(k, 0, (c,)) for k in rows)
            out.append(Symmetry("scale", prod, n, c))
            if c in cols:
                cons = tuple(Member(k, 1, tuple(v), -1) for k, v in sorted(cols[c].items()))
                out.append(Symmetry("rescale", prod + cons, n, c))
    return out


def generator_matrix(symmetries: Sequence[Symmetry], state: dict[str, torch.Tensor], keys: list[str]) -> sp.csc_matrix:
    """Generators ξ (translation: sign·1 on the slices; scale/rescale: sign·θ) as sparse columns."""
    sizes = [state[k].numel() for k in keys]
    offsets = dict(zip(keys, np.cumsum([0] + sizes[:-1]).tolist()))
    flat = {k: torch.arange(state[k].numel()).view(state[k].shape) for k in keys}
    parts = [(np.zeros(0), np.zeros(0, int), np.zeros(0, int))]
    for j, s in enumerate(symmetries):
        for m in s.members:
            idx = flat[m.param][m.index(state[m.param].ndim)].reshape(-1)
            v = torch.ones(idx.numel(), dtype=torch.float64) if s.kind == "translation" else state[m.param].reshape(-1)[idx]
            parts.append((m.sign * v.double().numpy(), (idx + offsets[m.param]).numpy(), np.full(idx.numel(), j)))
    vals, rows, cols = (np.concatenate(t) for t in zip(*parts))  # duplicates add up, as overlapping members do
    return sp.csc_matrix((vals, (rows, cols)), shape=(sum(sizes), len(symmetries)))


def span_residuals(A: sp.csc_matrix, C: sp.csc_matrix, chunk: int = 64) -> np.ndarray:
    """min_x |A x − c| / |c| per column c of C: normal equations with a pseudo-inverse and one refinement
    step, after normalising A's columns (which keeps the Gram matrix well conditioned)."""
    cnorm = spla.norm(C, axis=0) if C.shape[1] else np.zeros(0)
    if A.shape[1] == 0 or C.shape[1] == 0:
        return np.where(cnorm > 0, 1.0, 0.0)
    A = A @ sp.diags(1.0 / np.maximum(spla.norm(A, axis=0), 1e-300))
    w, V = np.linalg.eigh((A.T @ A).toarray())
    keep = w > w.max() * 1e-13
    pinv = (V[:, keep] / w[keep]) @ V[:, keep].T
    out = np.empty(C.shape[1])
    for lo in range(0, C.shape[1], chunk):
        c = C[:, lo:lo + chunk].toarray()
        X = pinv @ (A.T @ c)
        X += pinv @ (A.T @ (c - A @ X))
        out[lo:lo + chunk] = np.linalg.norm(c - A @ X, axis=0) / np.maximum(cnorm[lo:lo + chunk], 1e-300)
    return out


def _draw(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Independent random parameters at each tensor's scale, then every bias re-centred on ``x`` (plus noise)
    layer by layer: a ReLU unit dead on every batch (or never below zero) would give false misses."""
    def center(mod, a, o):
        axis = _channel_axis(mod, o.ndim)
        flat = o.movedim(axis, -1).reshape(-1, o.shape[axis])
        shift = -flat.mean(0) + 0.3 * flat.std(0) * torch.randn(o.shape[axis], generator=gen, dtype=o.dtype)
        mod.bias += shift.view([-1] + [1] * (mod.bias.ndim - 1))
        return o + shift.view([-1 if i == axis else 1 for i in range(o.ndim)])

    with torch.no_grad():
        for p in model.parameters():
            p.copy_((float(p.pow(2).mean().sqrt()) or 0.5) * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    _forward(model, x, 0, [(m, False, center) for _, m in producers(model) if getattr(m, "bias", None) is not None])
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def probe(model: nn.Module, input_shape: Sequence[int], reported: Sequence[Symmetry], loss: str = "cross_entropy",
          draws: int = 3, batches: int = 3, batch_size: int = 8, seed: int = 0,
          input_max: int | None = None) -> ProbeResult:
    """Decide every candidate numerically and check the symmetric ones against ``reported``.

    ``input_max`` makes the inputs integer ids in [0, input_max) (token models)."""
    exact = copy.deepcopy(model).double().train()
    set_norm_eps(exact, CERT_EPS)
    keys, gen = [k for k, _ in exact.named_parameters()], torch.Generator().manual_seed(seed)
    sizes = [batch_size] * batches + [32, 16]
    xs = [torch.randn((n, *input_shape), generator=gen, dtype=torch.float64) if input_max is None
          else torch.randint(0, int(input_max), (n, *input_shape), generator=gen) for n in sizes]
    states = [_draw(exact, xs[-2], gen) for _ in range(draws)]
    cands = candidates(exact, xs[-1], seed)  # consumers found at the last draw
    ok = np.ones(len(cands), dtype=bool)     # ok[k]: candidate k passed every check so far
    for state in states:
        exact.load_state_dict(state, strict=False)
        Xi = generator_matrix(cands, state, keys)
        xnorm = spla.norm(Xi, axis=0)
        for i, x in enumerate(xs[:batches]):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                out = select_output(exact(x))
                target = (torch.randint(0, out.shape[-1], tuple(out.shape[:-1]), generator=gen) if loss == "cross_entropy"
                          else torch.randn(out.shape, generator=gen, dtype=out.dtype))
                g = torch.autograd.grad(_loss_fn(loss, out, target), list(exact.parameters()), materialize_grads=True)
            g = torch.cat([gi.reshape(-1) for gi in g]).numpy()
            ok &= (np.abs(Xi.T @ g) <= GRAD_TOL * np.linalg.norm(g) * xnorm) & (xnorm > 0)
    symmetric = [c for c, good in zip(cands, ok) if good]
    worst = np.max([span_residuals(generator_matrix(reported, st, keys), generator_matrix(symmetric, st, keys))
                    for st in states], axis=0)
    return ProbeResult(cands, symmetric, [(c, float(r)) for c, r in zip(symmetric, worst) if r > SPAN_TOL])
