"""Random architectures beyond the conventional menu, each with the symmetries it is *known* to have.

``random_arch.random_architecture`` only emits constructs whose symmetries the conventions of
docs/architecture.md pin down exactly (its ``expected`` is the complete list). The analyzer claims more
than that, and the constructs that trip axis bookkeeping are exactly the ones that menu avoids. This
generator samples the rest — features on the last axis of [B, L, D] (or [B, D]), LayerNorm/RMSNorm,
attention (multi-head, grouped-query, hand-written or ``nn.MultiheadAttention``), GLU MLPs,
permute/transpose/reshape round trips, pooling along the sequence axis, depthwise convolutions, residual
and concat wiring, widths down to 1 — and adversarial constructs with tempting false symmetries (a Linear
on the last axis of [B, C, L] before BatchNorm1d/GroupNorm over axis 1, pooling along a Linear's feature
axis, MaxPool3d on a 4-D tensor).

Each block *declares* the symmetries it has by construction, block-locally, with exact member slices
(``expected``, diagonal, and ``expected_gl``, matrix in the member form of ``symmetry_engine.matrix_symmetry``).
Block-local means the block's output is unchanged by the action, so the declaration holds for the whole
model whatever surrounds it; it is a *subset* of the model's symmetries (cross-block ones, e.g. a block's
output rows against the head, are not declared), so completeness is tested as declared ⊆ found. Every
declaration carries a construct *tag*; ``risky`` maps a tag to the parameters on which an analyzer that
gets the construct wrong would report false symmetries. Tests use the tags to tolerate exactly the
known analyzer gaps (tests/props_gaps.py) and nothing else.
"""

from __future__ import annotations

import abc

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from symmetry_engine.matrix_symmetry import GLMember, GLSymmetry, from_pair
from symmetry_engine.symmetry import Member, Symmetry

from .random_arch import RandomArch

HOMOGENEOUS_ACTS = ("relu", "leaky_relu", "identity")
ACTS = HOMOGENEOUS_ACTS + ("tanh", "gelu")
SEQ_BLOCKS = ("mlp", "glu", "norm", "attn", "mha", "permute", "reshape", "pool_seq", "concat",
              "adv_pool_feature", "adv_norm_axis1")
VEC_BLOCKS = ("mlp", "glu", "norm", "reshape", "concat", "adv_pool_feature")
IMG_BLOCKS = ("depthwise", "conv_pair", "adv_pool3d")


def _act(kind: str) -> nn.Module:
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "identity": nn.Identity, "tanh": nn.Tanh,
            "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}[kind]()


@dataclass
class Decl:
    """What a block declares: diagonal and matrix symmetries with their construct tags, risky params."""

    syms: list[Symmetry] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    gl: list[GLSymmetry] = field(default_factory=list)
    gl_tags: list[str] = field(default_factory=list)
    risky: dict[str, set[str]] = field(default_factory=dict)

    def sym(self, tag: str, kind: str, members: Sequence[Member], layer: str, channel: int | None = None) -> None:
        self.syms.append(Symmetry(kind, tuple(members), layer, channel, f"declared by wide_arch ({tag or 'conventional'})"))
        self.tags.append(tag)

    def rescale_rows(self, tag: str, first: str, first_bias: str | None, second: str, n: int,
                     second_cols: Callable[[int], Sequence[int]] | None = None, second_axis: int = 1) -> None:
        """Per unit c: rows c of ``first`` (and its bias) +1 against ``second`` along ``second_axis`` −1."""
        for c in range(n):
            cols = tuple(second_cols(c)) if second_cols else (c,)
            ms = [Member(f"{first}.weight", 0, (c,), 1)] + ([Member(first_bias, 0, (c,), 1)] if first_bias else [])
            ms.append(Member(second, second_axis, cols, -1))
            self.sym(tag, "rescale", ms, first, c)

    def matrix(self, tag: str, g: GLSymmetry) -> None:
        self.gl.append(g)
        self.gl_tags.append(tag)


