"""Counting conservation laws (rank of the Jacobian of all conserved functions) against the theorems.

Known values (Marcotte, Gribonval, Peyré 2023; theory.md §8): a ReLU MLP with or without biases has
Σ(hidden widths) laws; a linear network r(r+1)/2 per full-rank hidden layer of width r, fewer when its
inputs + outputs are fewer than r (``gl_law_count``); one attention layer exactly d_h(d_h+1)/2 per head
for Q/K and for V/O, and a residual connection adds none.  MSE loss, so softmax translations add none.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from symmetry_engine.graph.analysis import analyze
from symmetry_engine.matrix_symmetry import (GLSymmetry, attention_heads, gl_law_count, multihead_attention,
                                             rope_basis)
from symmetry_engine.numeric import law_count as lc
from symmetry_engine.numeric.law_count import law_count, law_count_report
from symmetry_engine.symmetry import Member, Symmetry


def analyzed_count(model: nn.Module, x: torch.Tensor, extra=(), loss: str = "mse"):
    a = analyze(model, x, loss=loss)
    matrix = [GLSymmetry.from_json(m.to_json()) for m in a.matrix_symmetries] + list(extra)
    return law_count_report(a.symmetries, matrix, a.param_shapes), a


def relu_mlp(widths, bias: bool, act=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def random_widths(seed: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(rng.randint(1, 7) for _ in range(rng.randint(3, 5)))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("widths", [(5, 7, 4, 3), (3, 2, 6, 2), (4, 1, 4)] + [random_widths(s) for s in range(4)])
def test_relu_mlp_has_one_law_per_hidden_neuron(widths, bias) -> None:
    torch.manual_seed(0)
    rep, _ = analyzed_count(relu_mlp(widths, bias), torch.randn(4, widths[0]))
    assert rep.count == sum(widths[1:-1])
    assert rep.largest_dropped < 1e-12 and rep.smallest_kept > 1e-4


def test_leaky_relu_counts_the_same() -> None:
    rep, _ = analyzed_count(relu_mlp((4, 6, 5, 2), True, nn.LeakyReLU), torch.randn(4, 4))
    assert rep.count == 11


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("widths", [(6, 4, 3), (1, 4, 1), (2, 5, 2), (6, 2, 6), (2, 5, 5, 2), (3, 2, 4, 2, 3),
                                    (1, 3, 5, 3, 1)])
def test_linear_network_counts(widths, bias) -> None:
    """Σ over hidden layers of the generic rank of C: r(r+1)/2 at full rank, r·s − s(s−1)/2 when the layer's
    inputs (+ bias) and outputs s are fewer than r.  The analyzer's rescale groups are the diagonals of the
    GL blocks: more functions than laws, and the rank does not count them twice."""
    torch.manual_seed(1)
    model = nn.Sequential(*[nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])])
    rep, a = analyzed_count(model, torch.randn(4, widths[0]))
    want = sum(gl_law_count(r, m + bias, k) for m, r, k in zip(widths[:-2], widths[1:-1], widths[2:]))
    assert rep.count == want
    assert rep.functions > rep.count                   # rescale diagonals inside the GL blocks
    assert rep.by_family["rescale"] == sum(widths[1:-1])
    assert rep.largest_dropped < 1e-12 and rep.smallest_kept > 1e-4
    full = all(m + bias + k >= r for m, r, k in zip(widths[:-2], widths[1:-1], widths[2:]))
    if full:
        assert rep.count == sum(r * (r + 1) // 2 for r in widths[1:-1])


class Attention(nn.Module):
    def __init__(self, E: int = 8, H: int = 2, bias: bool = False, residual: bool = False) -> None:
        super().__init__()
        self.attn, self.residual = nn.MultiheadAttention(E, H, bias=bias, batch_first=True), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attn(x, x, x, need_weights=False)[0]
        return x + h if self.residual else h


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_one_attention_layer(bias: bool, residual: bool) -> None:
    """2 heads of d_h = 4: 10 Q/K + 10 V/O laws each = 40, with or without a residual connection."""
    torch.manual_seed(2)
    rep, a = analyzed_count(Attention(bias=bias, residual=residual), torch.randn(2, 5, 8),
                            extra=multihead_attention("attn", 8, 2, bias=bias))
    # Softmax over keys: every key-bias entry is a translation (its gradient is exactly 0), found by the
    # analyzer: 8 more laws, independent of the Q/K matrices that contain b_K.
    assert rep.count == 2 * 2 * (4 * 5 // 2) + (8 if bias else 0)
    keys = {(m.param, m.indices) for s in a.symmetries if s.kind == "translation" for m in s.members
            if m.param == "attn.in_proj_bias"}
    assert keys == ({("attn.in_proj_bias", (8 + i,)) for i in range(8)} if bias else set())
    if bias:
        extra = [Symmetry("translation", (Member("attn.in_proj_bias", 0, (8 + i,)),)) for i in range(8)]
        again = law_count(list(a.symmetries) + extra, multihead_attention("attn", 8, 2, bias=True), a.param_shapes)
        assert again == 48   # the same directions given twice add nothing


def test_wider_heads_and_single_head() -> None:
    E, H = 12, 3
    shapes = {"attn.in_proj_weight": (3 * E, E), "attn.out_proj.weight": (E, E)}
    assert law_count([], multihead_attention("attn", E, H, bias=False), shapes) == H * 2 * (4 * 5 // 2)
    # a hand-written single head (explicit matmul-softmax, d_h = 3), biases on q, k, v: 6 + 6
    single = attention_heads(("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 1, 3,
                             q_bias=("q.bias", 0), k_bias=("k.bias", 0), v_bias=("v.bias", 0))
    s_shapes = {"q.weight": (3, 6), "k.weight": (3, 6), "v.weight": (3, 6), "o.weight": (6, 3),
                "q.bias": (3,), "k.bias": (3,), "v.bias": (3,)}
    assert law_count([], single, s_shapes) == 12


def test_rotary_subgroup_counts_block_traces() -> None:
    """With rotary embeddings only d_h/2 Q/K laws per head survive (traces of the 2×2 frequency blocks)."""
    E, H, d = 8, 2, 4
    heads = multihead_attention("attn", E, H, bias=False)
    rope = tuple(tuple(map(tuple, b)) for b in rope_basis(d))
    sub = [GLSymmetry(s.r, s.members, s.layer, s.note, rope if "query" in s.note else None) for s in heads]
    shapes = {"attn.in_proj_weight": (3 * E, E), "attn.out_proj.weight": (E, E)}
    rep = law_count_report([], sub, shapes)
    assert rep.count == H * (d // 2 + d * (d + 1) // 2)
    assert rep.by_family == {"gl-subgroup": H * 2, "gl": H * 10}


def test_gram_route_agrees_with_svd(monkeypatch) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 2), nn.ReLU(), nn.Linear(2, 4), nn.Linear(4, 3))
    a = analyze(model, torch.randn(4, 3), loss="mse")
    matrix = [GLSymmetry.from_json(m.to_json()) for m in a.matrix_symmetries]
    svd = law_count_report(a.symmetries, matrix, a.param_shapes)
    monkeypatch.setattr(lc, "DENSE_LIMIT", 0)
    gram = law_count_report(a.symmetries, matrix, a.param_shapes)
    assert svd.method == "svd" and gram.method == "gram"
    assert svd.count == gram.count == gl_law_count(6, 4, 2) + 2 + gl_law_count(4, 3, 3)


def test_disjoint_functions_and_translations() -> None:
    """Translations are linear and independent of the quadratics on the same entries; duplicates are not."""
    shapes = {"w": (3, 4), "b": (3,)}
    col = [Symmetry("translation", (Member("w", 1, (j,)),)) for j in range(4)]
    scale = [Symmetry("scale", (Member("w", 0, (i,)), Member("b", 0, (i,)))) for i in range(3)]
    assert law_count(col + scale, [], shapes) == 7
    assert law_count(col + col + scale, [], shapes) == 7
    assert law_count([s.to_json() for s in col], [], shapes) == 4          # JSON accepted


def test_unknown_parameter_is_an_error() -> None:
    with pytest.raises(ValueError, match="not among the parameters"):
        law_count([Symmetry("scale", (Member("nope", 0, (0,)),))], [], {"w": (2, 2)})
    with pytest.raises(ValueError, match="not among the parameters"):
        law_count([], [GLSymmetry.from_json({"first_weight": "a", "first_bias": None, "second_weight": "b",
                                             "hidden": 2})], {"a": (2, 3)})


def test_cli_count_laws(capsys) -> None:
    """In-process ``nmech analyze --count-laws``: the text line and the JSON object."""
    import json

    from analyses.cli import main

    assert main(["analyze", "mlp", "--input-shape", "12", "--loss", "mse", "--model-kw", 'widths="7,5"',
                 "--count-laws"]) == 0
    assert "conservation laws: 12 independent" in capsys.readouterr().out
    assert main(["analyze", "mlp", "--input-shape", "12", "--loss", "mse", "--model-kw", 'widths="5,4"',
                 "--model-kw", 'activation="identity"', "--count-laws", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["law_count"]["count"] == 15 + 10 and data["law_count"]["by_family"]["gl"] == 25


# -- counts from the analyzer's own matrix symmetries (nothing added by hand) ------------------------------
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_one_attention_layer_from_the_analyzer(bias: bool, residual: bool) -> None:
    """The analyzer alone finds exactly the per-head Q/K and V/O groups of nn.MultiheadAttention, and their
    count is the theorem's: 2 heads × (10 + 10) = 40, with or without a residual connection."""
    torch.manual_seed(4)
    rep, a = analyzed_count(Attention(bias=bias, residual=residual), torch.randn(2, 5, 8))
    sig = lambda syms: {tuple((m.param, m.axis, m.indices, m.act) for m in s.members) for s in syms}  # noqa: E731
    assert sig(a.matrix_symmetries) == sig(multihead_attention("attn", 8, 2, bias=bias))
    assert rep.by_family.get("gl") == 2 * 2 * 10
    # with biases the analyzer also reports every key-bias entry as a translation (softmax over keys): 8 more
    assert rep.count == 2 * 2 * (4 * 5 // 2) + (8 if bias else 0)


def test_grouped_query_and_rotary_counts_from_the_analyzer() -> None:
    """4 query heads on 2 key/value heads, d_h = 4: per kv head 10 (Q/K: the shared C of both query heads
    against the key head) + 10 (V/O) = 40; with rotary embeddings the Q/K part keeps d_h/2 = 2 per kv head
    (the traces of the 2×2 frequency blocks): 2 × (2 + 10) = 24."""
    from tests.attention_models import gqa, gqa_rotary

    # the analyzer's diagonal rescales (Q/K, V/O) lie inside these GL blocks and add no law; the key-bias
    # entries are translations (softmax over keys), 8 more laws, except under rotary embeddings, where the
    # rotated key shift varies with the position and is not absorbed
    rep, a = analyzed_count(gqa(), torch.randn(2, 5, 8))
    assert len(a.matrix_symmetries) == 4 and rep.count == 40 + 8
    assert rep.by_family["gl"] == 40 and rep.by_family["translation"] == 8
    rep, a = analyzed_count(gqa_rotary(), torch.randn(2, 5, 8))
    assert rep.count == 24 and rep.by_family["gl-subgroup"] == 4 and rep.by_family["gl"] == 20
    assert "translation" not in rep.by_family


def test_gl_blocks_are_not_counted_twice_with_their_rescale_diagonals() -> None:
    """Linear → Linear → ReLU → Linear: the analyzer reports GL(4) on the first pair and 5 rescales on the
    ReLU; the rescale diagonals of the GL block are not reported twice, and the count is 10 + 5."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    rep, a = analyzed_count(model, torch.randn(4, 6))
    assert len(a.matrix_symmetries) == 1 and rep.count == 10 + 5
    assert rep.functions >= rep.count
