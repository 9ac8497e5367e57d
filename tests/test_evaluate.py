"""evaluate_run: exact laws to rounding, checkpoint cross-check, error handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .test_tracker import MOMENTUM, Tracker, batches, make_model, toy_symmetries

from symmetry_engine.numeric.checkpoints import state_quantities  # noqa: E402
from symmetry_engine.numeric.evaluate import evaluate_run  # noqa: E402
from symmetry_engine.numeric.runlog import RunLogError  # noqa: E402


def run_with_checkpoints(run_dir: Path, opt_kw: dict, n_steps: int, dtype=torch.float64, every: int = 10,
                         schedule: bool = False) -> None:
    model = make_model(dtype)
    opt = torch.optim.SGD(model.parameters(), **opt_kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=9, gamma=0.7) if schedule else None
    tr = Tracker(model, opt, run_dir, toy_symmetries(), flush_every=8)
    (run_dir / "checkpoints").mkdir(parents=True)
    for n, (xb, yb) in enumerate(batches(n_steps, dtype)):
        if n % every == 0:
            torch.save({"step": n, "model": model.state_dict(), "tracker": tr.state_dict()},
                       run_dir / "checkpoints" / f"step_{n:08d}.pt")
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        tr.record_loss(loss)
        opt.step()
        if sched:
            sched.step()
    tr.close()
    torch.save({"step": n_steps, "model": model.state_dict()}, run_dir / "checkpoints" / f"step_{n_steps:08d}.pt")


@pytest.mark.parametrize("opt_kw,schedule", [(MOMENTUM, True), (dict(lr=0.1, weight_decay=1e-2), False)],
                         ids=["momentum-schedule", "plain"])
def test_float64_exact_law_errors_at_rounding(tmp_path, opt_kw, schedule):
    run_with_checkpoints(tmp_path / "r", opt_kw, 40, schedule=schedule)
    ev = evaluate_run(tmp_path / "r")
    assert set(ev.summary) == {"translation", "scale", "rescale"} and not ev.prediction_errors
    assert ev.summary["translation"]["groups"] == 53 and ev.summary["rescale"]["groups"] == 7
    for kind, s in ev.summary.items():
        assert s["exact"]["max"] <= 1e-9, (kind, s)
        # the continuous law is an approximation: visibly worse than the exact one, but close
        assert s["exact"]["max"] < s["continuous"]["max"] < 0.2, (kind, s)
    # per-group results line up with the measured series
    g = next(g for g in ev.groups if g.kind == "scale")
    assert g.final_measured == ev.series["scale"].measured[-1, 0] and g.layer == "conv1" and g.channel == 0
    assert abs(g.final_exact - g.final_measured) <= 1e-9 * g.norm
    # checkpoints: every one matches the log at its step to rounding (including the final state)
    assert [c.step for c in ev.checkpoints] == [0, 10, 20, 30, 40]
    for c in ev.checkpoints:
        assert set(c.errors) == {"translation", "scale", "rescale"} and max(c.errors.values()) <= 1e-13, c
    data = json.loads(json.dumps(ev.to_json(), allow_nan=False))
    assert data["steps"] == 40 and data["optimizer"]["momentum"] == opt_kw.get("momentum", 0.0)
    assert len(data["groups"]) == 64 and {r["layer"] for r in data["layers"]} >= {"fc", "conv1", "bn", "conv2"}


def test_float32_exact_law_errors(tmp_path):
    run_with_checkpoints(tmp_path / "r", MOMENTUM, 40, dtype=torch.float32)
    ev = evaluate_run(tmp_path / "r")
    worst = max(s["exact"]["max"] for s in ev.summary.values())
    assert worst <= 1e-4
    assert all(max(c.errors.values()) <= 1e-12 for c in ev.checkpoints)  # float64 sums of float32 weights


def test_checkpoint_mismatch_and_corruption(tmp_path):
    run_with_checkpoints(tmp_path / "r", dict(lr=0.1), 20)
    ck = tmp_path / "r" / "checkpoints"
    other = make_model(seed=5).state_dict()
    torch.save({"step": 10, "model": other}, ck / "step_00000010.pt")
    torch.save({"step": 99, "model": other}, ck / "step_00000099.pt")
    ev = evaluate_run(tmp_path / "r")
    by_step = {c.step: c for c in ev.checkpoints}
    assert by_step[10].errors["scale"] > 1e-2  # weights of another model are caught
    assert by_step[0].errors["scale"] <= 1e-13
    assert by_step[99].errors == {} and "outside the log" in by_step[99].note
    assert evaluate_run(tmp_path / "r", checkpoints=False).checkpoints == []
    (ck / "step_00000005.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(RunLogError, match=r"step_00000005.pt: cannot load checkpoint") as exc:
        evaluate_run(tmp_path / "r")
    assert "\n" not in str(exc.value)
    (ck / "step_00000005.pt").unlink()
    torch.save({"step": 5, "model": {"fc.weight": torch.zeros(5, 48)}}, ck / "step_00000005.pt")
    with pytest.raises(RunLogError, match="has no parameter 'fc.bias'"):
        evaluate_run(tmp_path / "r")


def test_diverged_run_is_cut_and_reported(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tr = Tracker(model, opt, tmp_path / "r", toy_symmetries())
    for n, (xb, yb) in enumerate(batches(12)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        if n == 8:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
    tr.close()
    ev = evaluate_run(tmp_path / "r")
    assert any("diverged" in w for w in ev.warnings)
    assert ev.steps[-1] == 8 and ev.T == 8
    assert max(s["exact"]["max"] for s in ev.summary.values()) <= 1e-9


def test_missing_run_is_one_line_error(tmp_path):
    with pytest.raises(RunLogError, match="does not exist"):
        evaluate_run(tmp_path / "nope")


def test_state_quantities_vectorised_matches_loop():
    model = make_model()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    syms = toy_symmetries()
    q = state_quantities(state, syms)
    rescale = [s for s in syms if s.kind == "rescale"]
    for j, s in enumerate(rescale):
        want = sum(m.sign * float((state[m.param][m.index(state[m.param].ndim)] ** 2).sum()) for m in s.members)
        assert abs(q["rescale"]["N"][j] - want) <= 1e-14 * q["rescale"]["M"][j]
    trans = [s for s in syms if s.kind == "translation"]
    j = next(j for j, s in enumerate(trans) if s.layer == "fc.bias")
    assert abs(q["translation"]["s"][j] - state["fc.bias"].sum()) <= 1e-15
    assert abs(q["translation"]["A"][j] - np.abs(state["fc.bias"]).sum()) <= 1e-15


def test_nesterov_snapshot_path_exact_law_and_named_missing_continuous(tmp_path):
    run_with_checkpoints(tmp_path / "r", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), 30)
    ev = evaluate_run(tmp_path / "r")
    assert ev.meta["tracker"]["delta_source"] == ["snapshot"]
    assert max(s["exact"]["max"] for s in ev.summary.values()) <= 1e-9
    assert set(ev.prediction_errors) == {"scale/continuous", "rescale/continuous"}
    assert np.isnan(ev.summary["scale"]["continuous"]["max"])
    assert json.loads(json.dumps(ev.to_json(), allow_nan=False))["summary"]["scale"]["continuous"]["max"] is None
