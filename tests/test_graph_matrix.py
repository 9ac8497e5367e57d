"""GL(r) detection on captured graphs, and a float64 certificate of every detection."""

from __future__ import annotations

import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from symmetry_engine.graph import capture
from symmetry_engine.graph.matrix import matrix_pass
from symmetry_engine.matrix_symmetry import GLSymmetry, from_pair
from symmetry_engine.numeric.matrix_views import apply_matrix


class TwoLinear(nn.Module):
    def __init__(self, mid: nn.Module | None = None, bias: bool = True) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4, bias=bias), nn.Linear(4, 3)
        self.mid = mid or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.mid(self.a(x)))


class TwoUses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 4), nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(h) + self.c(h)


class SequenceModel(nn.Module):
    """Linear on [B, T, F], reshape to [B·T, r] (feature axis kept), then Linear; mean over T."""

    def __init__(self, merge_features: bool = False) -> None:
        super().__init__()
        self.merge = merge_features
        self.a, self.b = nn.Linear(5, 4), nn.Linear(8 if merge_features else 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.merge:  # [B, T=2, 4] → [B, 8]: features of two positions mixed into one vector
            return self.b(h.reshape(h.shape[0], -1))
        z = self.b(h.reshape(-1, 4).contiguous())
        return z.reshape(x.shape[0], -1, 3).mean(1)


def detect(model: nn.Module, x: torch.Tensor) -> list[GLSymmetry]:
    return matrix_pass(capture(model, x, loss="cross_entropy"))


def members(sym: GLSymmetry) -> list[tuple]:
    return [(m.param, m.axis, m.indices, m.act) for m in sym.members]


def certify(model: nn.Module, x: torch.Tensor, sym: GLSymmetry, seed: int = 0) -> float:
    """Relative loss change under a random well-conditioned M (singular values in [0.5, 2])."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    x = x.double()
    y = torch.randint(0, 3, (x.shape[0],), generator=gen)
    r = sym.r
    U, _ = torch.linalg.qr(torch.randn(r, r, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(r, r, generator=gen, dtype=torch.float64))
    s = 0.5 + 1.5 * torch.rand(r, generator=gen, dtype=torch.float64)
    M = U @ torch.diag(s) @ V.T
    params = dict(model.named_parameters())
    with torch.no_grad():
        before = F.cross_entropy(model(x), y)
        after = F.cross_entropy(functional_call(model, apply_matrix(params, sym, M), (x,)), y)
    return float(abs(after - before) / abs(before))


def test_linear_linear_found_and_certified() -> None:
    torch.manual_seed(0)
    model, x = TwoLinear(), torch.randn(8, 6)
    syms = detect(model, x)
    assert [members(s) for s in syms] == [[("a.weight", 0, (0, 1, 2, 3), "M"), ("a.bias", 0, (0, 1, 2, 3), "M"),
                                          ("b.weight", 1, (0, 1, 2, 3), "M^-T")]]
    assert syms[0].to_json()["laws"] == 10 and syms[0].to_json()["kind"] == "gl" and syms[0].basis is None
    assert certify(model, x, syms[0]) < 1e-10


def test_no_bias_first_layer() -> None:
    torch.manual_seed(1)
    model, x = TwoLinear(bias=False), torch.randn(8, 6)
    (sym,) = detect(model, x)
    assert [m.param for m in sym.members] == ["a.weight", "b.weight"] and certify(model, x, sym) < 1e-10


def test_relu_blocks() -> None:
    torch.manual_seed(4)
    model, x = TwoLinear(nn.ReLU()), torch.randn(8, 6)
    assert detect(model, x) == []
    # The certificate is not vacuous: the same action on the ReLU model changes the loss.
    assert certify(model, x, from_pair("a.weight", "a.bias", "b.weight", 4)) > 1e-3


def test_dropout_blocks() -> None:
    assert detect(TwoLinear(nn.Dropout(0.1)), torch.randn(8, 6)) == []


def test_hidden_used_by_two_consumers() -> None:
    """h = a(x) read by b and c: M on a's rows, M⁻ᵀ on the columns of both readers (one group)."""
    torch.manual_seed(5)
    model, x = TwoUses(), torch.randn(8, 6)
    (sym,) = detect(model, x)
    assert sorted(members(sym)) == sorted([("a.weight", 0, (0, 1, 2, 3), "M"), ("a.bias", 0, (0, 1, 2, 3), "M"),
                                           ("b.weight", 1, (0, 1, 2, 3), "M^-T"), ("c.weight", 1, (0, 1, 2, 3), "M^-T")])
    assert certify(model, x, sym) < 1e-10
    # without c's share the action is not a symmetry (the check can fail)
    partial = GLSymmetry(4, tuple(m for m in sym.members if m.param != "c.weight"))
    assert certify(model, x, partial) > 1e-3


def test_three_linear_chain_gives_two_symmetries() -> None:
    torch.manual_seed(2)
    model, x = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)), torch.randn(8, 6)
    syms = detect(model, x)
    assert [(s.members[0].param, s.members[-1].param, s.r) for s in syms] == \
        [("0.weight", "1.weight", 5), ("1.weight", "2.weight", 4)]
    for i, s in enumerate(syms):
        assert certify(model, x, s, seed=i) < 1e-10


def test_reshape_keeping_feature_axis() -> None:
    torch.manual_seed(3)
    model, x = SequenceModel(), torch.randn(4, 2, 5)
    (sym,) = detect(model, x)
    assert (sym.members[0].param, sym.members[-1].param, sym.r) == ("a.weight", "b.weight", 4)
    assert certify(model, x, sym) < 1e-10


def test_reshape_merging_positions_gives_one_member_per_position() -> None:
    """[B, T=2, 4] → [B, 8]: b sees both positions' hidden vectors side by side, so its columns 0..3 and
    4..7 each take M⁻ᵀ (the same M acts on every position's vector)."""
    torch.manual_seed(6)
    model, x = SequenceModel(merge_features=True), torch.randn(4, 2, 5)
    (sym,) = detect(model, x)
    assert members(sym)[-2:] == [("b.weight", 1, (0, 1, 2, 3), "M^-T"), ("b.weight", 1, (4, 5, 6, 7), "M^-T")]
    assert certify(model, x, sym) < 1e-10


def test_reshape_splitting_a_vector_blocks() -> None:
    """[B, 4] → [B, 2, 2] → Linear(2, 3): one vector is cut into two fibers; no group is reported."""
    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x).view(-1, 2, 2)).sum(1)

    assert detect(Split(), torch.randn(8, 6)) == []


def test_tied_weight_blocks() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(self.a(x))[:, :3]

    assert detect(Tied(), torch.randn(8, 4)) == []


def test_graph_module_does_not_import_sympy() -> None:
    code = "import sys, symmetry_engine.graph.matrix, symmetry_engine.graph.matrix_certify; assert 'sympy' not in sys.modules"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_cast_to_integers_blocks() -> None:
    """A round trip through int64 is not linear: no group; a float64 round trip is transparent."""
    class Cast(nn.Module):
        def __init__(self, dtype: torch.dtype) -> None:
            super().__init__()
            self.a, self.b, self.dtype = nn.Linear(6, 4), nn.Linear(4, 3), dtype

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x).to(self.dtype).to(x.dtype))

    x = torch.randn(8, 6)
    assert detect(Cast(torch.int64), x) == []
    (sym,) = detect(Cast(torch.float64), x)
    assert sym.r == 4 and certify(Cast(torch.float64), x, sym) < 1e-10
