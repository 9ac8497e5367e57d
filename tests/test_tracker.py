"""Tracker: recorded statistics against direct computations from the weights, and the exact laws.

The helpers here (toy model, hand-written symmetries, training loop, direct group statistics) are also
imported by test_evaluate.py and test_report.py.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from symmetry_engine.numeric.runlog import read_run
from symmetry_engine.symmetry import Member, Symmetry
from symmetry_engine.numeric.tracker import Tracker, track

HW = 4


class Toy(nn.Module):
    """Conv→BN→ReLU→Conv→ReLU→flatten→Linear on 3×4×4 inputs: every symmetry kind appears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3 * HW * HW, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def toy_symmetries() -> list[Symmetry]:
    """Written by hand following docs/architecture.md (mixed kinds, interleaved on purpose)."""
    syms = [Symmetry("translation", (Member("fc.weight", 1, (j,)),), "fc", j) for j in range(3 * HW * HW)]
    syms.append(Symmetry("translation", (Member("fc.bias"),), "fc.bias"))
    for c in range(4):
        syms.append(Symmetry("scale", (Member("conv1.weight", 0, (c,)), Member("conv1.bias", 0, (c,))), "conv1", c,
                             extra={"normalizer": "aten.batch_norm", "eps": 1e-5}))  # BN's ε breaks it slightly
        syms.append(Symmetry("translation", (Member("conv1.bias", 0, (c,)),), "conv1.bias", c))
        syms.append(Symmetry("rescale", (Member("bn.weight", 0, (c,)), Member("bn.bias", 0, (c,)),
                                         Member("conv2.weight", 1, (c,), -1)), "bn", c))
    for c in range(3):
        syms.append(Symmetry("rescale", (Member("conv2.weight", 0, (c,)), Member("conv2.bias", 0, (c,)),
                                         Member("fc.weight", 1, tuple(range(c * HW * HW, (c + 1) * HW * HW)), -1)),
                             "conv2", c))
    return syms


def make_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy().to(dtype)


def batches(n_steps: int, dtype: torch.dtype = torch.float64, batch: int = 16):
    g = torch.Generator().manual_seed(123)
    X = torch.randn(64, 3, HW, HW, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 5, (64,), generator=g)
    for n in range(n_steps):
        i = (n * batch) % 64
        yield X[i:i + batch], y[i:i + batch]


def direct(state: dict[str, torch.Tensor], syms: list[Symmetry], grads: dict | None = None,
           new_state: dict | None = None) -> list[dict[str, float]]:
    """Per-group statistics by a plain loop over members (the oracle)."""
    out = []
    for s in syms:
        r: dict[str, float] = {}
        for m in s.members:
            th = state[m.param].double()[m.index(state[m.param].dim())]
            g = grads[m.param].double()[m.index(state[m.param].dim())] if grads else None
            if s.kind == "translation":
                r["s"] = r.get("s", 0.0) + m.sign * th.sum().item()
                r["A"] = r.get("A", 0.0) + th.abs().sum().item()
                if g is not None:
                    r["P"] = r.get("P", 0.0) + m.sign * g.sum().item()
            else:
                r["N"] = r.get("N", 0.0) + m.sign * (th * th).sum().item()
                r["M"] = r.get("M", 0.0) + (th * th).sum().item()
                if g is not None:
                    r["Q"] = r.get("Q", 0.0) + m.sign * (g * th).sum().item()
                    r["G"] = r.get("G", 0.0) + m.sign * (g * g).sum().item()
                if new_state is not None:
                    d = new_state[m.param].double()[m.index(state[m.param].dim())] - th
                    r["D"] = r.get("D", 0.0) + m.sign * (d * d).sum().item()
                    r["U"] = r.get("U", 0.0) + m.sign * (th * d).sum().item()
        out.append(r)
    return out


