"""Random architectures with their symmetries known by construction (a test oracle for the analyzer).

``random_architecture(seed)`` samples an MLP or CNN from a menu of blocks (dense/conv layers with
homogeneous or non-homogeneous activations, BatchNorm/LayerNorm/GroupNorm/InstanceNorm before or after
the activation, residual blocks with identity or projection skips — including identity skips from the
network input, which kill the symmetry of those channels — channel concatenation, max/avg pooling,
flatten with spatial size above 1 or global average pooling, softmax-CE or MSE heads). The model is built
through :class:`model_zoo.graphnet.Builder`, which derives ``expected`` — every diagonal symmetry the
conventions of docs/architecture.md assign to the model — while the ops are added.

The menu avoids constructs whose symmetries the conventions do not pin down (a norm right after an add,
a concat or a flatten; a Linear before GroupNorm; norms on 1×1 maps), so ``expected`` is exact and the
analyzer can be compared to it with ``canonical_form``. ``verify_expected`` checks each one numerically.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from symmetry_engine.symmetry import Symmetry, apply_action

from .graphnet import HOMOGENEOUS, NON_HOMOGENEOUS, Builder, Tensor

ALL_ACTIVATIONS = tuple(HOMOGENEOUS) + tuple(NON_HOMOGENEOUS)
ALL_NORMS = ("bn", "ln", "gn", "in")


@dataclass
class RandomArch:
    """A generated model, one sample's input shape, the loss kind and the symmetries it has."""

    model: nn.Module
    input_shape: tuple[int, ...]
    loss: str
    num_outputs: int
    expected: list[Symmetry]
    family: str
    blocks: list[str] = field(default_factory=list)
    seed: int | None = None

    def example_inputs(self, batch: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, *self.input_shape, generator=g, dtype=dtype)

    def targets(self, batch: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + 1)
        if self.loss == "cross_entropy":
            return torch.randint(0, self.num_outputs, (batch,), generator=g)
        return torch.randn(batch, self.num_outputs, generator=g, dtype=dtype)

    def loss_fn(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target) if self.loss == "cross_entropy" else F.mse_loss(out, target)


class _Sampler:
    def __init__(self, rng: random.Random, family: str, widths: tuple[int, int], activations: Sequence[str],
                 norms: Sequence[str], residual: bool, concat: bool, pooling: bool, p_norm: float) -> None:
        self.r, self.family, self.wr = rng, family, widths
        self.acts, self.residual, self.concat, self.pooling, self.p_norm = list(activations), residual, concat, pooling, p_norm
        self.norms = list(norms)
        self.blocks: list[str] = []

    def width(self) -> int:
        return self.r.randint(*self.wr)

    def act(self) -> str:
        return self.r.choice(self.acts)

    def layer(self, b: Builder, t: Tensor, out: int, bias_ok: bool = True) -> Tensor:
        bias = bias_ok and self.r.random() < 0.75
        if t.spatial is None:
            return b.linear(t, out, bias=bias)
        return b.conv(t, out, kernel=self.r.choice((1, 3)), bias=bias)

    def norm(self, b: Builder, t: Tensor, affine_ok: bool = False, only_ln: bool = False) -> Tensor:
        """``affine_ok``: a non-affine norm is allowed (only right before a non-identity activation; a
        centred output feeding a Linear directly would add row-translation symmetries)."""
        if t.spatial is None:  # after a Linear only BN/LN: a Linear before GroupNorm has extra symmetries
            # LayerNorm over 2 features outputs ±1 only, which makes later batch statistics degenerate
            kinds = [k for k in self.norms if k == "bn" or (k == "ln" and t.channels > 2)]
        else:  # norms over space need more than one position; LayerNorm(C,H,W) only non-affine before a
            # non-identity activation (its [C,H,W] affine or centred output has per-position symmetries)
            kinds = [k for k in self.norms if k == "bn" or (t.spatial[0] * t.spatial[1] > 1 and (k != "ln" or affine_ok))]
        if only_ln:  # a shift reaching this layer's input would be removed by BN/IN/GN: extra translations
            kinds = [k for k in kinds if k == "ln"]
        if not kinds:
            return t
        kind = self.r.choice(kinds)
        groups = 1
        if kind == "gn":
            divisors = [d for d in range(1, t.channels + 1) if t.channels % d == 0]
            groups = self.r.choice(divisors)
        affine = not affine_ok or self.r.random() < 0.85
        if kind == "ln" and t.spatial is not None:
            affine = False
        return b.norm(t, kind, affine=affine, num_groups=groups)

    def use_norm(self) -> bool:
        return bool(self.norms) and self.r.random() < self.p_norm

    def dense(self, b: Builder, t: Tensor, out: int, final_act: bool = True, pool: bool = True,
              additive_ok: bool = True, shift_out: bool = True) -> Tensor:
        """layer → [pool] → [norm] → act, or layer → act → norm (post-activation norm).

        ``additive_ok=False`` (one side of a residual add) leaves out the layer bias and the norm, so that
        at most one bias reaches each add. ``shift_out=False``: the output carries no parameter shift
        (no identity activation, no post-activation norm)."""
        h = self.layer(b, t, out, bias_ok=additive_ok)
        if pool and self.pooling and h.spatial and h.spatial[0] >= 4 and self.r.random() < 0.3:
            h = b.pool(h, self.r.choice(("max", "avg")))
        a = self.act() if final_act else None
        while a == "identity" and not shift_out and len(set(self.acts)) > 1:
            a = self.act()
        post = shift_out and self.use_norm() and final_act and a != "identity" and self.r.random() < 0.3
        if not post and additive_ok and self.use_norm():
            h = self.norm(b, h, affine_ok=a not in (None, "identity"), only_ln=t.additive)
        if a is not None:
            h = b.act(h, a)
            if post:
                h = self.norm(b, h)
        return h

    def block(self, b: Builder, t: Tensor) -> Tensor:
        kinds = ["dense"] * 3 + (["residual"] * 2 if self.residual else []) + (["concat"] if self.concat else [])
        if self.pooling and t.spatial and t.spatial[0] >= 4 and t.spatial[0] % 2 == 0:
            kinds.append("pool")
        kind = self.r.choice(kinds)
        self.blocks.append(kind)
        if kind == "dense":
            return self.dense(b, t, self.width())
        if kind == "pool":
            return b.pool(t, self.r.choice(("max", "avg")))
        if kind == "concat":
            left = self.dense(b, t, self.width(), pool=False)
            right = t if self.r.random() < 0.3 else self.dense(b, t, self.width(), pool=False)
            return b.cat(left, right)
        # residual: act(f(x) + skip(x)); identity skip when shapes allow (x may be the network input)
        identity = self.r.random() < 0.5
        out = t.channels if identity else self.width()
        h = self.dense(b, t, self.width(), pool=False, shift_out=False)
        if h.additive and t.additive:  # only identity activations: any skip would meet a second shift
            self.blocks[-1] = "dense"
            return h
        if identity:
            skip = t
            f = self.dense(b, h, out, final_act=False, pool=False, additive_ok=not t.additive)
        else:  # a projection of a shiftable input is shiftable itself
            f_bias = not t.additive and (h.additive or self.r.random() < 0.5)
            f = self.dense(b, h, out, final_act=False, pool=False, additive_ok=f_bias)
            skip = self.dense(b, t, out, final_act=False, pool=False, additive_ok=not f_bias)
        self.blocks[-1] = "residual-identity" if identity else "residual-projection"
        return b.act(b.add(f, skip), self.act())