def _bias(lin: nn.Module, name: str) -> str | None:
    return f"{name}.bias" if getattr(lin, "bias", None) is not None else None


class Block(nn.Module, abc.ABC):
    """A block maps [B, *seq, D] to [B, *seq', D']; ``declare(prefix, d)`` fills a :class:`Decl`."""

    tag = ""

    @abc.abstractmethod
    def declare(self, p: str, d: Decl) -> None:
        """Add the symmetries this block has, with exact slices, under parameter prefix ``p``."""


class MLP(Block):
    def __init__(self, r: random.Random, din: int, hidden: int, dout: int, act: str, residual: bool) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(din, hidden, bias=r.random() < 0.7), _act(act), nn.Linear(hidden, dout, bias=r.random() < 0.7)
        self.kind, self.residual = act, residual and din == dout

    def forward(self, x):
        h = self.fc2(self.act(self.fc1(x)))
        return x + h if self.residual else h

    def declare(self, p, d):
        if self.kind in HOMOGENEOUS_ACTS:
            d.rescale_rows("", p + "fc1", _bias(self.fc1, p + "fc1"), p + "fc2.weight", self.fc1.out_features)
        if self.kind == "identity":
            d.matrix("", from_pair(p + "fc1.weight", _bias(self.fc1, p + "fc1"), p + "fc2.weight", self.fc1.out_features))


class GLU(Block):
    """out = W_o (W_v x ⊙ act(W_g x)): the value rows rescale against W_o's columns; with a ReLU gate the
    gate rows do too."""

    def __init__(self, r: random.Random, din: int, hidden: int, dout: int, gate: str) -> None:
        super().__init__()
        b = r.random() < 0.6
        self.v, self.g, self.o = nn.Linear(din, hidden, bias=b), nn.Linear(din, hidden, bias=b), nn.Linear(hidden, dout)
        self.gate, self.kind = _act(gate), gate

    def forward(self, x):
        return self.o(self.v(x) * self.gate(self.g(x)))

    def declare(self, p, d):
        n = self.v.out_features
        # a ReLU gate makes the family two-dimensional per channel (value ↔ down and gate ↔ down): its own tag
        tag = "glu-relu" if self.kind == "relu" else "glu"
        d.rescale_rows(tag, p + "v", _bias(self.v, p + "v"), p + "o.weight", n)
        if self.kind == "relu":
            d.rescale_rows(tag, p + "g", _bias(self.g, p + "g"), p + "o.weight", n)


class Norm(Block):
    """fc1 → LayerNorm/RMSNorm over the features → act → fc2."""

    def __init__(self, r: random.Random, din: int, hidden: int, dout: int, kind: str, act: str) -> None:
        super().__init__()
        affine = r.random() < 0.7
        self.fc1 = nn.Linear(din, hidden, bias=r.random() < 0.7)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=affine) if kind == "ln" else nn.RMSNorm(hidden, elementwise_affine=affine)
        self.act, self.fc2, self.kind, self.act_kind, self.affine = _act(act), nn.Linear(hidden, dout), kind, act, affine

    def forward(self, x):
        return self.fc2(self.act(self.norm(self.fc1(x))))

    def declare(self, p, d):
        tag = "" if self.kind == "ln" else "rmsnorm"
        fc1, b = p + "fc1", _bias(self.fc1, p + "fc1")
        d.sym(tag, "scale", [Member(f"{fc1}.weight")] + ([Member(b)] if b else []), fc1)
        if self.kind == "ln":
            for j in range(self.fc1.in_features):
                d.sym("", "translation", [Member(f"{fc1}.weight", 1, (j,))], fc1, j)
            if b:
                d.sym("", "translation", [Member(b)], fc1)
        if self.affine and self.act_kind in HOMOGENEOUS_ACTS:
            nb = p + "norm.bias" if self.kind == "ln" else None
            d.rescale_rows("norm-gain", p + "norm", nb, p + "fc2.weight", self.fc1.out_features)