def train(run_dir: Path | None, opt_kw: dict, n_steps: int = 30, dtype=torch.float64, schedule: bool = False,
          oracle: bool = False, flush_every: int = 7, model: nn.Module | None = None, tracker_state=None,
          start: int = 0, stop: int | None = None, close: bool = True, checkpoint_at: int | None = None):
    """Train the toy with a tracker; returns (model, optimizer, tracker, oracle records, checkpoint)."""
    model = model or make_model(dtype)
    opt = torch.optim.SGD(model.parameters(), **opt_kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5) if schedule else None
    syms = toy_symmetries()
    tr = Tracker(model, opt, run_dir, syms, flush_every=flush_every) if run_dir is not None else None
    records, ckpt = [], None
    for n, (xb, yb) in enumerate(batches(n_steps, dtype)):
        if n < start:
            continue
        if stop is not None and n >= stop:
            break
        if checkpoint_at == n:
            ckpt = {"step": n, "model": {k: v.clone() for k, v in model.state_dict().items()},
                    "optimizer": copy.deepcopy(opt.state_dict()), "sched": sched.state_dict() if sched else None,
                    "tracker": tr.state_dict() if tr else None}
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if tr is not None:
            tr.record_loss(loss)
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
        lr = opt.param_groups[0]["lr"]
        opt.step()
        if sched:
            sched.step()
        if oracle:
            after = {k: p.detach().clone() for k, p in model.named_parameters()}
            records.append((lr, loss.item(), direct(before, syms, grads, after)))
    if oracle:
        records.append((None, None, direct({k: p.detach() for k, p in model.named_parameters()}, syms)))
    if tr is not None and close:
        tr.close()
    return model, opt, tr, records, ckpt


MOMENTUM = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=5e-3)


def rel(a, b, scale) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / scale))


@pytest.mark.parametrize("opt_kw,schedule", [(MOMENTUM, True), (dict(lr=0.1, weight_decay=1e-2), False),
                                             (dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), True)],
                         ids=["momentum", "plain", "nesterov"])
def test_recorded_statistics_equal_direct_computation(tmp_path, opt_kw, schedule):
    *_, records, _ = train(tmp_path / "run", opt_kw, n_steps=25, schedule=schedule, oracle=True)
    log = read_run(tmp_path / "run")
    syms = toy_symmetries()
    assert log.closed and log.T == 25 and not log.warnings
    np.testing.assert_array_equal(log.steps, np.arange(26))
    np.testing.assert_allclose(log.lrs, [r[0] for r in records[:-1]], rtol=0, atol=0)
    np.testing.assert_allclose(log.losses, [r[1] for r in records[:-1]], rtol=1e-15)
    for kind, cols in log.stats.items():
        for j, gi in enumerate(log.groups[kind]):
            for col, full in cols.items():
                arr = full[:, j]
                want = [rec[2][gi].get(col, np.nan) for rec in records]
                scale = max(1.0, np.nanmax(np.abs(log.stats[kind]["A" if kind == "translation" else "M"][:, j])))
                if col in ("P", "Q", "G", "D"):
                    assert np.isnan(arr[-1])
                    arr, want = arr[:-1], want[:-1]
                assert rel(arr, want, scale) <= 1e-12, (kind, j, col)


def test_algebra_and_momentum_recurrence_hold_on_recorded_statistics(tmp_path):
    *_, records, _ = train(tmp_path / "run", MOMENTUM, n_steps=30, schedule=True, oracle=True)
    log = read_run(tmp_path / "run")
    beta, d, lam = MOMENTUM["momentum"], MOMENTUM["dampening"], MOMENTUM["weight_decay"]
    eta = log.lrs
    assert eta[0] == 0.05 and eta[-1] == 0.05 * 0.5 ** 4  # the schedule reached the log
    for kind in ("scale", "rescale"):
        st = log.stats[kind]
        N, Q, D, M = st["N"], st["Q"], st["D"], st["M"]
        scale = M.max(0)
        U_direct = np.array([[records[n][2][gi]["U"] for gi in log.groups[kind]] for n in range(log.T)])
        # algebra with U measured independently from the weights
        assert rel(N[1:], N[:-1] + 2 * U_direct + D[:-1], scale) <= 1e-12
        # momentum recurrence of theory.md §5 on the recorded statistics (U from the algebra)
        U = (N[1:] - N[:-1] - D[:-1]) / 2
        pred = np.empty_like(U)
        pred[0] = -eta[0] * (lam * N[0] + Q[0])
        for n in range(1, log.T):
            pred[n] = beta * eta[n] / eta[n - 1] * (U[n - 1] + D[n - 1]) - eta[n] * (1 - d) * (lam * N[n] + Q[n])
        assert rel(U, pred, scale) <= 1e-12
        assert np.abs(U).max() / scale.max() > 1e-4  # the check is not vacuous
    # translation, momentum: u_1 = λ s_0 + P_0, u_{n+1} = β u_n + (1−d)(λ s_n + P_n), s_{n+1} = s_n − η_n u_{n+1}
    st = log.stats["translation"]
    s, P = st["s"], st["P"]
    u = lam * s[0] + P[0]
    s_pred = [s[0]]
    for n in range(log.T):
        if n:
            u = beta * u + (1 - d) * (lam * s[n] + P[n])
        s_pred.append(s[n] - eta[n] * u)
    assert rel(s, np.array(s_pred), st["A"].max(0)) <= 1e-12
    assert np.abs(P[:-1]).max() < 1e-12  # softmax / BN translation symmetry: ⟨ĝ, 1_A⟩ = 0


