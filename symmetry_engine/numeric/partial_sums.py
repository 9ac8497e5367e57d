"""The tracker's per-step sums: one float64 buffer of per-index partial sums, filled per phase, and the
gather that turns it into a record's slot statistics.

Why a module of its own: the tracker (tracker.py) owns the hooks, the step bookkeeping and the log; this
is its hot path — one fused read per weight tensor (numeric/kernels.py), all 1-D parameters at once, one
sparse product (CPU) or ``index_add_`` (elsewhere) for the whole record — with no Python work per group
or member. Where each parameter's sums go is numeric/tracker_plan.py.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from . import kernels
from .classes import OptimizerClass
from .layout import RecordLayout
from .tracker_plan import NCOL, plan_gather, plan_params
from ..symmetry import Symmetry

F64 = torch.float64


class PartialSums:
    """X ``[rows, 9]`` (kernels.COLS) for the tracked parameters, the kernels' targets, and the record gather."""

    def __init__(self, params: Mapping[str, torch.Tensor], all_params: Sequence[torch.Tensor],
                 symmetries: Sequence[Symmetry], layout: RecordLayout, classes: Sequence[OptimizerClass],
                 device: torch.device, fused: bool) -> None:
        self.device, self.fused = device, fused
        self.plans, rows = plan_params(params, symmetries)
        dev = device
        self.X = torch.zeros(rows, NCOL, dtype=F64, device=dev)
        self.gather = plan_gather(symmetries, layout, classes, self.plans, dev)
        self._csr = None
        if dev.type == "cpu":
            import scipy.sparse

            g = self.gather
            self._csr = scipy.sparse.csr_matrix((g.mult.numpy(), (g.dst.numpy(), g.src.numpy())),
                                                shape=(g.size, rows * NCOL))
        self._rows_idx = torch.as_tensor(np.concatenate(
            [np.arange(p.passes[0].rows.start, p.passes[0].rows.stop) for p in self.plans]).astype(np.int64),
            device=dev)
        tracked = {id(p) for p in params.values()}
        self._untracked = [p for p in all_params if id(p) not in tracked]
        self._targets = []
        for plan in self.plans:
            use = fused and kernels.uses_numba(plan.param)
            targets = [kernels.Target(ps.shape3, self.X[ps.rows], self.X[ps.cols], use) for ps in plan.passes]
            whole = plan.whole_from_rows if plan.whole_from_rows is not None else \
                (plan.passes[0].cols.start if plan.vector and plan.uses_whole else None)
            self._targets.append((plan.name, plan.param, targets, whole, plan.vector))
        self._vec = [(n, p) for n, p, _, _, v in self._targets if v]
        self._vec_rows = sum(p.numel() for _, p in self._vec)
        self._vec_zeros = [torch.zeros(p.numel(), dtype=p.dtype, device=dev) for _, p in self._vec]
        self._vec_lam: tuple[tuple[float, ...], torch.Tensor | None] = ((), None)
        self._vec_fused = bool(self._vec) and all(fused and kernels.uses_numba(p) and p.dtype == self._vec[0][1].dtype
                                                  for _, p in self._vec)
        if self._vec_fused:  # numpy views of the 1-D parameters (storage fixed) and of the buffer's first rows
            self._vec_np = [p.detach().numpy() for _, p in self._vec]
            self._vec_zeros_np = [z.numpy() for z in self._vec_zeros]
            self._X_vec_np = self.X[:self._vec_rows].numpy()
            self._vec_scratch = np.zeros((1, NCOL))
        self.any_fused = any(t.fused for _, _, ts, _, _ in self._targets for t in ts)

    def run(self, phase: str, optimizer: torch.optim.Optimizer, sources: Mapping[str, str] | None = None,
            had_grad: set[str] | frozenset[str] = frozenset(), snapshot: Mapping[str, torch.Tensor] | None = None,
            gscale: float = 1.0, lam: Mapping[str, float] | None = None) -> None:
        """Fill X for one phase: ``pre`` (θ, ĝ), ``post`` (Δ) or ``state`` (θ only, the final record).

        1-D parameters go through ``_vector_phase`` (one pass for all of them) when they can; everything
        else through one fused read per parameter (numeric/kernels.py)."""
        X, lam, sources, snapshot = self.X, lam or {}, sources or {}, snapshot or {}
        vec_done = phase != "state" and self._vector_phase(phase, optimizer, sources, had_grad, gscale, lam)
        for name, p, targets, whole, vector in self._targets:
            if vector and vec_done:
                if whole is not None and phase != "pre":
                    X[whole] = targets[0].rows.sum(0)
                continue
            g = p.grad
            if phase == "pre":
                for t in targets:
                    if g is None:
                        kernels.state_sums(p, t)
                    else:
                        kernels.pre_sums(p, g, gscale, lam.get(name, 0.0), t)
                continue
            if phase == "state":
                for t in targets:
                    kernels.state_sums(p, t)
            else:
                src = sources[name]
                if src == "momentum_buffer":
                    buf = optimizer.state.get(p, {}).get("momentum_buffer") if name in had_grad else None
                    if buf is not None:
                        for t in targets:
                            kernels.sq_sums(buf, t)
                elif src == "snapshot":
                    for t in targets:
                        kernels.delta_sums(snapshot[name], p, t)
                elif src == "not_updated":
                    for t in targets:
                        t.rows[:, 6:] = 0.0
                        t.cols[:, 6:] = 0.0
            if whole is not None:
                X[whole] = targets[0].rows.sum(0)

    def _vector_phase(self, phase: str, optimizer: torch.optim.Optimizer, sources: Mapping[str, str],
                      had_grad: set[str], gscale: float, lam: Mapping[str, float]) -> bool:
        """All 1-D parameters at once (float64 torch ops on the device). False: use the per-parameter path."""
        if not self._vec:
            return False
        X, nv = self.X, self._vec_rows
        if phase == "pre" and self._vec_fused:
            lams = {float(lam.get(n, 0.0)) for n, _ in self._vec}
            if len(lams) == 1:
                grads = [z if p.grad is None else p.grad.numpy() for (_, p), z in zip(self._vec, self._vec_zeros_np)]
                kernels.vector_pre_fused(self._vec_np, grads, gscale, lams.pop(), self._X_vec_np, self._vec_scratch)
                return True
        if phase == "pre":
            th = torch.cat([p.detach().reshape(-1) for _, p in self._vec]).to(F64)
            g = torch.cat([z if p.grad is None else p.grad.detach().reshape(-1)
                           for (_, p), z in zip(self._vec, self._vec_zeros)]).to(F64)
            if gscale != 1.0:
                g = g * gscale
            lams = tuple(float(lam.get(n, 0.0)) for n, _ in self._vec)
            w = g
            if any(lams):
                if self._vec_lam[0] != lams:
                    sizes = torch.as_tensor([p.numel() for _, p in self._vec], device=self.device)
                    self._vec_lam = (lams, torch.repeat_interleave(torch.tensor(lams, dtype=F64).to(self.device), sizes))
                w = g + self._vec_lam[1] * th
            X[:nv, :7] = torch.stack([th * th, g * th, g * g, th, g, th.abs(), w * w], 1)
            return True
        if any(sources[n] not in ("momentum_buffer", "update_rule") for n, _ in self._vec):
            return False  # snapshots, parameters outside the optimizer: per parameter
        moms = [n for n, _ in self._vec if sources[n] == "momentum_buffer"]
        if not moms:
            return True   # update rule: |ĝ + λθ|² was summed before the step
        if len(moms) < len(self._vec) or any(n not in had_grad for n in moms):
            return False
        bufs = [optimizer.state.get(p, {}).get("momentum_buffer") for _, p in self._vec]
        if any(b is None for b in bufs):
            return False
        if self._vec_fused and all(b.dtype == self._vec[0][1].dtype and b.is_contiguous() for b in bufs):
            kernels.vector_sq_fused([b.numpy() for b in bufs], self._X_vec_np, self._vec_scratch)
            return True
        v = torch.cat([b.detach().reshape(-1) for b in bufs]).to(F64)
        X[:nv, 6] = v * v
        return True

    def gathered(self) -> torch.Tensor:
        """The slot statistics of the record (positions ``base:``) from X: one sparse product on CPU (scipy,
        sequential per row: deterministic), a gather and one ``index_add_`` elsewhere."""
        gth = self.gather
        if self._csr is not None:
            return torch.from_numpy(self._csr @ self.X.numpy().reshape(-1))
        vals = self.X.view(-1)[gth.src] * gth.mult
        return torch.zeros(gth.size, dtype=F64, device=self.device).index_add_(0, gth.dst, vals)

    def grad_sq(self, gscale: float) -> torch.Tensor:
        """|ĝ|² over every parameter of the model that has a gradient (float64, on the device)."""
        total = self.X[self._rows_idx, 2].sum()
        grads = [p.grad for p in self._untracked if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)
            total = total + torch.stack([n.to(F64) for n in norms]).square().sum().to(self.device) * gscale ** 2
        return total
