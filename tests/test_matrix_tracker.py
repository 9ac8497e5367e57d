"""Matrix symmetries on real torch models: hand-built member lists certified, tracked and evaluated.

Models: a Linear-pair MLP, nn.MultiheadAttention (packed in-projection) and a hand-written single-head
attention with explicit matmul-softmax.  Float64 runs with SGD (momentum, dampening, weight decay, a
schedule) must satisfy the exact laws to ≤ 1e-12; a member list that is not a symmetry (a query head
paired with another head's keys) must show err_law and breaking far above round-off.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from symmetry_engine.matrix_symmetry import (GLMember, GLSymmetry, attention_heads, from_pair,
                                             multihead_attention, rope_basis)
from symmetry_engine.numeric.matrix_evaluate import evaluate_matrix_run
from symmetry_engine.numeric.matrix_tracker import DATA_FILE, META_FILE, MatrixTracker
from symmetry_engine.numeric.matrix_views import apply_matrix, random_group_element
from symmetry_engine.numeric.runfile import RunLogError


class PairMLP(nn.Module):
    """Linear(6→5) → Linear(5→4) → ReLU → Linear(4→3): one GL(5) pair (0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(self.a(x))))


class MHA(nn.Module):
    def __init__(self, E: int = 8, H: int = 2, residual: bool = False) -> None:
        super().__init__()
        self.attn, self.head, self.residual = nn.MultiheadAttention(E, H, batch_first=True), nn.Linear(E, 3), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attn(x, x, x, need_weights=False)[0]
        return self.head((x + h if self.residual else h).mean(1))


class SingleHead(nn.Module):
    """softmax(q kᵀ/√d) v, then an output projection; explicit matmuls."""

    def __init__(self, E: int = 6, d: int = 3) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(E, d), nn.Linear(E, d), nn.Linear(E, d), nn.Linear(d, E)
        self.head, self.d = nn.Linear(E, 3), d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / self.d ** 0.5, dim=-1)
        return self.head(self.o(a @ self.v(x)).mean(1))


