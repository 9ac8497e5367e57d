"""Per-head Q/K and V/O GL(d_h) symmetries found by the analyzer, certified, and near misses not reported.

Every found group is certified with random group elements in float64 (subgroups through their basis);
every near miss is checked twice: the analyzer does not report it, and the action it would have taken
really changes the loss (so the absence is not vacuous).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symmetry_engine.graph import capture
from symmetry_engine.graph.matrix import matrix_pass, rotation_commutant_basis
from symmetry_engine.graph.matrix_certify import certify_matrix
from symmetry_engine.matrix_symmetry import GLMember, GLSymmetry, attention_heads, multihead_attention


def found(model: nn.Module, x: torch.Tensor) -> list[GLSymmetry]:
    return matrix_pass(capture(model, x))


def certified(model: nn.Module, x: torch.Tensor, syms: list[GLSymmetry]) -> float:
    certs = certify_matrix(model, x, syms)
    assert all(c.certified for c in certs), [(c.key, c.loss_rel_joint, c.grad_rel) for c in certs if not c.certified]
    return max(c.loss_rel_joint for c in certs)


def loss_change(model: nn.Module, x: torch.Tensor, sym: GLSymmetry) -> float:
    (c,) = certify_matrix(model, x, [sym])
    return c.loss_rel_joint


def signature(syms: list[GLSymmetry]) -> set:
    return {(s.r, tuple((m.param, m.axis, m.indices, m.act) for m in s.members)) for s in syms}


class MHA(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, bias=bias, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0].mean(1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)


class Heads(nn.Module):
    """Q/K/V/O projections, H query heads, Hkv key/value heads; attention by SDPA or by hand."""

    def __init__(self, H: int = 2, Hkv: int = 2, d: int = 4, E: int = 8, explicit: bool = False, rope: str = "",
                 q_act: bool = False, v_dropout: bool = False, q_shift: bool = False, tied_qk: bool = False,
                 v_unknown: bool = False, out_shift: bool = False) -> None:
        super().__init__()
        self.H, self.Hkv, self.d, self.explicit, self.rope = H, Hkv, d, explicit, rope
        self.q_act, self.v_dropout, self.q_shift, self.v_unknown = q_act, v_dropout, q_shift, v_unknown
        self.q = nn.Linear(E, H * d)
        self.k = self.q if tied_qk else nn.Linear(E, Hkv * d)
        self.v, self.o = nn.Linear(E, Hkv * d), nn.Linear(H * d, E)
        self.shift = nn.Parameter(torch.randn(H * d)) if q_shift else None
        self.out_shift = nn.Parameter(torch.randn(d)) if out_shift else None

    def tables(self, S: int) -> tuple[torch.Tensor, torch.Tensor]:
        inv = 1.0 / (10000 ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d))
        f = torch.arange(S, dtype=torch.float32)[:, None] * inv[None, :]
        # "bad": the second half uses other frequencies, so paired positions rotate by different angles
        emb = torch.cat((f, f), -1) if self.rope == "half" else torch.cat((f, 1.7 * f), -1)
        return emb.cos(), emb.sin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, _ = x.shape
        qx = self.q(x)
        if self.q_act:
            qx = F.gelu(qx)
        if self.shift is not None:
            qx = qx + self.shift
        q = qx.view(B, S, self.H, self.d).transpose(1, 2)
        k = self.k(x).view(B, S, self.Hkv, self.d).transpose(1, 2)
        vx = self.v(x)
        if self.v_dropout:
            vx = F.dropout(vx, 0.3, training=True)
        if self.v_unknown:
            vx = torch.cumsum(vx, dim=-1)
        v = vx.view(B, S, self.Hkv, self.d).transpose(1, 2)
        if self.rope:
            cos, sin = self.tables(S)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if self.Hkv != self.H:
            n = self.H // self.Hkv
            k = k[:, :, None].expand(B, self.Hkv, n, S, self.d).reshape(B, self.H, S, self.d)
            v = v[:, :, None].expand(B, self.Hkv, n, S, self.d).reshape(B, self.H, S, self.d)
        if self.explicit:
            p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d), dim=-1)
            a = p @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        if self.out_shift is not None:                 # a bias after probabilities × values, per head
            a = a + self.out_shift
        return self.o(a.transpose(1, 2).reshape(B, S, -1)).mean(1)


def x_seq(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bias", [True, False])
def test_multihead_attention_packed(bias: bool) -> None:
    torch.manual_seed(0)
    model, x = MHA(bias), x_seq()
    syms = found(model, x)
    assert signature(syms) == signature(multihead_attention("attn", 8, 2, bias=bias))
    assert sorted(s.note for s in syms) == ["head 0: query/key logits", "head 0: value/output",
                                            "head 1: query/key logits", "head 1: value/output"]
    assert certified(model, x, syms) < 1e-10


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "matmul_softmax"])
def test_separate_projections(explicit: bool) -> None:
    torch.manual_seed(1)
    model, x = Heads(explicit=explicit), x_seq(1)
    syms = found(model, x)
    want = attention_heads(("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 2, 4,
                           q_bias=("q.bias", 0), k_bias=("k.bias", 0), v_bias=("v.bias", 0))
    assert signature(syms) == signature(want)
    assert certified(model, x, syms) < 1e-10


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "matmul_softmax"])
def test_grouped_query_heads(explicit: bool) -> None:
    """4 query heads share 2 key/value heads: per kv head one Q/K group (both query heads act by M, the
    key head by M⁻ᵀ) and one V/O group (the value head by M, both output-column blocks by M⁻ᵀ)."""
    torch.manual_seed(2)
    model, x = Heads(H=4, Hkv=2, explicit=explicit), x_seq(2)
    syms = found(model, x)
    assert len(syms) == 4
    qk = [s for s in syms if "query" in s.note]
    assert [[(m.param, m.indices[0], m.act) for m in s.members if m.param.endswith("weight")] for s in qk] == [
        [("q.weight", 0, "M"), ("q.weight", 4, "M"), ("k.weight", 0, "M^-T")],
        [("q.weight", 8, "M"), ("q.weight", 12, "M"), ("k.weight", 4, "M^-T")]]
    vo = [s for s in syms if "value" in s.note]
    assert [[(m.param, m.indices[0]) for m in s.members if m.param == "o.weight"] for s in vo] == [
        [("o.weight", 0), ("o.weight", 4)], [("o.weight", 8), ("o.weight", 12)]]
    assert certified(model, x, syms) < 1e-10
    # one query head alone (without its sibling) is not a symmetry
    half = GLSymmetry(4, tuple(m for m in qk[0].members if m.indices[0] != 4 or m.param[0] != "q"), basis=None)
    assert loss_change(model, x, half) > 1e-6


def test_rotary_subgroup() -> None:
    """Rotate-half rotary tables: Q/K groups are the commutant of the rotations (a·I + b·J per pair
    (j, j + d/2)); V/O stays GL(d).  The full GL(d) on the same members is not a symmetry."""
    torch.manual_seed(3)
    model, x = Heads(rope="half", explicit=True), x_seq(3)
    syms = found(model, x)
    qk = [s for s in syms if "query" in s.note]
    assert len(syms) == 4 and len(qk) == 2
    want = [tuple(tuple(tuple(r) for r in b) for b in rotation_commutant_basis(4, [(0, 2), (1, 3)]))] * 2
    assert [s.basis for s in qk] == want
    assert all(s.basis is None for s in syms if s not in qk)
    assert certified(model, x, syms) < 1e-10
    full = GLSymmetry(4, qk[0].members)
    assert loss_change(model, x, full) > 1e-6


def test_rotary_with_unequal_tables_is_not_reported() -> None:
    torch.manual_seed(4)
    model, x = Heads(rope="bad", explicit=True), x_seq(4)
    syms = found(model, x)
    assert [s.note for s in syms] == ["head 0: value/output", "head 1: value/output"]
    sub = GLSymmetry(4, attention_heads(("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 2, 4,
                                        q_bias=("q.bias", 0), k_bias=("k.bias", 0))[0].members,
                     basis=tuple(tuple(tuple(r) for r in b) for b in rotation_commutant_basis(4, [(0, 2), (1, 3)])))
    assert loss_change(model, x, sub) > 1e-8


@pytest.mark.parametrize("near_miss, left", [
    ("q_act", {"value/output"}),          # GELU on the queries
    ("q_shift", {"value/output"}),        # a parameter added to the queries after the projection
    ("tied_qk", {"value/output"}),        # queries and keys from one Linear
    ("v_dropout", {"query/key logits"}),  # an elementwise mask on the values
    ("v_unknown", {"query/key logits"}),  # an op outside the table (cumsum along the features)
    ("out_shift", {"query/key logits"}),  # a bias added after softmax(QKᵀ)·V, before the output projection
])
def test_near_misses_not_reported(near_miss: str, left: set[str]) -> None:
    torch.manual_seed(5)
    model, x = Heads(**{near_miss: True}), x_seq(5)
    syms = found(model, x)
    assert {s.note.split(": ")[1] for s in syms} == left and len(syms) == 2
    assert certified(model, x, syms) < 1e-10
    heads = attention_heads(("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 2, 4,
                            q_bias=("q.bias", 0), k_bias=("k.bias", 0), v_bias=("v.bias", 0))
    missing = [h for h in heads if h.note.split(": ")[1] not in left]
    if near_miss == "tied_qk":                       # the key weight is the query weight
        missing = [GLSymmetry(4, tuple(GLMember("q.weight" if m.param.startswith("k.") else m.param, m.axis,
                                                tuple(i + 0 for i in m.indices), m.act)
                                       for m in missing[0].members if m.param.endswith("weight")))]
    assert max(loss_change(model, x, h) for h in missing) > 1e-6


class ConvPair(nn.Module):
    def __init__(self, k1: int = 1, k2: int = 1, mid: nn.Module | None = None, groups: int = 1) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, k1, padding=k1 // 2)
        self.b = nn.Conv2d(6, 4, k2, padding=k2 // 2, groups=groups if 4 % groups == 0 else 1)
        self.mid = mid or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.mid(self.a(x))).mean((2, 3))


@pytest.mark.parametrize("k1, k2", [(1, 1), (3, 1), (1, 3)])
def test_conv_pairs(k1: int, k2: int) -> None:
    """Two convolutions with only linear ops between: GL(6) on a's output channels (any kernel size; zero
    padding maps to zero)."""
    torch.manual_seed(6)
    model, x = ConvPair(k1, k2), torch.randn(2, 3, 6, 6)
    (sym,) = found(model, x)
    assert [(m.param, m.axis, m.act) for m in sym.members] == [("a.weight", 0, "M"), ("a.bias", 0, "M"),
                                                               ("b.weight", 1, "M^-T")]
    assert sym.r == 6 and sym.note.startswith("Conv pair")
    assert certified(model, x, [sym]) < 1e-10


def test_conv_pair_near_misses() -> None:
    x = torch.randn(2, 3, 6, 6)
    assert found(ConvPair(mid=nn.ReLU()), x) == []
    assert found(ConvPair(groups=2), x) == []       # a grouped consumer sees only part of the channels


class EinsumHeads(nn.Module):
    """MaxViT-style attention written with einsum (batch, group, head letters), packed qkv by chunk."""

    def __init__(self, E: int = 8, H: int = 2, values_first: bool = False) -> None:
        super().__init__()
        self.qkv, self.o, self.H, self.values_first = nn.Linear(E, 3 * E), nn.Linear(E, E), H, values_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, E = x.shape
        q, k, v = (t.reshape(B, S, self.H, E // self.H).permute(0, 2, 1, 3) for t in self.qkv(x).chunk(3, -1))
        p = torch.softmax(torch.einsum("b h i d, b h j d -> b h i j", q, k * 0.5), -1)
        a = torch.einsum("bhjd,bhij->bhid", v, p) if self.values_first else torch.einsum("bhij,bhjd->bhid", p, v)
        return self.o(a.permute(0, 2, 1, 3).reshape(B, S, E)).mean(1)


@pytest.mark.parametrize("values_first", [False, True])
def test_einsum_attention(values_first: bool) -> None:
    torch.manual_seed(7)
    model, x = EinsumHeads(values_first=values_first), x_seq(7)
    syms = found(model, x)
    want = attention_heads(("qkv.weight", 0), ("qkv.weight", 8), ("qkv.weight", 16), "o.weight", 2, 4,
                           q_bias=("qkv.bias", 0), k_bias=("qkv.bias", 8), v_bias=("qkv.bias", 16))
    assert signature(syms) == signature(want)
    assert certified(model, x, syms) < 1e-10


class BaddbmmHeads(nn.Module):
    """Bloom-style logits: baddbmm(bias, q, kᵀ, beta=1, alpha=1/√d) with an additive position bias."""

    def __init__(self, E: int = 8, H: int = 2) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))
        self.H = H

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, E = x.shape
        d = E // self.H
        q, k, v = (f(x).view(B, S, self.H, d).transpose(1, 2).reshape(B * self.H, S, d) for f in (self.q, self.k, self.v))
        bias = torch.arange(S, dtype=x.dtype).expand(B * self.H, S, S)
        p = torch.softmax(torch.baddbmm(bias, q, k.transpose(1, 2), beta=1.0, alpha=d ** -0.5), -1)
        a = torch.bmm(p, v).view(B, self.H, S, d).transpose(1, 2).reshape(B, S, E)
        return self.o(a).mean(1)


def test_baddbmm_attention() -> None:
    torch.manual_seed(8)
    model, x = BaddbmmHeads(), x_seq(8)
    syms = found(model, x)
    want = attention_heads(("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 2, 4,
                           q_bias=("q.bias", 0), k_bias=("k.bias", 0), v_bias=("v.bias", 0))
    assert signature(syms) == signature(want)
    assert certified(model, x, syms) < 1e-10


class RotaryVariants(nn.Module):
    """Single-head q/k/v/o with rotary embeddings in GPT-J's interleaved layout (pairs (2p, 2p+1), tables by
    repeat_interleave) or on part of the head only (GPT-NeoX's rotary_pct: dims 0..3 of 6 rotated)."""

    def __init__(self, layout: str, d: int = 6, E: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(E, d), nn.Linear(E, d), nn.Linear(E, d), nn.Linear(d, E)
        self.layout, self.d = layout, d

    def rope(self, t: torch.Tensor) -> torch.Tensor:
        S = t.shape[1]
        n = self.d if self.layout == "interleaved" else 4
        f = torch.arange(S, dtype=t.dtype)[:, None] * (1.0 / 10 ** (torch.arange(0, n, 2, dtype=t.dtype) / n))[None]
        if self.layout == "interleaved":
            cos, sin = f.cos().repeat_interleave(2, -1), f.sin().repeat_interleave(2, -1)
            rot = torch.stack((-t[..., 1::2], t[..., ::2]), -1).flatten(-2)
            return t * cos + rot * sin
        emb = torch.cat((f, f), -1)
        head, rest = t[..., :n], t[..., n:]
        return torch.cat((head * emb.cos() + rotate_half(head) * emb.sin(), rest), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.rope(self.q(x)), self.rope(self.k(x))
        return self.o(torch.softmax(q @ k.transpose(-1, -2), -1) @ self.v(x)).mean(1)


@pytest.mark.parametrize("layout, pairs, free", [("interleaved", [(0, 1), (2, 3), (4, 5)], []),
                                                 ("partial", [(0, 2), (1, 3)], [4, 5])])
def test_rotary_layouts(layout: str, pairs: list, free: list) -> None:
    torch.manual_seed(9)
    model, x = RotaryVariants(layout), x_seq(9)
    syms = found(model, x)
    (qk,) = [s for s in syms if "query" in s.note]
    assert qk.basis == tuple(tuple(tuple(r) for r in b) for b in rotation_commutant_basis(6, pairs))
    assert len(qk.basis) == 2 * len(pairs) + len(free) ** 2
    assert certified(model, x, syms) < 1e-10
    assert loss_change(model, x, GLSymmetry(6, qk.members)) > 1e-6       # full GL(6) is not a symmetry


class CrossMHA(nn.Module):
    """nn.MultiheadAttention with kdim/vdim ≠ embed_dim: separate q/k/v_proj_weight, biases in pieces of
    the one in_proj_bias (in_proj_bias.chunk(3))."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x[..., :6], x[..., 2:7], need_weights=False)[0].mean(1)


def test_cross_attention_separate_projections() -> None:
    torch.manual_seed(10)
    model, x = CrossMHA(), x_seq(10)
    syms = found(model, x)
    assert signature(syms) == signature(multihead_attention("attn", 8, 2, packed=False))
    assert certified(model, x, syms) < 1e-10
