"""A small interpreted network plus the bookkeeping that derives its symmetries *by construction*.

The random-architecture generator (``random_arch.py``) builds models through :class:`Builder`. Every op
it adds also updates a union-find over *channel groups* — the sets of parameter slices that must be
scaled together — so that when the head is attached the builder knows exactly which symmetries the
model has, following docs/architecture.md "Symmetry conventions":

* a Linear/Conv (or affine norm) output channel starts a fresh group whose *producers* are its rows
  (``W`` axis 0, ``b`` axis 0; or ``γ``/``β`` axis 0);
* positively homogeneous ops (ReLU, LeakyReLU, identity, max/avg pooling, flatten, concat) carry groups
  through (flatten repeats a channel over its ``H·W`` block; concat shifts positions);
* a residual add unions the groups of matching channels; anything that is not a scalable parameter
  (the network input, a non-affine norm's output, a non-homogeneous activation) *blocks* its group,
  and so does reaching the logits;
* a consumer Linear/Conv adds ``W`` axis 1 at the positions the group occupies (sign −1);
* a normalizer unions the channels it normalizes together and marks a *normalized use*.

At the end a surviving group with consumers is a rescale symmetry, one with only normalized uses is a
scale symmetry. Translation symmetries are recorded when a biased layer feeds a normalizer through
shift-preserving ops only (identity, max/avg pooling without padding) and nowhere else, and for the
final Linear of a softmax cross-entropy head. The generator only emits constructs for which these rules
are the whole story, so ``expected`` is exact rather than a lower bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from symmetry_engine.symmetry import Member, Symmetry

HOMOGENEOUS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "identity": nn.Identity}
NON_HOMOGENEOUS = {"tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class GraphNet(nn.Module):
    """Runs a straight-line program of ``(op, module_name, inputs, output)`` steps over named tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.program: list[tuple[str, str, tuple[str, ...], str]] = []
        self.output = "x"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {"x": x}
        for op, name, ins, out in self.program:
            if op == "call":
                env[out] = getattr(self, name)(env[ins[0]])
            elif op == "add":
                env[out] = env[ins[0]] + env[ins[1]]
            else:  # "cat"
                env[out] = torch.cat([env[ins[0]], env[ins[1]]], dim=1)
        return env[self.output]


@dataclass
class _Group:
    producers: dict[str, set[int]] = field(default_factory=dict)
    consumers: dict[str, set[int]] = field(default_factory=dict)
    normalized: bool = False
    blocked: bool = False
    label: tuple[str, int] = ("", 0)
    order: int = 0


@dataclass
class Tensor:
    """A value in the program: its variable, the channel group at each position of the channel axis,
    its spatial size (``None`` once flat) and, while a translation can still reach a normalizer, the
    shift chain ``(layer, kind, weight, bias, in_features, vars)``."""

    var: str
    groups: list[int]
    spatial: tuple[int, int] | None
    chain: tuple | None = None
    centered: bool = False  # every channel has zero spatial mean per sample (a global pool would erase it)
    additive: bool = False  # a parameter can shift it by a batch-constant amount (a bias/β reached through
    # affine ops only); two such shifts meeting at an add, or one reaching BatchNorm through a layer, give
    # translation symmetries the conventions do not list, so the generator avoids them
    pointwise_affine: bool = False  # an elementwise-affine LayerNorm(C,H,W) output not yet mixed over space

    @property
    def channels(self) -> int:
        return len(self.groups)