class Attention(Block):
    """Self-attention written out (q, k, v, o Linears; grouped-query when kv_heads < heads)."""

    def __init__(self, r: random.Random, dim: int, heads: int, kv_heads: int, head_dim: int, residual: bool) -> None:
        super().__init__()
        self.h, self.kv, self.dh = heads, kv_heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=r.random() < 0.5)
        self.k = nn.Linear(dim, kv_heads * head_dim, bias=r.random() < 0.5)
        self.v = nn.Linear(dim, kv_heads * head_dim, bias=r.random() < 0.5)
        self.o = nn.Linear(heads * head_dim, dim, bias=r.random() < 0.5)
        self.sdpa, self.residual = r.random() < 0.5, residual

    def forward(self, x):
        B, L, _ = x.shape
        q = self.q(x).view(B, L, self.h, self.dh).transpose(1, 2)
        k = self.k(x).view(B, L, self.kv, self.dh).transpose(1, 2)
        v = self.v(x).view(B, L, self.kv, self.dh).transpose(1, 2)
        if self.kv != self.h:
            k, v = k.repeat_interleave(self.h // self.kv, dim=1), v.repeat_interleave(self.h // self.kv, dim=1)
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1) @ v
        out = self.o(a.transpose(1, 2).reshape(B, L, self.h * self.dh))
        return x + out if self.residual else out

    def declare(self, p, d):
        rep, dh = self.h // self.kv, self.dh
        q, k, v, o = p + "q", p + "k", p + "v", p + "o.weight"
        qb, kb, vb = _bias(self.q, q), _bias(self.k, k), _bias(self.v, v)
        for g in range(self.kv):
            heads = range(g * rep, (g + 1) * rep)
            for i in range(dh):
                qrows = tuple(h * dh + i for h in heads)
                kr = (g * dh + i,)
                ms = [Member(q + ".weight", 0, qrows, 1)] + ([Member(qb, 0, qrows, 1)] if qb else [])
                ms += [Member(k + ".weight", 0, kr, -1)] + ([Member(kb, 0, kr, -1)] if kb else [])
                d.sym("attention", "rescale", ms, q, qrows[0])
                ms = [Member(v + ".weight", 0, kr, 1)] + ([Member(vb, 0, kr, 1)] if vb else [])
                d.sym("attention", "rescale", ms + [Member(o, 1, qrows, -1)], v, kr[0])
            kr = tuple(range(g * dh, (g + 1) * dh))
            qk, vo = [], [GLMember(v + ".weight", 0, kr, "M")] + ([GLMember(vb, 0, kr, "M")] if vb else [])
            for h in heads:
                rows = tuple(range(h * dh, (h + 1) * dh))
                qk += [GLMember(q + ".weight", 0, rows, "M")] + ([GLMember(qb, 0, rows, "M")] if qb else [])
                vo.append(GLMember(o, 1, rows, "M^-T"))
            qk += [GLMember(k + ".weight", 0, kr, "M^-T")] + ([GLMember(kb, 0, kr, "M^-T")] if kb else [])
            d.matrix("attention-gl", GLSymmetry(dh, tuple(qk), q, f"kv group {g}: query/key"))
            d.matrix("attention-gl", GLSymmetry(dh, tuple(vo), v, f"kv group {g}: value/output"))
        if kb:  # softmax over keys removes q·b_k: every key-bias entry is a translation
            for j in range(self.k.out_features):
                d.sym("attention", "translation", [Member(kb, 0, (j,))], k, j)


