"""Live monitoring: ``track(..., tensorboard=DIR)`` and ``nmech train --tensorboard DIR`` write per-layer
quantities, predictions, errors and breaking while training; the event files, read back, hold the numbers
of the run's evaluation (JSON and series), and a resumed run's events end as an uninterrupted run's."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("tensorboard", reason="optional extra: pip install 'neural-mechanics[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import symmetry_engine as nm  # noqa: E402
from analyses.cli import main  # noqa: E402
from symmetry_engine.numeric.evaluate import evaluate_run  # noqa: E402
from symmetry_engine.numeric.tensorboard import INSTALL_HINT, step_breaking  # noqa: E402
from symmetry_engine.numeric.runlog import read_run  # noqa: E402


def read_back(log_dir) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(6 * 6 * 6, 4)).double()


def _loop(model, opt, tracker, start: int, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (64,), generator=g)
    for n in range(start, start + steps):
        xb, yb = x[(n % 8) * 8:(n % 8 + 1) * 8], y[(n % 8) * 8:(n % 8 + 1) * 8]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        tracker.record_loss(loss)
        opt.step()


def test_track_writes_live_scalars_equal_to_the_evaluation(tmp_path):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    tr = nm.track(model, opt, tmp_path / "run", example_inputs=torch.randn(2, 3, 8, 8, dtype=torch.float64),
                  tensorboard=tmp_path / "tb", tensorboard_every=5,
                  tensorboard_budget=float("inf"))   # no update skipped (the default keeps them under 5% of the time)
    _loop(model, opt, tr, 0, 12)
    # during training: the updates after steps 5 and 10 wrote rows 0..8 (the log's last record, 9, stands in
    # for the final state until the next one arrives)
    live = read_back(tmp_path / "tb")
    assert tr.monitor.updates == 2 and sorted(live["scale/0/quantity"]) == list(range(9))
    tr.close()
    back = read_back(tmp_path / "tb")
    ev = evaluate_run(tmp_path / "run", checkpoints=False)
    data = ev.to_json()
    log = read_run(tmp_path / "run")
    f32 = np.float32
    for kind in ("translation", "scale", "rescale"):
        ser = ev.series[kind]
        by_layer: dict[str, list[int]] = {}
        for j, s in enumerate(ser.symmetries):
            by_layer.setdefault(s.layer, []).append(j)
        brk = step_breaking(log, kind, 0, 12)
        for layer, j in by_layer.items():
            q, law = back[f"{kind}/{layer}/quantity"], back[f"{kind}/{layer}/law"]
            assert sorted(q) == list(range(13))   # every step, 0..T, once
            for n in range(13):
                assert q[n] == f32(ser.measured[n, j].sum()) and law[n] == f32(ser.law[n, j].sum())
            # against the evaluation JSON: final values and the breaking (max over steps)
            groups = [g for g in data["groups"] if g["kind"] == kind and g["layer"] == layer]
            assert q[12] == f32(sum(g["final_measured"] for g in groups))
            assert law[12] == f32(sum(g["final_law"] for g in groups))
            b = back[f"{kind}/{layer}/breaking"]   # steps 0..T−1 (the final state has no gradient)
            assert sorted(b) == list(range(12)) and all(b[n] == f32(np.max(brk[n, j])) for n in range(12))
            want = max((g["breaking"] or 0.0) for g in groups)
            assert f32(max(b.values(), default=0.0)) == f32(want)
            # rows 9..12, written at close, are normalised by the final norm (the JSON's); rows 0..8 by the
            # largest size at their update
            err = back[f"{kind}/{layer}/law_error"]
            final = np.abs(ser.measured[:, j] - ser.law[:, j]) / ser.norm[j]
            assert all(err[n] == f32(np.max(final[n])) for n in range(9, 13))
            assert f32(np.max(final[9:])) <= f32(max(g["err_law"] for g in groups))
    assert back["train/lr"][3] == f32(0.1) and back["train/loss"][7] == f32(ev.losses[7])


def test_resumed_run_rewrites_its_history_and_matches(tmp_path):
    import copy

    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    syms = nm.analyze(model, torch.randn(2, 3, 8, 8, dtype=torch.float64)).symmetries
    tr = nm.Tracker(model, opt, tmp_path / "run", syms, tensorboard=tmp_path / "tb", tensorboard_every=3,
                    tensorboard_budget=float("inf"))
    _loop(model, opt, tr, 0, 4)
    ck = {"m": copy.deepcopy(model.state_dict()), "o": copy.deepcopy(opt.state_dict()), "t": tr.state_dict()}
    _loop(model, opt, tr, 4, 4)   # steps 4..7 are lost: the process dies
    tr.abort()
    assert max(read_back(tmp_path / "tb")["scale/0/quantity"]) == 7   # records 0..7 (no close record)
    model.load_state_dict(ck["m"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(ck["o"])
    tr = nm.Tracker(model, opt, tmp_path / "run", syms, tensorboard=tmp_path / "tb", tensorboard_every=3,
                    tensorboard_budget=float("inf"))
    tr.load_state_dict(ck["t"])
    _loop(model, opt, tr, 4, 6)
    tr.close()
    back = read_back(tmp_path / "tb")
    ev = evaluate_run(tmp_path / "run", checkpoints=False)
    q = back["scale/0/quantity"]
    assert sorted(q) == list(range(11))   # the lost trajectory's events are purged, each step once
    j = [i for i, s in enumerate(ev.series["scale"].symmetries) if s.layer == "0"]
    assert all(q[n] == np.float32(ev.series["scale"].measured[n, j].sum()) for n in range(11))


def test_cli_train_tensorboard_and_missing_package(tmp_path, capsys, monkeypatch):
    argv = ["train", "mlp", "--model-kw", "widths=[8]", "--dataset", "synthetic", "--input-size", "4",
            "--steps", "6", "--batch-size", "16", "--lr", "0.05", "--no-progress", "--out", str(tmp_path / "r"),
            "--tensorboard", str(tmp_path / "tb"), "--flush-every", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    back = read_back(tmp_path / "tb")
    ev = evaluate_run(tmp_path / "r", checkpoints=False)
    assert sorted(back["train/loss"]) == list(range(6))
    assert all(back["train/loss"][n] == np.float32(ev.losses[n]) for n in range(6))
    assert any(t.startswith("rescale/") and t.endswith("/law_error") for t in back)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["train"]["tensorboard"] == str(tmp_path / "tb")
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # as if the extra were not installed
    assert main([*argv[:-4], "--out", str(tmp_path / "r2"), "--tensorboard", str(tmp_path / "tb2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nmech train: {INSTALL_HINT}" and not (tmp_path / "r2").exists()
    with pytest.raises(ImportError, match="pip install 'neural-mechanics\\[tensorboard\\]'"):
        nm.track(_net(), torch.optim.SGD(_net().parameters(), lr=0.1), tmp_path / "r3",
                 example_inputs=torch.randn(2, 3, 8, 8, dtype=torch.float64), tensorboard=tmp_path / "tb3")
    assert not (tmp_path / "r3").exists()
    monkeypatch.undo()
    assert main([*argv[:-4], "--out", str(tmp_path / "r4"), "--tensorboard", str(tmp_path / "tb4"), "--no-track"]) == 2
    assert "tensorboard needs the tracker" in capsys.readouterr().err


def test_a_failing_update_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    from symmetry_engine.numeric import evaluate as evaluate_mod

    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = nm.track(model, opt, tmp_path / "run", example_inputs=torch.randn(2, 3, 8, 8, dtype=torch.float64),
                  tensorboard=tmp_path / "tb", tensorboard_every=2, tensorboard_budget=float("inf"))

    def broken(*a, **k):
        raise ValueError("synthetic failure\nover two lines")

    monkeypatch.setattr(evaluate_mod, "evaluate_run", broken)
    with pytest.warns(RuntimeWarning, match="live TensorBoard update skipped: ValueError: synthetic failure over two"):
        _loop(model, opt, tr, 0, 6)
    assert tr.monitor.errors == ["live TensorBoard update skipped: ValueError: synthetic failure over two lines"]
    monkeypatch.undo()
    tr.close()   # the last update works again and writes every step
    assert sorted(read_back(tmp_path / "tb")["scale/0/quantity"]) == list(range(7))