def test_plain_sgd_exact_law(tmp_path):
    opt_kw = dict(lr=0.1, weight_decay=1e-2)
    train(tmp_path / "run", opt_kw, n_steps=30)
    log = read_run(tmp_path / "run")
    eta, lam = log.lrs[:, None], opt_kw["weight_decay"]
    assert log.meta["optimizer"] == {"rule": "sgd", "optimizer_class": "SGD", "lr": 0.1, "momentum": 0.0,
                                     "dampening": 0.0, "nesterov": False, "weight_decay": 0.01,
                                     "decoupled_weight_decay": False}
    assert [c.param_group for c in log.classes] == [0] and np.all(log.hp["weight_decay"] == 0.01)
    assert log.meta["tracker"]["delta_source"] == ["update_rule"]
    for kind in ("scale", "rescale"):
        st = log.stats[kind]
        N, Q, G, D = st["N"], st["Q"], st["G"], st["D"]
        pred = (1 - eta * lam) ** 2 * N[:-1] + eta ** 2 * G[:-1] - 2 * eta * (1 - eta * lam) * Q[:-1]
        assert rel(N[1:], pred, st["M"].max(0)) <= 1e-12
        # plain SGD: Δ = −η(ĝ + λθ), so D = η²(G + 2λQ + λ²N) (signed sums)
        assert rel(D[:-1], eta ** 2 * (G[:-1] + 2 * lam * Q[:-1] + lam ** 2 * N[:-1]), st["M"].max(0)) <= 1e-12
    st = log.stats["translation"]
    assert rel(st["s"][1:], (1 - eta * lam) * st["s"][:-1] - eta * st["P"][:-1], st["A"].max(0)) <= 1e-12


def test_delta_sources_are_chosen_per_optimizer(tmp_path):
    cases = [(MOMENTUM, ["momentum_buffer"]), (dict(lr=0.1), ["update_rule"]),
             (dict(lr=0.1, momentum=0.5, nesterov=True), ["snapshot"])]
    for i, (kw, want) in enumerate(cases):
        train(tmp_path / str(i), kw, n_steps=2)
        assert read_run(tmp_path / str(i)).meta["tracker"]["delta_source"] == want


def test_float32_model_reduces_in_float64(tmp_path):
    *_, records, _ = train(tmp_path / "run", MOMENTUM, n_steps=12, dtype=torch.float32, oracle=True)
    log = read_run(tmp_path / "run")
    assert log.meta["dtype"] == "float32"
    st = log.stats["scale"]
    want = np.array([[r[2][gi]["N"] for gi in log.groups["scale"]] for r in records])
    assert rel(st["N"], want, st["M"].max(0)) <= 1e-12  # float64 sums of float32 weights
    wantD = np.array([[r[2][gi]["D"] for gi in log.groups["scale"]] for r in records[:-1]])
    # D from the momentum buffer vs the rounded float32 update: agree to float32 rounding of θ
    assert rel(st["D"][:-1], wantD, wantD.max(0)) <= 1e-3


def test_resume_from_state_dict_continues_log_identically(tmp_path):
    train(tmp_path / "a", MOMENTUM, n_steps=20, schedule=True, flush_every=4)
    ref = (tmp_path / "a" / "stats.bin").read_bytes()
    # run b: checkpoint at step 9, keep training to step 14, then "crash" with a torn write
    model, opt, tr, _, ck = train(tmp_path / "b", MOMENTUM, n_steps=20, schedule=True, flush_every=4,
                                  stop=14, close=False, checkpoint_at=9)
    tr.flush()
    with open(tmp_path / "b" / "stats.bin", "ab") as fh:
        fh.write(b"\x00" * 13)
    assert read_run(tmp_path / "b").steps[-1] == 13
    model2 = make_model()
    model2.load_state_dict(ck["model"])
    opt2 = torch.optim.SGD(model2.parameters(), **MOMENTUM)
    opt2.load_state_dict(ck["optimizer"])
    sched = torch.optim.lr_scheduler.StepLR(opt2, step_size=7, gamma=0.5)
    sched.load_state_dict(ck["sched"])
    tr2 = Tracker(model2, opt2, tmp_path / "b", toy_symmetries(), flush_every=4)
    tr2.load_state_dict(ck["tracker"])
    assert read_run(tmp_path / "b").steps[-1] == 8  # steps ≥ 9 were cut, nothing before
    for n, (xb, yb) in enumerate(batches(20)):
        if n < 9:
            continue
        opt2.zero_grad()
        loss = F.cross_entropy(model2(xb), yb)
        loss.backward()
        tr2.record_loss(loss)
        opt2.step()
        sched.step()
    tr2.close()
    assert (tmp_path / "b" / "stats.bin").read_bytes() == ref