class MHA(Block):
    """``nn.MultiheadAttention`` (packed in-projection) with its per-head Q/K and V/O symmetries."""

    def __init__(self, r: random.Random, dim: int, heads: int, residual: bool) -> None:
        super().__init__()
        self.attn, self.residual = nn.MultiheadAttention(dim, heads, bias=r.random() < 0.7, batch_first=True), residual

    def forward(self, x):
        out = self.attn(x, x, x, need_weights=False)[0]
        return x + out if self.residual else out

    def declare(self, p, d):
        E, H = self.attn.embed_dim, self.attn.num_heads
        dh, w, b = E // H, p + "attn.in_proj_weight", (p + "attn.in_proj_bias") if self.attn.in_proj_bias is not None else None
        o = p + "attn.out_proj.weight"
        for h in range(H):
            for i in range(dh):
                r_ = h * dh + i
                ms = [Member(w, 0, (r_,), 1), Member(w, 0, (E + r_,), -1)]
                ms += [Member(b, 0, (r_,), 1), Member(b, 0, (E + r_,), -1)] if b else []
                d.sym("attention", "rescale", ms, p + "attn.q", r_)
                ms = [Member(w, 0, (2 * E + r_,), 1)] + ([Member(b, 0, (2 * E + r_,), 1)] if b else [])
                d.sym("attention", "rescale", ms + [Member(o, 1, (r_,), -1)], p + "attn.v", r_)
        if b:
            for j in range(E):
                d.sym("attention", "translation", [Member(b, 0, (E + j,))], p + "attn.k", j)
        from symmetry_engine.matrix_symmetry import multihead_attention
        for g in multihead_attention(p + "attn", E, H, bias=b is not None):
            d.matrix("attention-gl", g)


