"""Axis flow (symmetry_engine/graph/axes.py): no construct may make plain `analyze` report a false symmetry.

Each case used to produce a false symmetry while the analyzer assumed "channel = axis 1" and pooling that
never touches it (caught only by --certify). Here plain analysis must report exactly the true groups,
and every reported group must certify (a random group element in float64 leaves the loss unchanged).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symmetry_engine import Member, Symmetry, canonical_form
from symmetry_engine.graph.analysis import analyze
from symmetry_engine.graph.certify import certify


def _run(model: nn.Module, x: torch.Tensor, **kw):
    torch.manual_seed(0)
    result = analyze(model, x, **kw)
    certs = certify(model, x, result.symmetries, batch_size=6, output=kw.get("output"))
    assert all(c.certified for c in certs), [c.key for c in certs if not c.certified]
    forms = {canonical_form(s, result.param_shapes) for s in result.symmetries}
    return result, forms


def _form(result, kind: str, *members: Member) -> tuple:
    return canonical_form(Symmetry(kind, members), result.param_shapes)


class _LinearThenChannelNorm(nn.Module):
    """A Linear on the last axis of [B, C, L], then a normalizer over channel axis 1."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.norm = nn.BatchNorm1d(4) if norm == "bn" else nn.GroupNorm(2, 4)
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.fc(x))).flatten(1))


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_linear_on_last_axis_before_a_channel_norm(norm: str) -> None:
    result, forms = _run(_LinearThenChannelNorm(norm), torch.randn(3, 4, 5))
    fc_trans = {f for f in forms if f[0] == "translation" and any(m[0] == "fc.bias" for m in f[1])}
    # the per-entry bias shifts vary along L inside one normalization group: only the whole bias is absorbed
    assert fc_trans == {_form(result, "translation", Member("fc.bias"))}
    # the normalizer absorbs scaling the whole Linear, never one of its output features
    fc_scale = [s for s in result.symmetries if s.kind == "scale" and "fc.weight" in s.params]
    assert [canonical_form(s, result.param_shapes) for s in fc_scale] == [
        _form(result, "scale", Member("fc.weight"), Member("fc.bias"))]
    # γ_c, β_c of the normalizer against the head's columns of channel c: one rescale per channel
    res = [s for s in result.symmetries if s.kind == "rescale"]
    assert len(res) == 4
    assert {tuple(m.indices) for s in res for m in s.members if m.param == "head.weight"} == {
        tuple(range(6 * c, 6 * c + 6)) for c in range(4)}


class _FeaturePool(nn.Module):
    """Pooling along the feature axis of a Linear's output (window 2)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.fc, self.head, self.kind = nn.Linear(5, 8), nn.Linear(4, 3), kind

    def forward(self, x):
        h = self.fc(x).unsqueeze(1)
        h = F.max_pool1d(h, 2) if self.kind == "max" else F.avg_pool1d(h, 2)
        return self.head(torch.relu(h.flatten(1)))


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_along_the_feature_axis_joins_each_window(kind: str) -> None:
    result, forms = _run(_FeaturePool(kind), torch.randn(3, 5))
    want = {_form(result, "rescale", Member("fc.weight", 0, (2 * k, 2 * k + 1)), Member("fc.bias", 0, (2 * k, 2 * k + 1)),
                  Member("head.weight", 1, (k,), -1)) for k in range(4)}
    assert {f for f in forms if f[0] == "rescale"} == want
    # no translation of a single fc.bias entry (its shift is not constant over the head's classes)
    assert not any(f[0] == "translation" and any(m[0] == "fc.bias" for m in f[1]) for f in forms)


class _Pool3dOn4d(nn.Module):
    """max_pool3d on a 4-D tensor treats it as unbatched [C, D, H, W]: it pools over the channel axis too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(F.max_pool3d(torch.relu(self.conv(x)), 2).flatten(1))


def test_max_pool3d_on_a_4d_tensor_pools_channels() -> None:
    result, forms = _run(_Pool3dOn4d(), torch.randn(2, 3, 4, 4))
    want = {_form(result, "rescale", Member("conv.weight", 0, (2 * k, 2 * k + 1)), Member("conv.bias", 0, (2 * k, 2 * k + 1)),
                  Member("head.weight", 1, tuple(range(4 * k, 4 * k + 4)), -1)) for k in range(2)}
    assert {f for f in forms if f[0] == "rescale"} == want