def random_architecture(
    seed: int | random.Random = 0,
    family: str | None = None,
    depth: tuple[int, int] = (1, 4),
    widths: tuple[int, int] = (2, 5),
    activations: Sequence[str] = ALL_ACTIVATIONS,
    norms: Sequence[str] = ALL_NORMS,
    residual: bool = True,
    concat: bool = True,
    pooling: bool = True,
    losses: Sequence[str] = ("cross_entropy", "mse"),
    p_norm: float = 0.4,
) -> RandomArch:
    """Sample one architecture; ``seed`` is an int or a ``random.Random``. Options restrict the menu."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    family = family or rng.choice(("mlp", "cnn"))
    if family not in ("mlp", "cnn"):
        raise ValueError(f"family must be 'mlp' or 'cnn', got {family!r}")
    unknown = set(activations) - set(ALL_ACTIVATIONS) | set(norms) - set(ALL_NORMS)
    if unknown or not activations:
        raise ValueError(f"unknown or empty activations/norms: {sorted(unknown)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.getrandbits(63))  # parameter init is part of the sample
        return _build(rng, family, widths, depth, activations, norms, residual, concat, pooling, losses, p_norm,
                      seed if isinstance(seed, int) else None)


def _build(rng: random.Random, family: str, widths, depth, activations, norms, residual, concat, pooling, losses,
           p_norm: float, seed: int | None) -> RandomArch:
    s = _Sampler(rng, family, widths, activations, norms, residual, concat, pooling, p_norm)
    if family == "mlp":
        shape: tuple[int, ...] = (rng.randint(2, 6),)
    else:
        side = rng.choice((4, 8))
        shape = (rng.randint(2, 3), side, side)  # one input channel makes 1×1-conv rows scalars (degenerate)
    b = Builder(shape)
    t = b.input
    for _ in range(rng.randint(*depth)):
        t = s.block(b, t)
    if family == "cnn":
        if t.pointwise_affine or (rng.random() < 0.5 and not t.centered):
            t = b.global_pool(t)
            s.blocks.append("global-avg-pool")
        t = b.flatten(t)
        s.blocks.append(f"flatten{t.channels}")
        if rng.random() < 0.5:
            t = s.dense(b, t, s.width())  # Linear after flatten: consumer of the H·W blocks
    loss = rng.choice(list(losses))
    out = rng.randint(2, 4)
    expected = b.head(t, out, loss, bias=rng.random() < 0.8)
    return RandomArch(b.net, shape, loss, out, expected, family, s.blocks, seed)


def exact_copy(model: nn.Module, eps: float = 1e-300) -> nn.Module:
    """float64 copy with normalizer ε ≈ 0, so BN/LN/GN scale symmetries become exact."""
    import copy

    m = copy.deepcopy(model).double().train()
    for mod in m.modules():
        if hasattr(mod, "eps") and isinstance(mod, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
            mod.eps = eps
    return m


def verify_expected(arch: RandomArch, alphas: int = 1, batch: int = 16, seed: int = 0) -> list[float]:
    """Relative loss change under a random element of each expected symmetry (float64, ε ≈ 0)."""
    model = exact_copy(arch.model)
    x, y = arch.example_inputs(batch, seed, torch.float64), arch.targets(batch, seed, torch.float64)
    rng = random.Random(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        base = arch.loss_fn(model(x), y).item()
        errors = []
        for sym in arch.expected:
            worst = 0.0
            for _ in range(alphas):
                a = rng.uniform(-2.0, 2.0) if sym.kind == "translation" else rng.uniform(0.3, 3.0)
                model.load_state_dict(apply_action(state, sym, a))
                worst = max(worst, abs(arch.loss_fn(model(x), y).item() - base) / max(1.0, abs(base)))
            errors.append(worst)
        model.load_state_dict(state)
    return errors