class Permute(Block):
    """fc1 → act → [B, H, L] (transpose or permute) → depthwise Conv1d along L → back → act → fc2."""

    def __init__(self, r: random.Random, din: int, hidden: int, dout: int, a1: str, a2: str) -> None:
        super().__init__()
        k = r.choice((1, 3))
        self.fc1, self.a1 = nn.Linear(din, hidden, bias=r.random() < 0.7), _act(a1)
        self.dw = nn.Conv1d(hidden, hidden, k, padding=k // 2, groups=hidden, bias=r.random() < 0.7)
        self.a2, self.fc2, self.kinds, self.use_permute = _act(a2), nn.Linear(hidden, dout), (a1, a2), r.random() < 0.5

    def forward(self, x):
        h = self.a1(self.fc1(x))
        h = h.permute(0, 2, 1) if self.use_permute else h.transpose(1, 2)
        h = self.dw(h)
        h = h.permute(0, 2, 1) if self.use_permute else h.transpose(1, 2)
        return self.fc2(self.a2(h))

    def declare(self, p, d):
        n = self.fc1.out_features
        if self.kinds[0] in HOMOGENEOUS_ACTS:
            d.rescale_rows("depthwise-consumer", p + "fc1", _bias(self.fc1, p + "fc1"), p + "dw.weight", n, second_axis=0)
        if self.kinds[1] in HOMOGENEOUS_ACTS:
            d.rescale_rows("permute", p + "dw", _bias(self.dw, p + "dw"), p + "fc2.weight", n)


class Reshape(Block):
    """fc1 → view [.., a, b] → act (→ transpose of the two new axes and back) → flatten → fc2."""

    def __init__(self, r: random.Random, din: int, a: int, b: int, dout: int, act: str) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(din, a * b, bias=r.random() < 0.7), _act(act), nn.Linear(a * b, dout)
        self.ab, self.kind, self.swap = (a, b), act, r.random() < 0.5

    def forward(self, x):
        h = self.act(self.fc1(x).reshape(*x.shape[:-1], *self.ab))
        if self.swap:
            h = h.transpose(-1, -2).transpose(-1, -2)
        return self.fc2(h.flatten(-2))

    def declare(self, p, d):
        if self.kind in HOMOGENEOUS_ACTS:
            d.rescale_rows("reshape", p + "fc1", _bias(self.fc1, p + "fc1"), p + "fc2.weight", self.fc1.out_features)


class PoolSeq(Block):
    """fc1 → ReLU → pool along the sequence axis (features kept) → fc2."""

    def __init__(self, r: random.Random, din: int, hidden: int, dout: int, L: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(din, hidden, bias=r.random() < 0.7), nn.Linear(hidden, dout)
        k = 2 if L % 2 == 0 and r.random() < 0.5 else 1
        self.pool = r.choice((nn.MaxPool1d, nn.AvgPool1d))(k) if k == 2 else nn.MaxPool1d(3, 1, 1)
        self.out_len = L // 2 if k == 2 else L

    def forward(self, x):
        return self.fc2(self.pool(F.relu(self.fc1(x)).transpose(1, 2)).transpose(1, 2))

    def declare(self, p, d):
        d.rescale_rows("pool-seq", p + "fc1", _bias(self.fc1, p + "fc1"), p + "fc2.weight", self.fc1.out_features)


class Concat(Block):
    """[act(fa x), act(fb x)] concatenated on the feature axis → fc2 (columns offset by fa's width)."""

    def __init__(self, r: random.Random, din: int, wa: int, wb: int, dout: int, act: str) -> None:
        super().__init__()
        self.fa, self.fb, self.fc2 = nn.Linear(din, wa), nn.Linear(din, wb, bias=r.random() < 0.7), nn.Linear(wa + wb, dout)
        self.act, self.kind = _act(act), act

    def forward(self, x):
        return self.fc2(torch.cat([self.act(self.fa(x)), self.act(self.fb(x))], dim=-1))

    def declare(self, p, d):
        if self.kind in HOMOGENEOUS_ACTS:
            wa = self.fa.out_features
            d.rescale_rows("concat-last", p + "fa", p + "fa.bias", p + "fc2.weight", wa)
            d.rescale_rows("concat-last", p + "fb", _bias(self.fb, p + "fb"), p + "fc2.weight", self.fb.out_features,
                           second_cols=lambda c: (wa + c,))


class AdvPoolFeature(Block):
    """Adversarial: pooling along the *feature* axis of a Linear's output (MaxPool1d on [B, L, H] pools H;
    on [B, H] it pools H too, the batch read as channels). Per-row rescales of fc1 are false."""

    def __init__(self, r: random.Random, din: int, hidden: int, dout: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(din, hidden), nn.Linear(hidden, dout)
        self.pool = r.choice((nn.MaxPool1d(3, 1, 1), nn.AvgPool1d(3, 1, 1)))

    def forward(self, x):
        return self.fc2(self.pool(F.relu(self.fc1(x))))

    def declare(self, p, d):
        d.risky.setdefault("pool-feature-axis", set()).update({p + "fc1.weight", p + "fc1.bias", p + "fc2.weight"})


class AdvNormAxis1(Block):
    """Adversarial: a Linear on the last axis of [B, L, H] before BatchNorm1d(L)/GroupNorm(g, L), which
    normalize axis 1 — the Linear's rows are *not* channels there. Declared: the whole layer's scale and
    its whole-bias translation (both removed by the normalizer of every axis-1 slice)."""

    def __init__(self, r: random.Random, din: int, hidden: int, L: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(din, hidden)
        divisors = [g for g in range(1, L + 1) if L % g == 0 and (L // g) * hidden >= 2]
        use_gn = bool(divisors) and r.random() < 0.5
        self.norm = nn.GroupNorm(r.choice(divisors), L) if use_gn else nn.BatchNorm1d(L)
        self.act = _act(act)

    def forward(self, x):
        return self.act(self.norm(self.fc1(x)))

    def declare(self, p, d):
        fc1 = p + "fc1"
        d.sym("norm-axis1", "scale", [Member(fc1 + ".weight"), Member(fc1 + ".bias")], fc1)
        d.sym("norm-axis1", "translation", [Member(fc1 + ".bias")], fc1)
        d.risky.setdefault("norm-axis1", set()).update({fc1 + ".weight", fc1 + ".bias"})


class Depthwise(Block):
    """conv1 → act → depthwise 3×3 conv → act → 1×1 conv (images)."""

    def __init__(self, r: random.Random, cin: int, hidden: int, cout: int, a1: str, a2: str) -> None:
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(cin, hidden, 1, bias=r.random() < 0.7), _act(a1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=r.random() < 0.7)
        self.a2, self.c2, self.kinds = _act(a2), nn.Conv2d(hidden, cout, 1), (a1, a2)

    def forward(self, x):
        return self.c2(self.a2(self.dw(self.a1(self.c1(x)))))

    def declare(self, p, d):
        n = self.c1.out_channels
        if self.kinds[0] in HOMOGENEOUS_ACTS:
            d.rescale_rows("depthwise-consumer", p + "c1", _bias(self.c1, p + "c1"), p + "dw.weight", n, second_axis=0)
        if self.kinds[1] in HOMOGENEOUS_ACTS:
            d.rescale_rows("", p + "dw", _bias(self.dw, p + "dw"), p + "c2.weight", n)


class ConvPair(Block):
    """conv → act → conv, optionally residual (images)."""

    def __init__(self, r: random.Random, cin: int, hidden: int, act: str) -> None:
        super().__init__()
        k = r.choice((1, 3))
        self.c1, self.act, self.c2 = nn.Conv2d(cin, hidden, k, padding=k // 2), _act(act), nn.Conv2d(hidden, cin, 1, bias=False)
        self.kind, self.residual = act, r.random() < 0.5

    def forward(self, x):
        h = self.c2(self.act(self.c1(x)))
        return x + h if self.residual else h

    def declare(self, p, d):
        if self.kind in HOMOGENEOUS_ACTS:
            d.rescale_rows("", p + "c1", p + "c1.bias", p + "c2.weight", self.c1.out_channels)


class AdvPool3d(Block):
    """Adversarial: MaxPool3d((3,1,1), stride 1, padding (1,0,0)) on a 4-D tensor pools over *channels*
    (torch reads [B, C, H, W] as an unbatched volume); per-channel rescales of c1 are false."""

    def __init__(self, r: random.Random, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, hidden, 3, padding=1), nn.Conv2d(hidden, cout, 1)
        self.pool = nn.MaxPool3d((3, 1, 1), 1, (1, 0, 0))

    def forward(self, x):
        return self.c2(self.pool(F.relu(self.c1(x))))

    def declare(self, p, d):
        d.risky.setdefault("pool3d-4d", set()).update({p + "c1.weight", p + "c1.bias", p + "c2.weight"})


class WideNet(nn.Module):
    def __init__(self, blocks: list[Block], head: nn.Linear, pool_seq: bool) -> None:
        super().__init__()
        self.blocks, self.head, self.pool_seq = nn.ModuleList(blocks), head, pool_seq

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        if self.pool_seq:
            x = x.mean(1)
        return self.head(x.flatten(1))


@dataclass
class WideArch(RandomArch):
    """A :class:`RandomArch` whose ``expected`` is a declared subset (see the module docstring)."""

    tags: list[str] = field(default_factory=list)
    expected_gl: list[GLSymmetry] = field(default_factory=list)
    gl_tags: list[str] = field(default_factory=list)
    risky: dict[str, set[str]] = field(default_factory=dict)

    @property
    def constructs(self) -> set[str]:
        """Every construct tag present (declared or risky)."""
        return (set(self.tags) | set(self.gl_tags) | set(self.risky)) - {""}


def wide_architecture(seed: int | random.Random = 0, family: str | None = None, depth: tuple[int, int] = (1, 3),
                      widths: tuple[int, int] = (1, 4), blocks: Sequence[str] | None = None,
                      losses: Sequence[str] = ("cross_entropy", "mse")) -> WideArch:
    """Sample one architecture: ``family`` seq ([B, L, D]), vec ([B, D]) or img ([B, C, H, W]); ``blocks``
    restricts the menu (names from SEQ_BLOCKS / VEC_BLOCKS / IMG_BLOCKS); the same seed gives the same model."""
    r = seed if isinstance(seed, random.Random) else random.Random(seed)
    family = family or r.choice(("seq", "vec", "img"))
    menu = {"seq": SEQ_BLOCKS, "vec": VEC_BLOCKS, "img": IMG_BLOCKS}.get(family)
    if menu is None:
        raise ValueError(f"family must be seq, vec or img, got {family!r}")
    menu = [b for b in menu if blocks is None or b in blocks]
    if not menu:
        raise ValueError(f"no block of {list(blocks or [])} fits family {family!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.getrandbits(63))
        return _build(r, family, menu, depth, widths, losses, seed if isinstance(seed, int) else None)


def _build(r: random.Random, family: str, menu: list[str], depth, widths, losses, seed) -> WideArch:
    w = lambda: r.randint(*widths)  # noqa: E731
    act = lambda: r.choice(ACTS)  # noqa: E731
    if family == "img":
        shape: tuple[int, ...] = (r.randint(1, 3), r.choice((1, 2, 3)), r.choice((1, 2, 3)))
    elif family == "seq":
        shape = (r.randint(1, 4), r.randint(1, 4))
    else:
        shape = (r.randint(1, 5),)
    L, D = (shape[0], shape[-1]) if family == "seq" else (None, shape[0])
    mods: list[Block] = []
    names: list[str] = []
    for _ in range(r.randint(*depth)):
        kind = r.choice(menu)
        names.append(kind)
        if kind == "mlp":
            out = D if r.random() < 0.4 else w()
            m: Block = MLP(r, D, w(), out, act(), residual=True)
        elif kind == "glu":
            out = w()
            m = GLU(r, D, w(), out, r.choice(("sigmoid", "relu", "gelu", "silu")))
        elif kind == "norm":
            out = w()
            m = Norm(r, D, r.randint(max(2, widths[0]), max(2, widths[1])), out, r.choice(("ln", "rms")), act())
        elif kind == "attn":
            kv = r.randint(1, 2)
            heads = kv * r.randint(1, 2)
            m, out = Attention(r, D, heads, kv, r.randint(1, 3), residual=r.random() < 0.5), D
        elif kind == "mha":
            heads = r.choice([h for h in (1, 2, 3) if D % h == 0])
            m, out = MHA(r, D, heads, residual=r.random() < 0.5), D
        elif kind == "permute":
            out = w()
            m = Permute(r, D, w(), out, act(), act())
        elif kind == "reshape":
            out = w()
            m = Reshape(r, D, r.randint(1, 3), r.randint(1, 3), out, act())
        elif kind == "pool_seq":
            out = w()
            m = PoolSeq(r, D, w(), out, L)
            L = m.out_len
        elif kind == "concat":
            out = w()
            m = Concat(r, D, w(), w(), out, act())
        elif kind == "adv_pool_feature":
            out = w()
            m = AdvPoolFeature(r, D, r.randint(2, max(2, widths[1])), out)
        elif kind == "adv_norm_axis1":
            m, out = AdvNormAxis1(r, D, w(), L, act()), None
            out = m.fc1.out_features
        elif kind == "depthwise":
            out = w()
            m = Depthwise(r, D, w(), out, act(), act())
        elif kind == "conv_pair":
            m, out = ConvPair(r, D, w(), act()), D
        else:  # adv_pool3d
            out = w()
            m = AdvPool3d(r, D, r.randint(2, max(2, widths[1])), out)
        mods.append(m)
        D = out
    pool_seq = family == "seq" and r.random() < 0.4
    feat = D if (pool_seq or family == "vec") else D * (L if family == "seq" else shape[1] * shape[2])
    n_out = r.randint(2, 3)
    head = nn.Linear(feat, n_out, bias=r.random() < 0.8)
    net = WideNet(mods, head, pool_seq)
    decl = Decl()
    for i, m in enumerate(mods):
        m.declare(f"blocks.{i}.", decl)
    loss = r.choice(list(losses))
    if loss == "cross_entropy":
        for j in range(feat):
            decl.sym("", "translation", [Member("head.weight", 1, (j,))], "head", j)
        if head.bias is not None:
            decl.sym("", "translation", [Member("head.bias")], "head")
    return WideArch(net, shape, loss, n_out, decl.syms, family, names, seed, decl.tags, decl.gl, decl.gl_tags, decl.risky)
