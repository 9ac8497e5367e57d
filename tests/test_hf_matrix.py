"""Tiny BERT, GPT-2 (tied embeddings), Llama (grouped-query heads + rotary) and ViT built offline from
configs: every per-head Q/K and V/O matrix family is found, with the exact member entries, and certified."""

from __future__ import annotations

import pytest
import torch

from symmetry_engine.graph.analysis import analyze
from symmetry_engine.graph.matrix import rotation_commutant_basis
from symmetry_engine.graph.matrix_certify import certify_matrix
from symmetry_engine.matrix_symmetry import GLSymmetry

pytest.importorskip("transformers")
from tests.hf_models import BUILDERS, LAYERS  # noqa: E402


def rows(offset: int, head: int, d: int) -> tuple[int, ...]:
    return tuple(range(offset + head * d, offset + (head + 1) * d))


def expected(name: str, layout, i: int) -> set:
    """(note kind, member signature) of every group layer ``i`` must have."""
    p = layout.layer_prefix.format(i=i)
    q, k, v, o = (p + n for n in layout.qkv)
    d, H, G = layout.head_dim, layout.heads, layout.kv_heads
    E = H * d
    # GPT-2's Conv1D keeps weights as [in, out]: output features on axis 1, input features on axis 0
    out_axis, in_axis = (1, 0) if name == "gpt2" else (0, 1)
    koff, voff = (E, 2 * E) if name == "gpt2" else (0, 0)
    bias = name != "llama"
    want = set()
    for g in range(G):
        qk = []
        for h in range(g * H // G, (g + 1) * H // G):
            qk.append((q, out_axis, rows(0, h, d), "M"))
            if bias:
                qk.append((q.replace("weight", "bias"), 0, rows(0, h, d), "M"))
        qk.append((k, out_axis, rows(koff, g, d), "M^-T"))
        if bias:
            qk.append((k.replace("weight", "bias"), 0, rows(koff, g, d), "M^-T"))
        vo = [(v, out_axis, rows(voff, g, d), "M")] + ([(v.replace("weight", "bias"), 0, rows(voff, g, d), "M")] if bias else [])
        vo += [(o, in_axis, rows(0, h, d), "M^-T") for h in range(g * H // G, (g + 1) * H // G)]
        want |= {("qk", tuple(sorted(qk))), ("vo", tuple(sorted(vo)))}
    return want


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_head_family_found_and_certified(name: str, attn: str) -> None:
    torch.manual_seed(0)
    model, x, layout = BUILDERS[name](attn)
    assert model.m.config._attn_implementation == attn
    result = analyze(model, x)
    # the matrix certificate (the diagonal one's integer-token inputs are another engineer's part)
    certs = certify_matrix(model, x, result.matrix_symmetries)
    got = {("qk" if "query" in s.note else "vo", tuple(sorted((m.param, m.axis, m.indices, m.act) for m in s.members)))
           for s in result.matrix_symmetries}
    want = set().union(*(expected(name, layout, i) for i in range(LAYERS)))
    assert got == want
    assert len(result.matrix_symmetries) == LAYERS * 2 * layout.kv_heads
    for s in result.matrix_symmetries:
        if layout.rotary and "query" in s.note:
            d = layout.head_dim
            pairs = [(j, j + d // 2) for j in range(d // 2)]
            assert s.basis == tuple(tuple(tuple(r) for r in b) for b in rotation_commutant_basis(d, pairs))
        else:
            assert s.basis is None
    assert len(certs) == len(result.matrix_symmetries)
    assert all(c.certified for c in certs), [c for c in certs if not c.certified]
    assert max(c.loss_rel_joint for c in certs) < 1e-10
    # JSON round trip: what an outside program reads is what was certified
    data = result.to_json()
    assert data["format"] == "nmech-analysis/2"
    assert [GLSymmetry.from_json(m) for m in data["matrix_symmetries"]] == result.matrix_symmetries


def test_llama_full_gl_on_rotary_heads_is_not_a_symmetry() -> None:
    """Without the rotary restriction the Q/K action changes the loss: the subgroup is needed."""
    torch.manual_seed(0)
    model, x, _ = BUILDERS["llama"]()
    qk = [s for s in analyze(model, x).matrix_symmetries if "query" in s.note]
    (cert,) = certify_matrix(model, x, [GLSymmetry(qk[0].r, qk[0].members)])
    assert cert.loss_rel_joint > 1e-8 and not cert.certified


def test_json_applied_by_an_outside_program() -> None:
    """docs/json_schema.md's recipe, in numpy only (no symmetry_engine import), applied to GPT-2's groups
    (Conv1D weights on axis 1, a packed c_attn): the float64 loss does not move."""
    import numpy as np
    import torch.nn.functional as F
    from scipy.linalg import expm

    torch.manual_seed(0)
    model, x, _ = BUILDERS["gpt2"]()
    data = analyze(model, x).to_json()
    model = model.double().eval()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for g in data["matrix_symmetries"]:
        r = g["r"]
        M = (expm(sum(c * np.asarray(b) for c, b in zip(0.5 * rng.standard_normal(len(g["basis"])), g["basis"])))
             if g["basis"] is not None else np.eye(r) + 0.3 * rng.standard_normal((r, r)))
        for m in g["members"]:
            p, axis, idx = state[m["param"]], m["axis"], m["indices"]
            v = np.moveaxis(np.take(p, idx, axis), axis, 0)
            new = ((M if m["act"] == "M" else np.linalg.inv(M).T) @ v.reshape(r, -1)).reshape(v.shape)
            moved = np.moveaxis(p, axis, 0)           # a view: writing it writes p
            moved[idx] = new
    y = torch.randint(0, 32, x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        after = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    assert len(data["matrix_symmetries"]) == 8
    assert abs(float(after - before)) <= 1e-10 * abs(float(before))