class Builder:
    """Adds ops to a :class:`GraphNet` and tracks the symmetries they create."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.net = GraphNet()
        self.parent: list[int] = []
        self.info: list[_Group] = []
        self.uses: dict[str, int] = {}
        self.translations: list[tuple[Symmetry, tuple[str, ...]]] = []
        self.counter = 0
        self.vars = 0
        spatial = (input_shape[1], input_shape[2]) if len(input_shape) == 3 else None
        self.input = Tensor("x", [self._new(blocked=True) for _ in range(input_shape[0])], spatial)

    # -- union-find -------------------------------------------------------------------------------
    def _new(self, producers: dict[str, set[int]] | None = None, blocked: bool = False, label=("", 0)) -> int:
        self.parent.append(len(self.parent))
        self.info.append(_Group(producers or {}, {}, False, blocked, label, len(self.info)))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.info[rb].order < self.info[ra].order:
            ra, rb = rb, ra
        A, B = self.info[ra], self.info[rb]
        for src, dst in ((B.producers, A.producers), (B.consumers, A.consumers)):
            for p, idx in src.items():
                dst.setdefault(p, set()).update(idx)
        A.normalized |= B.normalized
        A.blocked |= B.blocked
        self.parent[rb] = ra
        return ra

    # -- program helpers --------------------------------------------------------------------------
    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter - 1}"

    def _emit(self, op: str, name: str, ins: tuple[Tensor, ...]) -> str:
        for t in ins:
            self.uses[t.var] = self.uses.get(t.var, 0) + 1
        self.vars += 1
        out = f"v{self.vars}"
        self.net.program.append((op, name, tuple(t.var for t in ins), out))
        return out

    def _call(self, prefix: str, module: nn.Module, t: Tensor) -> tuple[str, str]:
        name = self._name(prefix)
        self.net.add_module(name, module)
        return name, self._emit("call", name, (t,))

    def _consume(self, t: Tensor, weight: str) -> None:
        for pos, g in enumerate(t.groups):
            self.info[self.find(g)].consumers.setdefault(weight, set()).add(pos)

    def _fresh(self, name: str, params: tuple[str, ...], n: int) -> list[int]:
        return [self._new({p: {c} for p in params}, label=(name, c)) for c in range(n)]

    # -- ops --------------------------------------------------------------------------------------
    def linear(self, t: Tensor, out: int, bias: bool = True) -> Tensor:
        assert t.spatial is None, "flatten before a Linear"
        name, var = self._call("fc", nn.Linear(t.channels, out, bias=bias), t)
        self._consume(t, f"{name}.weight")
        params = (f"{name}.weight",) + ((f"{name}.bias",) if bias else ())
        chain = (name, "linear", f"{name}.weight", f"{name}.bias" if bias else None, t.channels, (var,))
        return Tensor(var, self._fresh(name, params, out), None, chain, additive=bias or t.additive)

    def conv(self, t: Tensor, out: int, kernel: int = 3, bias: bool = True) -> Tensor:
        assert t.spatial is not None
        name, var = self._call("conv", nn.Conv2d(t.channels, out, kernel, padding=kernel // 2, bias=bias), t)
        self._consume(t, f"{name}.weight")
        params = (f"{name}.weight",) + ((f"{name}.bias",) if bias else ())
        chain = (name, "conv", f"{name}.weight", f"{name}.bias" if bias else None, t.channels, (var,))
        return Tensor(var, self._fresh(name, params, out), t.spatial, chain, additive=bias or t.additive)

    def norm(self, t: Tensor, kind: str, affine: bool = True, num_groups: int = 1) -> Tensor:
        """``kind`` in bn / ln / gn / in; LayerNorm normalizes (C, H, W) for images, features otherwise."""
        C, sp = t.channels, t.spatial
        if kind == "bn":
            mod: nn.Module = nn.BatchNorm2d(C, affine=affine) if sp else nn.BatchNorm1d(C, affine=affine)
            sets = [[c] for c in range(C)]
        elif kind == "in":
            assert sp is not None and sp[0] * sp[1] > 1
            mod, sets = nn.InstanceNorm2d(C, affine=affine), [[c] for c in range(C)]
        elif kind == "gn":
            assert sp is not None and sp[0] * sp[1] > 1 and C % num_groups == 0
            size = C // num_groups
            mod, sets = nn.GroupNorm(num_groups, C, affine=affine), [list(range(i * size, (i + 1) * size)) for i in range(num_groups)]
        elif kind == "ln":
            assert sp is None or sp[0] * sp[1] > 1
            mod = nn.LayerNorm([C, *sp] if sp else [C], elementwise_affine=affine)
            sets = [list(range(C))]
        else:
            raise ValueError(f"unknown norm {kind!r}")
        for s in sets:
            root = self.find(t.groups[s[0]])
            for c in s[1:]:
                root = self.union(root, t.groups[c])
            self.info[root].normalized = True
        name, var = self._call(kind, mod, t)
        self._translation_into_norm(t, kind, sets, name)
        if affine:
            groups = self._fresh(name, (f"{name}.weight", f"{name}.bias"), C)
        else:
            groups = [self._new(blocked=True) for _ in range(C)]
        centered = kind == "in" or (kind == "gn" and C // num_groups == 1)
        return Tensor(var, groups, sp, None, centered, additive=affine,
                      pointwise_affine=affine and kind == "ln" and sp is not None)

    def _translation_into_norm(self, t: Tensor, kind: str, sets: list[list[int]], norm: str) -> None:
        if t.chain is None:
            return
        layer, lkind, weight, bias, fan_in, chain_vars = t.chain
        syms: list[Symmetry] = []
        note = f"shift removed by {norm}"
        if kind == "ln" and lkind == "linear":
            syms += [Symmetry("translation", (Member(weight, 1, (j,)),), layer, j, note) for j in range(fan_in)]
        if bias is not None:
            if kind == "ln":
                syms.append(Symmetry("translation", (Member(bias),), layer, None, note))
            else:
                syms += [Symmetry("translation", (Member(bias, 0, tuple(s)),), layer, s[0], note) for s in sets]
        self.translations += [(s, chain_vars) for s in syms]

    def act(self, t: Tensor, kind: str) -> Tensor:
        if kind in HOMOGENEOUS:
            mod = nn.LeakyReLU(0.1) if kind == "leaky_relu" else HOMOGENEOUS[kind]()
            name, var = self._call("act", mod, t)
            chain = t.chain[:5] + (t.chain[5] + (var,),) if (kind == "identity" and t.chain) else None
            ident = kind == "identity"
            return Tensor(var, list(t.groups), t.spatial, chain, t.centered and ident, t.additive and ident,
                          t.pointwise_affine)
        for g in t.groups:
            self.info[self.find(g)].blocked = True
        name, var = self._call("act", NON_HOMOGENEOUS[kind](), t)
        return Tensor(var, [self._new(blocked=True) for _ in t.groups], t.spatial, pointwise_affine=t.pointwise_affine)

    def pool(self, t: Tensor, kind: str) -> Tensor:
        assert t.spatial is not None and t.spatial[0] % 2 == 0 and t.spatial[1] % 2 == 0
        mod = nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)
        name, var = self._call("pool", mod, t)
        chain = t.chain[:5] + (t.chain[5] + (var,),) if t.chain else None
        return Tensor(var, list(t.groups), (t.spatial[0] // 2, t.spatial[1] // 2), chain, t.centered and kind == "avg",
                      t.additive)

    def global_pool(self, t: Tensor) -> Tensor:
        assert t.spatial is not None and not t.centered
        name, var = self._call("gap", nn.AdaptiveAvgPool2d(1), t)
        return Tensor(var, list(t.groups), (1, 1), additive=t.additive)

    def flatten(self, t: Tensor) -> Tensor:
        assert t.spatial is not None
        hw = t.spatial[0] * t.spatial[1]
        name, var = self._call("flat", nn.Flatten(), t)
        assert not (t.pointwise_affine and hw > 1), "LayerNorm's elementwise affine would give per-element groups"
        return Tensor(var, [g for g in t.groups for _ in range(hw)], None, additive=t.additive)

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        assert a.channels == b.channels and a.spatial == b.spatial and a.var != b.var
        assert not (a.additive and b.additive), "two biases meeting at an add are redundant (extra translation)"
        groups = [self.union(x, y) for x, y in zip(a.groups, b.groups)]
        return Tensor(self._emit("add", "", (a, b)), groups, a.spatial, additive=a.additive or b.additive,
                      pointwise_affine=a.pointwise_affine or b.pointwise_affine)

    def cat(self, a: Tensor, b: Tensor) -> Tensor:
        assert a.spatial == b.spatial and a.var != b.var
        return Tensor(self._emit("cat", "", (a, b)), a.groups + b.groups, a.spatial, additive=a.additive or b.additive,
                      pointwise_affine=a.pointwise_affine or b.pointwise_affine)

    # -- head and result --------------------------------------------------------------------------
    def head(self, t: Tensor, out: int, loss: str, bias: bool = True) -> list[Symmetry]:
        """Attach the final Linear (logits), block its outputs, and return every expected symmetry."""
        if t.spatial is not None:
            t = self.flatten(t)
        logits = self.linear(t, out, bias=bias)
        for g in logits.groups:
            self.info[self.find(g)].blocked = True
        self.net.output = logits.var
        self.uses[logits.var] = self.uses.get(logits.var, 0) + 1
        syms = self._channel_symmetries()
        for sym, chain_vars in self.translations:
            if all(self.uses.get(v, 0) == 1 for v in chain_vars):
                syms.append(sym)
        if loss == "cross_entropy":
            name = logits.chain[0]
            note = "softmax cross-entropy is invariant to a common logit shift"
            syms += [Symmetry("translation", (Member(f"{name}.weight", 1, (j,)),), name, j, note) for j in range(t.channels)]
            if bias:
                syms.append(Symmetry("translation", (Member(f"{name}.bias"),), name, None, note))
        return syms

    def _channel_symmetries(self) -> list[Symmetry]:
        out = []
        roots = sorted({self.find(g) for g in range(len(self.parent))}, key=lambda r: self.info[r].order)
        for r in roots:
            G = self.info[r]
            if G.blocked or not G.producers:
                continue
            members = [Member(p, 0, tuple(sorted(i)), 1) for p, i in G.producers.items()]
            if G.consumers:
                members += [Member(p, 1, tuple(sorted(i)), -1) for p, i in G.consumers.items()]
                kind, note = "rescale", "positively homogeneous path from producers to consumers"
            elif G.normalized:
                kind, note = "scale", "every use ends in a normalizer"
            else:
                raise AssertionError(f"channel group of {G.label} has no use")
            out.append(Symmetry(kind, tuple(members), G.label[0], G.label[1], note))
        return out


def param_count(net: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in net.parameters())
