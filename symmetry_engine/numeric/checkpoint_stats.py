"""Per-checkpoint statistics for checkpoint-only evaluation: group sums of θ, of sampled ĝ, of the buffers,
and a short replica of training from the checkpoint.

Why: without a tracker nothing between two checkpoints was recorded. What a checkpoint still gives is
exact at its own step: the state quantities (s, A, N, M) and, when the optimizer state was saved, the
momentum buffers. What it does not give — the per-step |ĝ|²_A and D = |Δθ|²_A that drive the scale and
rescale laws — is measured by continuing training for a few steps from the checkpoint on freshly sampled
minibatches (numeric/checkpoint_drive.py says why a measurement and not a formula). Every replica step
also measures the gradient constraint ⟨ĝ, ξ⟩, the symmetry's own test, exact on any batch.

Sums run per group *side*: side 0 the members with sign +1, side 1 those with sign −1 (rescale's
outgoing slices), so the signed group total is side 0 − side 1 and the unsigned one their sum. They are
float64 on the model's device: one reduction per (parameter, axis) and one ``index_add_`` per
reduction, as in the tracker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..symmetry import Symmetry

F64 = torch.float64


class GroupReducer:
    """Sums of elementwise tensors over the member slices of one kind's groups, per side: ``[2, G]``."""

    def __init__(self, symmetries: Sequence[Symmetry], device: torch.device | str = "cpu") -> None:
        self.G = len(symmetries)
        plan: dict[tuple[str, int | None], tuple[list[int], list[int]]] = {}
        for g, s in enumerate(symmetries):
            for m in s.members:
                idx, tgt = plan.setdefault((m.param, m.axis), ([], []))
                side = 0 if m.sign > 0 else 1
                for i in ((0,) if m.axis is None else m.indices):
                    idx.append(int(i))
                    tgt.append(side * self.G + g)
        self.plan = {k: (torch.tensor(i, dtype=torch.long, device=device), torch.tensor(t, dtype=torch.long, device=device))
                     for k, (i, t) in plan.items()}
        self.params = tuple(dict.fromkeys(p for p, _ in plan))
        self.device = device

    def sides(self, values: Callable[[str], torch.Tensor]) -> np.ndarray:
        """``values(name)`` is an elementwise tensor shaped like parameter ``name``; returns ``[2, G]``."""
        out = torch.zeros(2 * self.G, dtype=F64, device=self.device)
        cache: dict[str, torch.Tensor] = {}
        for (name, axis), (idx, tgt) in self.plan.items():
            if name not in cache:
                cache[name] = values(name).to(F64)
            x = cache[name]
            if axis is None:
                per = x.sum().reshape(1)
            else:
                dims = [d for d in range(x.dim()) if d != axis]
                per = x.sum(dim=dims) if dims else x
            out.index_add_(0, tgt, per[idx])
        return out.view(2, self.G).cpu().numpy()

    def signed(self, values: Callable[[str], torch.Tensor]) -> np.ndarray:
        s = self.sides(values)
        return s[0] - s[1]


@dataclass
class KindAtCheckpoint:
    """One kind's statistics at one checkpoint: ``[G]`` signed group totals, ``[L, G]`` per replica step."""

    state: dict[str, np.ndarray]          # s, A (translation) | N, M at the checkpoint's weights
    inner: np.ndarray                     # [L, G] ⟨ĝ_j, ξ⟩ (P_j or Q_j) at each replica step
    xi_norm: np.ndarray                   # [L, G] |ξ| at each replica step (√entries, or √M)
    drive: dict[str, np.ndarray] = field(default_factory=dict)   # quadratic: mean G and D/η² over the replica
    buffer: dict[str, np.ndarray] | None = None                   # m (translation) | W, V: the law's buffer states


@dataclass
class CheckpointStats:
    """Everything checkpoint-only evaluation keeps of one checkpoint (O(groups) numbers per replica step)."""

    path: str
    step: int
    losses: np.ndarray                    # [L] minibatch loss at each replica step
    grad_sq: np.ndarray                   # [L] |ĝ_j|² over every parameter with a gradient
    kinds: dict[str, KindAtCheckpoint]
    buffer_source: str                    # "saved", "fresh" (step 0), "burn-in" (estimated) or "none" (no momentum)

    @property
    def replica_steps(self) -> int:
        return int(self.losses.shape[0])