class _ChannelsLast(nn.Module):
    """ConvNeXt-style: depthwise conv → permute → LayerNorm over C → Linear → ReLU → Linear → layer scale
    → permute back → residual add; a class token is not involved."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.ln = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.stem(x)
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.gamma * self.fc2(torch.relu(self.fc1(self.ln(h))))
        x = x + h.permute(0, 3, 1, 2)
        return self.head(self.norm(x.mean((2, 3))))


def test_channels_last_block_families() -> None:
    result, forms = _run(_ChannelsLast(), torch.randn(2, 3, 8, 8))
    sym = result.symmetries
    # the depthwise conv's whole output feeds the LayerNorm through a permute: one scale
    assert _form(result, "scale", Member("dw.weight"), Member("dw.bias")) in forms
    # the depthwise bias shift is absorbed by that LayerNorm (constant over the normalized channels)
    assert _form(result, "translation", Member("dw.bias")) in forms
    # the residual stream (stem + layer-scaled branch) is read by the depthwise conv (its rows undo the
    # scaling) and, through the spatial mean, by the final LayerNorm, which joins all channels: one rescale
    (stream,) = [s for s in sym if s.kind == "rescale" and "stem.weight" in s.params]
    assert {m.param: m.sign for m in stream.members if m.axis is None or len(m.indices) == 4} == {
        "stem.weight": 1, "stem.bias": 1, "gamma": 1, "dw.weight": -1}
    # layer scale γ_c against fc2 row c: the parameter multiplied in is a member
    assert all(_form(result, "rescale", Member("fc2.weight", 0, (c,)), Member("fc2.bias", 0, (c,)),
                     Member("gamma", 0, (c,), -1)) in forms for c in range(4))
    # LayerNorm gain γ_j, β_j against fc1's column j
    assert all(_form(result, "rescale", Member("ln.weight", 0, (j,)), Member("ln.bias", 0, (j,)),
                     Member("fc1.weight", 1, (j,), -1)) in forms for j in range(4))


class _Tokens(nn.Module):
    """Patch embedding, class token concatenated, position embedding added, pre-norm MLP block."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 5, d))
        self.ln1, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 8), nn.Linear(8, d)
        self.ln2, self.head = nn.LayerNorm(d), nn.Linear(d, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        t = t + self.fc2(torch.relu(self.fc1(self.ln1(t))))
        return self.head(self.ln2(t)[:, 0])


def test_parameters_concatenated_and_added_are_members() -> None:
    result, forms = _run(_Tokens(), torch.randn(2, 3, 8, 8))
    (stream,) = [s for s in result.symmetries if s.kind == "scale"]
    assert {"cls", "pos", "patch.weight", "patch.bias", "fc2.weight", "fc2.bias"} == set(stream.params)
    assert all(m.axis is None or m.indices == tuple(range(6)) for m in stream.members)
    # LayerNorm absorbs α·1 on each writer: the class token, each position row, the conv bias, fc2's bias
    for m in (Member("cls"), Member("patch.bias"), Member("fc2.bias")):
        assert _form(result, "translation", m) in forms
    assert all(_form(result, "translation", Member("pos", 1, (n,))) in forms for n in range(5))


class HandRMSNorm(nn.Module):
    """RMSNorm written out (pow / mean / rsqrt / mul), as Hugging Face's LlamaRMSNorm is; certification
    sets ``eps`` (a float attribute of a module named *Norm) to ~0 like every other normalizer's."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.rand(d) + 0.5), 1e-6

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class _Rms(nn.Module):
    """Pre-norm stream with written-out RMSNorms and a SwiGLU MLP."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.emb = nn.Linear(4, d, bias=False)
        self.n1, self.n2 = HandRMSNorm(d), HandRMSNorm(d)
        self.gate, self.up, self.down = nn.Linear(d, 8, bias=False), nn.Linear(d, 8, bias=False), nn.Linear(8, d, bias=False)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.emb(x)
        n = self.n1(h)
        h = h + self.down(F.silu(self.gate(n)) * self.up(n))
        return self.head(self.n2(h))


def test_rmsnorm_written_out_and_swiglu() -> None:
    result, forms = _run(_Rms(), torch.randn(4, 4))
    # the stream (emb rows, down rows) is scale-invariant through the RMS normalizations
    assert _form(result, "scale", Member("emb.weight"), Member("down.weight")) in forms
    # SwiGLU: up row k against down column k
    assert all(_form(result, "rescale", Member("up.weight", 0, (k,)), Member("down.weight", 1, (k,), -1)) in forms
               for k in range(8))
    # the gain g_j against the columns j of both layers reading the normalized stream
    assert all(_form(result, "rescale", Member("n1.weight", 0, (j,)), Member("gate.weight", 1, (j,), -1),
                     Member("up.weight", 1, (j,), -1)) in forms for j in range(6))
    # no translation through an RMS normalization (it does not centre)
    assert not any(f[0] == "translation" and any(m[0] in ("emb.weight", "down.weight") for m in f[1]) for f in forms)


class _StochasticDepth(nn.Module):
    """A residual branch times a train-mode stochastic-depth mask (bernoulli × 1/p), then BN: EfficientNet."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.sd, self.head = StochasticDepth(0.3, "row"), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = h + self.sd(self.b2(self.c2(h)))
        return self.head(h.mean((2, 3)))


def test_stochastic_depth_mask_keeps_the_rescale() -> None:
    result, _ = _run(_StochasticDepth().train(), torch.randn(4, 3, 6, 6))
    res = [s for s in result.symmetries if s.kind == "rescale" and "b1.weight" in s.params]
    assert len(res) == 4 and all("b2.weight" in s.params for s in res)


class _Aux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.main, self.aux = nn.Linear(4, 5), nn.Linear(5, 3), nn.Linear(5, 2)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"logits": self.main(h), "aux": self.aux(h)}


def test_auxiliary_outputs_main_by_default_or_chosen() -> None:
    result, _ = _run(_Aux(), torch.randn(3, 4))
    assert "main.bias" in {p for s in result.symmetries for p in s.params}
    assert "aux.bias" not in {p for s in result.symmetries for p in s.params}
    assert any("returns 2 tensors" in w for w in result.warnings)
    chosen, _ = _run(_Aux(), torch.randn(3, 4), output="aux")
    assert "aux.bias" in {p for s in chosen.symmetries for p in s.params}
    assert "main.bias" not in {p for s in chosen.symmetries for p in s.params}


def test_unknown_op_on_moving_entries_is_named() -> None:
    class Cum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.b(torch.special.erfcx(self.a(x)))

    result = analyze(Cum(), torch.randn(3, 4))
    assert "aten.special_erfcx" in result.unknown_ops
    assert result.counts["rescale"] == 0