def test_context_manager_leaves_resumable_log_on_error(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyboardInterrupt):
        with Tracker(model, opt, tmp_path / "r", toy_symmetries(), flush_every=100) as tr:
            for n, (xb, yb) in enumerate(batches(5)):
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            raise KeyboardInterrupt
    log = read_run(tmp_path / "r")
    assert not log.closed and log.steps[-1] == 4 and "not closed" in log.warning
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks  # hooks detached


def test_track_and_argument_errors(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="example_inputs"):
        track(model, opt, tmp_path / "x")
    bad = [Symmetry("scale", (Member("nope.weight", 0, (0,)),))]
    with pytest.raises(ValueError, match="not a parameter"):
        Tracker(model, opt, tmp_path / "x", bad)
    bad = [Symmetry("scale", (Member("fc.weight", 0, (7,)),))]
    with pytest.raises(ValueError, match="out of range"):
        Tracker(model, opt, tmp_path / "x", bad)
    tr = track(model, opt, tmp_path / "t", torch.zeros(2, 3, HW, HW, dtype=torch.float64),
               symmetries=toy_symmetries(), flush_every=3)
    xb, yb = next(batches(1))
    F.cross_entropy(model(xb), yb).backward()
    opt.step()
    tr.close()
    log = read_run(tmp_path / "t")
    assert log.meta["tracker"]["loss"] == "cross_entropy" and log.meta["tracker"]["input_shape"] == [3, HW, HW]
    assert math.isnan(log.losses[0]) and log.diverged_at is None
    # an existing log is not overwritten by accident
    with pytest.raises(Exception, match="already holds a run log"):
        tr = Tracker(make_model(), opt, tmp_path / "t", toy_symmetries())
        tr.flush()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_matches_cpu_run(tmp_path):
    """The same code path on the GPU: statistics agree with a CPU run of the same float64 training."""
    logs = {}
    for dev in ("cpu", "cuda"):
        model = make_model().to(dev)
        opt = torch.optim.SGD(model.parameters(), **MOMENTUM)
        tr = Tracker(model, opt, tmp_path / dev, toy_symmetries(), flush_every=4)
        for xb, yb in batches(12):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb.to(dev)), yb.to(dev))
            loss.backward()
            tr.record_loss(loss)
            opt.step()
        tr.close()
        logs[dev] = read_run(tmp_path / dev)
    assert logs["cuda"].meta["device"].startswith("cuda")
    for kind, cols in logs["cpu"].stats.items():
        for col, arr in cols.items():
            np.testing.assert_allclose(logs["cuda"].stats[kind][col], arr, rtol=1e-9, atol=1e-12)


def test_track_finds_the_symmetries_with_the_analyzer(tmp_path):
    """track(symmetries=None) calls analyze(): on the toy it must find exactly the hand-written groups."""
    from symmetry_engine.symmetry import canonical_form

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xb, yb = next(batches(1))
    tr = track(model, opt, tmp_path / "r", example_inputs=xb[:2])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {canonical_form(s, shapes) for s in tr.symmetries} == {canonical_form(s, shapes) for s in toy_symmetries()}
    F.cross_entropy(model(xb), yb).backward()
    opt.step()
    tr.close()
    assert read_run(tmp_path / "r").T == 1


def test_abort_keeps_recorded_steps_and_detaches(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tr = Tracker(model, opt, tmp_path / "r", toy_symmetries(), flush_every=100)
    for xb, yb in batches(6):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    tr.abort()
    tr.abort()  # idempotent
    assert tr.closed
    log = read_run(tmp_path / "r")
    assert not log.closed and list(log.steps) == [0, 1, 2, 3, 4, 5]
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_buffered_records_are_capped_in_bytes(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    syms = toy_symmetries()
    tr = Tracker(model, opt, tmp_path / "r", syms, flush_every=50, max_pending_bytes=1)  # cap below one record
    for n, (xb, yb) in enumerate(batches(4)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        assert (tmp_path / "r" / "stats.bin").stat().st_size == (n + 1) * 8 * tr.record_size  # flushed each step
    tr.close()