def loss_function(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training losses the analyzer knows: softmax cross-entropy, or MSE against one-hot labels."""
    if kind == "cross_entropy":
        return F.cross_entropy
    if kind == "mse":
        return lambda out, y: F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype))
    raise ValueError(f"unknown loss {kind!r}; use cross_entropy or mse (or pass loss_fn)")


class BatchSampler:
    """Minibatches of ``batch_size`` distinct samples of a map-style dataset, from a seeded generator."""

    def __init__(self, data, batch_size: int, seed: int, device) -> None:
        self.data, self.n = data, len(data)
        if self.n == 0:
            raise ValueError("the dataset is empty")
        self.bs = min(int(batch_size), self.n)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.device = device
        self.tensors = getattr(data, "tensors", None)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(self.n, generator=self.gen)[:self.bs]
        if self.tensors is not None:
            x, y = self.tensors[0][idx], self.tensors[1][idx]
        else:
            items = [self.data[int(i)] for i in idx]
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            y = torch.as_tensor([int(it[1]) for it in items])
        return x.to(device=self.device, dtype=F64), torch.as_tensor(y).to(self.device)


@dataclass(frozen=True)
class SGDSetting:
    """The ``torch.optim.SGD`` the checkpoints were trained with (``lr`` a function of the step)."""

    lr: Callable[[int], float]
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def optimizer(self, params, step: int) -> torch.optim.SGD:
        return torch.optim.SGD(params, lr=float(self.lr(step)), momentum=self.momentum,
                               dampening=self.dampening, nesterov=self.nesterov, weight_decay=self.weight_decay)


def burn_in_steps(momentum: float) -> int:
    """Steps that bring a zero buffer to its stationary size: β^(2B) ≤ e^-4."""
    return 0 if momentum <= 0 else int(math.ceil(2.0 / (1.0 - momentum)))


def checkpoint_statistics(model: torch.nn.Module, path: str, step: int, reducers: Mapping[str, GroupReducer],
                          sample: BatchSampler, loss_fn, sgd: SGDSetting, steps: int,
                          buffers: Mapping[str, np.ndarray] | None) -> CheckpointStats:
    """Statistics of the weights loaded in ``model`` (float64, train mode), then ``steps`` replica steps.

    The replica continues training from the checkpoint with ``sgd`` on freshly sampled batches: from the
    saved momentum buffers, from a fresh buffer at step 0, or — mid-run without saved buffers — after a
    burn-in that fills a zero buffer to its stationary size, with θ reset to the checkpoint's. At each
    replica step it records ⟨ĝ_j, ξ⟩ (the symmetry's test), |ĝ_j|²_A and D_j/η_j² = |Δ_j|²_A/η_j² per group.
    """
    params = dict(model.named_parameters())
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    dev = next(iter(theta0.values())).device if theta0 else torch.device("cpu")
    opt = sgd.optimizer(list(params.values()), step)
    source = "none" if sgd.momentum <= 0 else "saved" if buffers else "fresh" if step == 0 else "burn-in"
    if source == "saved":
        for n, p in params.items():
            opt.state[p]["momentum_buffer"] = torch.as_tensor(buffers[n], dtype=F64, device=dev).clone()

    def backward() -> torch.Tensor:
        x, y = sample()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.detach()

    if source == "burn-in":
        for j in range(burn_in_steps(sgd.momentum)):
            for grp in opt.param_groups:
                grp["lr"] = float(sgd.lr(step + j))
            backward()
            opt.step()
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(theta0[n])
    buf = None
    if source in ("saved", "burn-in"):
        buf = {n: opt.state[p]["momentum_buffer"].detach().clone() for n, p in params.items()}

    kinds: dict[str, KindAtCheckpoint] = {}
    for kind, r in reducers.items():
        if kind == "translation":
            state = {"s": r.signed(theta0.__getitem__), "A": r.sides(lambda n: theta0[n].abs()).sum(0)}
            b = {"m": r.signed(buf.__getitem__)} if buf else None
        else:
            M = r.sides(lambda n: theta0[n] * theta0[n])
            state = {"N": M[0] - M[1], "M": M.sum(0)}
            b = {"W": r.signed(lambda n: theta0[n] * buf[n]), "V": r.signed(lambda n: buf[n] * buf[n])} if buf else None
        kinds[kind] = KindAtCheckpoint(state, np.zeros((steps, r.G)), np.zeros((steps, r.G)),
                                       {"G": np.zeros(r.G), "D": np.zeros(r.G)}, b)
    entries = {k: np.sqrt(r.sides(lambda n: torch.ones_like(theta0[n])).sum(0)) for k, r in reducers.items()
               if k == "translation"}
    losses, grad_sq = np.zeros(steps), np.zeros(steps)
    moved = 0
    for j in range(steps):
        eta = float(sgd.lr(step + j))
        for grp in opt.param_groups:
            grp["lr"] = eta
        losses[j] = float(backward())
        g = {n: (p.grad.detach() if p.grad is not None else torch.zeros_like(p)) for n, p in params.items()}
        th = {n: p.detach() for n, p in params.items()}
        grad_sq[j] = float(sum((p.grad.double() ** 2).sum() for p in params.values() if p.grad is not None))
        for kind, r in reducers.items():
            k = kinds[kind]
            if kind == "translation":
                k.inner[j] = r.signed(g.__getitem__)
                k.xi_norm[j] = entries[kind]
            else:
                k.inner[j] = r.signed(lambda n: g[n] * th[n])
                k.xi_norm[j] = np.sqrt(r.sides(lambda n: th[n] * th[n]).sum(0))
                k.drive["G"] += r.signed(lambda n: g[n] * g[n]) / steps
        before = {n: t.clone() for n, t in th.items()} if any(k != "translation" for k in reducers) else None
        opt.step()
        if before is not None and eta > 0:
            moved += 1
            for kind, r in reducers.items():
                if kind != "translation":
                    kinds[kind].drive["D"] += r.signed(lambda n: (params[n].detach() - before[n]) ** 2) / eta ** 2
    for k in kinds.values():
        if "D" in k.drive:
            k.drive["D"] = k.drive["D"] / max(moved, 1)
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(theta0[n])
    return CheckpointStats(path, step, losses, grad_sq, kinds, source)