def single_head_members() -> list[GLSymmetry]:
    return attention_heads(("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 1, 3, "attn",
                           q_bias=("q.bias", 0), k_bias=("k.bias", 0), v_bias=("v.bias", 0))


def wrong_head() -> GLSymmetry:
    """Head 0's queries with head 1's keys (nn.MultiheadAttention E = 8, H = 2): not a symmetry."""
    q, k = tuple(range(0, 4)), tuple(range(12, 16))
    return GLSymmetry(4, (GLMember("attn.in_proj_weight", 0, q, "M"), GLMember("attn.in_proj_bias", 0, q, "M"),
                          GLMember("attn.in_proj_weight", 0, k, "M^-T"), GLMember("attn.in_proj_bias", 0, k, "M^-T")),
                      "attn", "wrong: head 0 queries with head 1 keys")


CASES = {
    "pair_mlp": (PairMLP, (16, 6), lambda: [from_pair("a.weight", "a.bias", "b.weight", 5)]),
    "mha": (MHA, (16, 5, 8), lambda: multihead_attention("attn", 8, 2)),
    "single_head": (SingleHead, (16, 5, 6), single_head_members),
}


def data(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((64,) + shape[1:], generator=g, dtype=torch.float64), torch.randint(0, 3, (64,), generator=g)


def loss_of(model: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(functional_call(model, params, (x,)), y))


@pytest.mark.parametrize("case", sorted(CASES))
def test_member_lists_are_symmetries(case: str) -> None:
    """A random group element applied through the member form leaves the loss unchanged (float64)."""
    cls, shape, members = CASES[case]
    torch.manual_seed(0)
    model = cls().double()
    x, y = data(shape)
    params = {k: v.detach() for k, v in model.named_parameters()}
    before = loss_of(model, params, x, y)
    gen = torch.Generator().manual_seed(1)
    for sym in members():
        after = loss_of(model, apply_matrix(params, sym, random_group_element(sym, gen)), x, y)
        assert abs(after - before) <= 1e-12 * abs(before), sym.key


def test_wrong_member_lists_change_the_loss() -> None:
    torch.manual_seed(0)
    model = MHA().double()
    x, y = data((16, 5, 8))
    params = {k: v.detach() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(2)
    assert abs(loss_of(model, apply_matrix(params, wrong_head(), random_group_element(wrong_head(), gen)), x, y)
               - loss_of(model, params, x, y)) > 1e-4
    # V/O with act M on W_O's columns instead of M⁻ᵀ
    vo = multihead_attention("attn", 8, 2)[1]
    bad = GLSymmetry(4, vo.members[:-1] + (GLMember(vo.members[-1].param, 1, vo.members[-1].indices, "M"),))
    assert abs(loss_of(model, apply_matrix(params, bad, random_group_element(bad, gen)), x, y)
               - loss_of(model, params, x, y)) > 1e-4


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, run_dir, symmetries, steps: int = 60,
          momentum: float = 0.9, dampening: float = 0.1, weight_decay: float = 0.01, lr: float = 0.05,
          seed: int = 0, **kw) -> MatrixTracker:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 1.0 if n < steps // 2 else 0.3 + 0.01 * (n % 7))
    g = torch.Generator().manual_seed(seed)
    tracker = MatrixTracker(model, opt, run_dir, symmetries, **kw)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    tracker.close()
    return tracker


@pytest.mark.parametrize("momentum,dampening", [(0.0, 0.0), (0.9, 0.1)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_runs_satisfy_the_exact_laws(case: str, momentum: float, dampening: float, tmp_path) -> None:
    cls, shape, members = CASES[case]
    torch.manual_seed(3)
    model = cls().double()
    x, y = data(shape, 3)
    train(model, x, y, tmp_path, members(), momentum=momentum, dampening=dampening, flush_every=7)
    ev = evaluate_matrix_run(tmp_path)
    assert ev is not None and ev["steps"] == 60 and ev["closed"]
    for row in ev["symmetries"]:
        assert row["err_exact"] <= 1e-12 and row["err_law"] <= 1e-12, row
        assert row["breaking"] <= 1e-12 and row["verdict"] == "holds", row
        assert row["drift"] > 1e-4, row        # C moved: the check is not vacuous
        assert row["laws"] == row["r"] * (row["r"] + 1) // 2
    assert ev["summary"]["verdicts"] == {"holds": len(members())}
    json.dumps(ev, allow_nan=False)              # plain JSON: non-finite numbers are null


def test_a_member_list_that_is_not_a_symmetry_fails(tmp_path) -> None:
    torch.manual_seed(4)
    model = MHA().double()
    x, y = data((16, 5, 8), 4)
    train(model, x, y, tmp_path, multihead_attention("attn", 8, 2) + [wrong_head()])
    ev = evaluate_matrix_run(tmp_path)
    rows = {r["note"]: r for r in ev["symmetries"]}
    bad = rows["wrong: head 0 queries with head 1 keys"]
    assert bad["err_exact"] <= 1e-12                       # the identity holds for any member list
    assert bad["err_law"] > 1e-4 and bad["breaking"] > 1e-3 and bad["verdict"] == "broken"
    assert all(r["verdict"] == "holds" for k, r in rows.items() if k != bad["note"])


def test_rotary_subgroup_on_full_attention_is_broken_in_gl_but_holds_where_exact(tmp_path) -> None:
    """A subgroup of a genuine GL symmetry is a symmetry too: the projected law holds (2 block traces)."""
    torch.manual_seed(5)
    model = MHA().double()
    x, y = data((16, 5, 8), 5)
    qk = multihead_attention("attn", 8, 2)[0]
    sub = GLSymmetry(4, qk.members, "attn", "rotary subgroup", tuple(tuple(map(tuple, b)) for b in rope_basis(4)))
    train(model, x, y, tmp_path, [sub])
    (row,) = evaluate_matrix_run(tmp_path)["symmetries"]
    assert row["subgroup"] and row["conserved_functions"] == 2 and row["laws"] == 2
    assert row["err_law"] <= 1e-12 and row["verdict"] == "holds"


def test_float32_run(tmp_path) -> None:
    torch.manual_seed(6)
    model = MHA()
    x, y = data((16, 5, 8), 6)
    train(model, x.float(), y, tmp_path, multihead_attention("attn", 8, 2))
    ev = evaluate_matrix_run(tmp_path)
    assert ev["dtype"] == "float32"
    for row in ev["symmetries"]:
        assert row["err_exact"] <= 1e-5 and row["breaking"] <= 1e-4 and row["verdict"] == "holds", row


def test_beside_the_scalar_tracker_and_files(tmp_path) -> None:
    """The matrix tracker writes only matrix.json/matrix.bin; the scalar tracker keeps its own files."""
    from symmetry_engine.numeric.tracker import Tracker
    from symmetry_engine.graph.analysis import analyze

    torch.manual_seed(7)
    model = PairMLP().double()
    x, y = data((16, 6), 7)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scalar = Tracker(model, opt, tmp_path, analyze(model, x[:4]).symmetries)
    res = analyze(model, x[:4])
    mat = MatrixTracker(model, opt, tmp_path, [m.to_json() for m in res.matrix_symmetries])  # pair form accepted
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    mat.close()
    scalar.close()
    assert {p.name for p in tmp_path.iterdir()} >= {"run.json", "stats.bin", META_FILE, DATA_FILE}
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["symmetries"][0]["members"][-1] == {"param": "b.weight", "axis": 1, "indices": [0, 1, 2, 3, 4],
                                                    "act": "M^-T"}
    (row,) = evaluate_matrix_run(tmp_path)["symmetries"]
    assert row["err_exact"] <= 1e-12 and row["verdict"] == "holds"


def test_no_matrix_log_gives_none(tmp_path) -> None:
    assert evaluate_matrix_run(tmp_path) is None


def test_refuses_existing_log_and_bad_members(tmp_path) -> None:
    model = PairMLP().double()
    x, y = data((16, 6))
    train(model, x, y, tmp_path, CASES["pair_mlp"][2](), steps=3)
    before = (tmp_path / DATA_FILE).read_bytes()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RunLogError, match="already holds a matrix log"):
        t = MatrixTracker(model, opt, tmp_path, CASES["pair_mlp"][2]())
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert (tmp_path / DATA_FILE).read_bytes() == before
    with pytest.raises(ValueError, match="not a parameter"):
        MatrixTracker(model, opt, tmp_path / "x", [GLSymmetry(2, (GLMember("nope", 0, (0, 1)),))])
    with pytest.raises(ValueError, match="out of range"):
        MatrixTracker(model, opt, tmp_path / "y", [GLSymmetry(2, (GLMember("a.weight", 0, (0, 9)),))])
    t._detach()


def test_resume_reproduces_the_uninterrupted_log(tmp_path) -> None:
    torch.manual_seed(8)
    model0 = MHA().double()
    x, y = data((16, 5, 8), 8)
    syms = multihead_attention("attn", 8, 2)

    def run(model, opt, tracker, steps, start=0):
        for n in range(start, steps):
            g = torch.Generator().manual_seed(n)
            idx = torch.randint(0, len(x), (16,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()

    m1 = copy.deepcopy(model0)
    o1 = torch.optim.SGD(m1.parameters(), lr=0.05, momentum=0.9)
    t1 = MatrixTracker(m1, o1, tmp_path / "full", syms, flush_every=4)
    run(m1, o1, t1, 30)
    t1.close()

    m2 = copy.deepcopy(model0)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9)
    t2 = MatrixTracker(m2, o2, tmp_path / "resumed", syms, flush_every=4)
    run(m2, o2, t2, 20)
    ckpt = (copy.deepcopy(m2.state_dict()), copy.deepcopy(o2.state_dict()), t2.state_dict())
    run(m2, o2, t2, 26, 20)                     # steps after the checkpoint, then a crash
    t2.abort()
    m3 = copy.deepcopy(model0)
    m3.load_state_dict(ckpt[0])
    o3 = torch.optim.SGD(m3.parameters(), lr=0.05, momentum=0.9)
    o3.load_state_dict(ckpt[1])
    t3 = MatrixTracker(m3, o3, tmp_path / "resumed", syms, flush_every=4)
    t3.load_state_dict(ckpt[2])
    run(m3, o3, t3, 30, 20)
    t3.close()
    assert (tmp_path / "full" / DATA_FILE).read_bytes() == (tmp_path / "resumed" / DATA_FILE).read_bytes()


def test_optimizer_without_a_law(tmp_path) -> None:
    """Adam: no matrix law is derived, but the symmetry (breaking) is still measured from D-free statistics."""
    torch.manual_seed(9)
    model = MHA().double()
    x, y = data((16, 5, 8), 9)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with MatrixTracker(model, opt, tmp_path, multihead_attention("attn", 8, 2)):
        for _ in range(10):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    ev = evaluate_matrix_run(tmp_path)
    for row in ev["symmetries"]:
        assert row["verdict"] == "no law" and row["err_law"] is None and "adam" in row["reason"]
        assert row["breaking"] <= 1e-12
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert {b["Gamma_or_D"] for b in meta["blocks"]} == {"D"}


def test_record_layout_and_subgroup_coordinates(tmp_path) -> None:
    """GL(r) blocks store upper triangles (3·r(r+1)/2 + 4 numbers); a rotary subgroup r/2 coordinates."""
    torch.manual_seed(10)
    model = MHA().double()
    x, y = data((16, 5, 8), 10)
    qk = multihead_attention("attn", 8, 2)[0]
    sub = GLSymmetry(4, qk.members, "attn", "rotary", tuple(tuple(map(tuple, b)) for b in rope_basis(4)))
    t = train(model, x, y, tmp_path, [qk, sub], steps=5, momentum=0.0, dampening=0.0)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert [b["coordinates"] for b in meta["blocks"]] == [10, 2]
    assert t.record_size == 1 + (3 * 10 + 4) + (3 * 2 + 4)
    assert [b["Gamma_or_D"] for b in meta["blocks"]] == ["Gamma", "Gamma"]
    raw = (tmp_path / DATA_FILE).read_bytes()
    assert len(raw) == 8 * t.record_size * 6        # 5 steps + the final state record
    # the GL block's C coordinates are C's upper triangle, straight from the weights at the final state
    import numpy as np
    rec = np.frombuffer(raw, "<f8").reshape(6, -1)[-1]
    W = dict(model.named_parameters())
    X = torch.cat([W["attn.in_proj_weight"][0:4], W["attn.in_proj_bias"][0:4, None]], 1).detach()
    Y = torch.cat([W["attn.in_proj_weight"][8:12], W["attn.in_proj_bias"][8:12, None]], 1).detach()
    C = (X @ X.T - Y @ Y.T).numpy()
    off = meta["blocks"][0]["offset"] + 1
    assert np.allclose(rec[off:off + 10], C[np.triu_indices(4)], rtol=1e-14, atol=1e-15)
    sub_off = meta["blocks"][1]["offset"] + 1
    want = [C[0, 0] + C[1, 1], C[2, 2] + C[3, 3]]
    assert np.allclose(sorted(np.abs(rec[sub_off:sub_off + 2]) * np.sqrt(2)), sorted(np.abs(want)), rtol=1e-12)


def test_chunked_forecasts_and_unclosed_log(tmp_path, monkeypatch) -> None:
    """Forecasting symmetries one chunk at a time gives the same numbers; a crashed (unclosed) log is
    evaluated up to its last record; a small byte cap flushes before flush_every."""
    import symmetry_engine.numeric.matrix_evaluate as me

    torch.manual_seed(11)
    model = MHA().double()
    x, y = data((16, 5, 8), 11)
    train(model, x, y, tmp_path / "a", multihead_attention("attn", 8, 2), steps=20)
    whole = evaluate_matrix_run(tmp_path / "a")
    monkeypatch.setattr(me, "CHUNK_BYTES", 1)
    assert evaluate_matrix_run(tmp_path / "a") == whole

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    t = MatrixTracker(model, opt, tmp_path / "b", multihead_attention("attn", 8, 2), flush_every=50,
                      max_pending_bytes=3 * 8 * (1 + 4 * 34))
    for n in range(7):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if n == 2:    # the cap (3 records) flushed without waiting for flush_every
            assert (tmp_path / "b" / DATA_FILE).stat().st_size == 3 * 8 * t.record_size
    t.abort()
    ev = evaluate_matrix_run(tmp_path / "b")
    assert not ev["closed"] and ev["steps"] == 6      # abort flushed all 7 records; the last is the final state
    assert all(r["verdict"] == "holds" and r["err_exact"] <= 1e-12 for r in ev["symmetries"])


def test_analyzer_groups_of_grouped_query_rotary_attention_hold(tmp_path) -> None:
    """What the analyzer finds (grouped-query Q/K on the rotary subgroup, V/O GL(4) with two output blocks
    each) goes straight from its JSON into the tracker; a float64 SGD + heavy-ball run satisfies every
    exact law to ≤ 1e-12 while C moves."""
    from symmetry_engine.graph.analysis import analyze
    from tests.test_attention_matrix import Heads

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = Heads(H=4, Hkv=2, rope="half", explicit=True), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    torch.manual_seed(6)
    model = Classifier().double()
    x, y = data((16, 5, 8), 6)
    found = analyze(model, x[:2]).to_json()["matrix_symmetries"]
    assert len(found) == 4 and sum(s["basis"] is not None for s in found) == 2
    train(model, x, y, tmp_path, found)
    ev = evaluate_matrix_run(tmp_path)
    assert ev["summary"]["verdicts"] == {"holds": 4}
    for row in ev["symmetries"]:
        assert row["err_exact"] <= 1e-12 and row["err_law"] <= 1e-12 and row["drift"] > 1e-4, row
