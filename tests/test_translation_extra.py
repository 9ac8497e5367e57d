"""Translation groups beyond "a bias right before its absorber" (symmetry_engine/graph/translation.py):

* biases meeting at a residual add/sub — per channel, α added to one and taken from the other;
* a bias reaching a train-mode BatchNorm through further Linear layers (or unpadded convolutions) —
  every entry of it is a translation group.

Each case is found on a small hand-built model and certified, and absent where a ReLU, a second use or a
zero-padded convolution breaks it.
"""

from __future__ import annotations

import torch
from torch import nn

from symmetry_engine import Member, Symmetry, canonical_form
from symmetry_engine.graph.analysis import analyze
from symmetry_engine.graph.certify import certify


def _translations(model: nn.Module, shape: tuple[int, ...]) -> tuple[set, dict]:
    """Canonical forms of the translation groups, after certifying every reported symmetry."""
    torch.manual_seed(0)
    x = torch.randn(4, *shape)
    result = analyze(model, x)
    certs = certify(model, x, result.symmetries, batch_size=8)
    assert all(c.certified for c in certs), [c.key for c in certs if not c.certified]
    shapes = result.param_shapes
    return {canonical_form(s, shapes) for s in result.symmetries if s.kind == "translation"}, shapes


def _form(shapes: dict, *members: Member) -> tuple:
    return canonical_form(Symmetry("translation", members), shapes)


def _pairs(shapes: dict, first: str, second: str, n: int, sign: int = -1) -> set:
    return {_form(shapes, Member(first, 0, (c,)), Member(second, 0, (c,), sign)) for c in range(n)}


def _params_in(forms: set) -> set[str]:
    return {item[0] for _, items in forms for item in items}


class _Sum(nn.Module):
    """head(relu(a(x) ± b(x) [+ relu(c(x))] [+ x])), with an optional ReLU on a's path or a second use of a(x)."""

    def __init__(self, relu_a: bool = False, sub: bool = False, third: str | None = None, reuse: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.relu_a, self.sub, self.third, self.reuse = relu_a, sub, third, reuse
        if third in ("bias", "relu"):
            self.c = nn.Linear(4, 4)
        if reuse:
            self.side = nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        if self.relu_a:
            h = torch.relu(h)
        y = h - self.b(x) if self.sub else h + self.b(x)
        if self.third == "bias":
            y = y + self.c(x)
        elif self.third == "relu":
            y = y + torch.relu(self.c(x))
        elif self.third == "input":
            y = y + x
        out = self.head(torch.relu(y))
        return out + self.side(h) if self.reuse else out


def test_two_biases_at_an_add_give_per_channel_pairs() -> None:
    forms, shapes = _translations(_Sum(), (4,))
    assert _pairs(shapes, "a.bias", "b.bias", 4) <= forms
    assert _pairs(shapes, "a.bias", "b.bias", 4, sign=1) <= _translations(_Sum(sub=True), (4,))[0]


def test_three_biases_at_nested_adds_span_the_differences() -> None:
    forms, shapes = _translations(_Sum(third="bias"), (4,))
    pairs = {f for f in forms if len(f[1]) == 2}
    assert len(pairs) == 8 and _params_in(pairs) == {"a.bias", "b.bias", "c.bias"}


def test_add_pairs_absent_without_two_shift_paths() -> None:
    for model in (_Sum(relu_a=True), _Sum(reuse=True)):
        forms, _ = _translations(model, (4,))
        assert not {"a.bias", "b.bias"} <= _params_in({f for f in forms if len(f[1]) == 2})
    forms, _ = _translations(_Sum(relu_a=True, third="input"), (4,))
    assert all(len(f[1]) == 1 for f in forms)  # only the CE head's groups
    # a third contributor without a bias of its own (ReLU output) does not move: the a/b pairs stay, c is not in them
    forms, shapes = _translations(_Sum(third="relu"), (4,))
    pairs = {f for f in forms if len(f[1]) == 2}
    assert pairs == _pairs(shapes, "a.bias", "b.bias", 4)


class _ConvSum(nn.Module):
    """relu(pool(bn_a(conv_a x)) + pool(bn_b(conv_b x))) → fc: the BN shifts β_a[c], β_b[c] meet at the add."""

    def __init__(self) -> None:
        super().__init__()
        self.ca, self.cb = nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Conv2d(2, 3, 1, bias=False)
        self.bna, self.bnb, self.fc = nn.BatchNorm2d(3), nn.BatchNorm2d(3), nn.Linear(3 * 4, 5)

    def forward(self, x):
        y = nn.functional.max_pool2d(self.bna(self.ca(x)), 2) + nn.functional.max_pool2d(self.bnb(self.cb(x)), 2)
        return self.fc(torch.relu(y).flatten(1))


def test_norm_shifts_meeting_at_an_add() -> None:
    forms, shapes = _translations(_ConvSum(), (2, 4, 4))
    assert _pairs(shapes, "bna.bias", "bnb.bias", 3) <= forms


class _Chain(nn.Module):
    """layers → BatchNorm1d → ReLU → head; ``between`` goes after the first layer."""

    def __init__(self, widths=(5, 4, 6), between: nn.Module | None = None, norm: str = "bn", first_norm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.between = between or nn.Identity()
        self.first_norm = nn.BatchNorm1d(widths[1]) if first_norm else nn.Identity()
        self.norm = nn.BatchNorm1d(widths[-1]) if norm == "bn" else nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], 3)

    def forward(self, x):
        h = self.between(self.first_norm(self.layers[0](x)))
        for layer in self.layers[1:]:
            h = layer(h)
        return self.head(torch.relu(self.norm(h)))


def _entries(shapes: dict, param: str, n: int) -> set:
    return {_form(shapes, Member(param, 0, (j,))) for j in range(n)}


def test_bias_reaching_batchnorm_through_linear_layers() -> None:
    forms, shapes = _translations(_Chain(), (5,))
    assert _entries(shapes, "layers.0.bias", 4) | _entries(shapes, "layers.1.bias", 6) <= forms
    forms, shapes = _translations(_Chain(widths=(5, 4, 3, 6)), (5,))
    assert _entries(shapes, "layers.0.bias", 4) | _entries(shapes, "layers.1.bias", 3) <= forms
    forms, shapes = _translations(_Chain(first_norm=True), (5,))   # β of a BatchNorm1d is a bias too
    assert _entries(shapes, "first_norm.bias", 4) <= forms


def test_upstream_bias_absent_behind_relu_or_before_layernorm() -> None:
    forms, _ = _translations(_Chain(between=nn.ReLU()), (5,))
    assert "layers.0.bias" not in _params_in(forms)
    forms, _ = _translations(_Chain(norm="ln"), (5,))
    assert "layers.0.bias" not in _params_in(forms)


class _ConvChain(nn.Module):
    def __init__(self, kernel: int, padding: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, kernel, padding=padding)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        h = self.bn(self.c2(nn.functional.max_pool2d(self.c1(x), 2)))
        return self.fc(torch.relu(h).mean((2, 3)))


def test_conv_bias_through_unpadded_conv_only() -> None:
    for kernel, padding, found in ((1, 0, True), (3, 0, True), (3, 1, False)):
        forms, shapes = _translations(_ConvChain(kernel, padding), (2, 8, 8))
        assert (_entries(shapes, "c1.bias", 3) <= forms) == found, (kernel, padding)
        assert _entries(shapes, "c2.bias", 4) <= forms
