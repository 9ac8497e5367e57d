"""The tracker's per-step parameter sample (``samples.bin``, numeric/samples.py) and Figure 1 drawn from it.

What must hold: each row is θ_n's chosen entries taken before step n (and θ_T in the close row), one
parameter per tracked layer (its weight), a fixed choice that does not depend on the run, O(layers) size,
checksummed like stats.bin, cut with the log on resume, and off with ``samples=0``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import symmetry_engine as nm
from analyses.figures import lines_by_gid
from analyses.figures_run import trajectories_figure, tracker_samples
from symmetry_engine.numeric.evaluate import evaluate_run
from symmetry_engine.numeric.runfile import RunLogError
from symmetry_engine.numeric.samples import choose_entries, read_samples


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 5, 3), torch.nn.BatchNorm2d(5), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 4, 4)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (32,), generator=g)


def _train(model, opt, tracker, steps: int, start: int = 0, seen: list | None = None) -> None:
    x, y = _data()
    for n in range(start, start + steps):
        xb, yb = x[(n % 4) * 8:(n % 4 + 1) * 8], y[(n % 4) * 8:(n % 4 + 1) * 8]
        if seen is not None:
            seen.append({k: v.detach().clone() for k, v in model.named_parameters()})
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


def _tracked(path, steps=12, **kw):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, _ = _data()
    tr = nm.track(model, opt, path, example_inputs=x[:4], flush_every=3, **kw)
    seen: list = []
    _train(model, opt, tr, steps, seen=seen)
    seen.append({k: v.detach().clone() for k, v in model.named_parameters()})
    tr.close()
    return model, seen


def test_rows_are_the_parameters_before_each_step_and_at_the_end(tmp_path):
    model, seen = _tracked(tmp_path / "r")
    rs = read_samples(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "run.json").read_text())["samples"]
    # one parameter per tracked layer, its weight; 16 entries each (fewer when the tensor is smaller)
    assert rs.layers == {"0": "0.weight", "1": "1.weight", "3": "3.weight", "4": "4.weight", "7": "7.weight"}
    sizes = {n: min(16, p.numel()) for n, p in model.named_parameters()}
    assert {n: v.shape[1] for n, v in rs.values.items()} == {n: sizes[n] for n in rs.values}
    assert meta["record_size"] == 1 + sum(sizes[n] for n in rs.values) == 1 + 16 * 3 + 6 + 5
    assert list(rs.steps) == list(range(13)) and not rs.warnings
    for name, vals in rs.values.items():
        want = np.array([[float(state[name][i]) for i in rs.indices[name]] for state in seen])
        assert np.array_equal(vals, want), name
    # the choice depends on the parameter's name and shape only: the same in another run
    again = choose_entries({n: tuple(p.shape) for n, p in _net(seed=5).named_parameters()}, 16)
    assert [e["indices"] for e in again] == [e["indices"] for e in meta["params"]]
    assert all(len(set(e["indices"])) == len(e["indices"]) for e in again)
    ev = evaluate_run(tmp_path / "r", checkpoints=False)   # the sample does not change the evaluation
    assert ev.T == 12


def test_off_with_zero_and_bad_values_refused(tmp_path):
    _tracked(tmp_path / "off", steps=3, samples=0)
    assert not (tmp_path / "off" / "samples.bin").exists() and read_samples(tmp_path / "off") is None
    assert json.loads((tmp_path / "off" / "run.json").read_text())["samples"] is None
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="samples must be a non-negative integer"):
            _tracked(tmp_path / f"bad{bad}", steps=1, samples=bad)


def test_checksummed_and_a_flipped_byte_names_its_block(tmp_path):
    _tracked(tmp_path / "r", steps=6)
    path = tmp_path / "r" / "samples.bin"
    assert (tmp_path / "r" / "samples.crc").stat().st_size == 16 + 16 * 7   # header + one block per row
    size = json.loads((tmp_path / "r" / "run.json").read_text())["samples"]["record_size"]
    raw = bytearray(path.read_bytes())
    raw[4 * size * 8 + 13] ^= 0x40   # inside row 4
    path.write_bytes(bytes(raw))
    rs = read_samples(tmp_path / "r")
    assert list(rs.steps) == [0, 1, 2, 3] and any("block 4" in w for w in rs.warnings)


def test_resume_cuts_the_sample_with_the_log_and_ends_identical(tmp_path):
    import copy

    _tracked(tmp_path / "a", steps=10)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, _ = _data()
    syms = nm.analyze(model, x[:4]).symmetries
    tr = nm.Tracker(model, opt, tmp_path / "b", syms, flush_every=3)
    _train(model, opt, tr, 4)
    ck = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()), "tracker": tr.state_dict()}
    _train(model, opt, tr, 3, start=4)   # then the process dies: rows 4..6 are recomputed after the resume
    tr.abort()
    assert list(read_samples(tmp_path / "b").steps) == list(range(7))
    model2 = _net(seed=3)
    model2.load_state_dict(ck["model"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt2.load_state_dict(ck["opt"])
    tr2 = nm.Tracker(model2, opt2, tmp_path / "b", syms, flush_every=3, samples=0)   # the log's own sample is kept
    tr2.load_state_dict(ck["tracker"])
    _train(model2, opt2, tr2, 6, start=4)
    tr2.close()
    for name in ("stats.bin", "stats.crc", "samples.bin", "samples.crc"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


def test_resume_refuses_a_model_without_the_sampled_parameters(tmp_path):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, _ = _data()
    syms = nm.analyze(model, x[:4]).symmetries
    tr = nm.Tracker(model, opt, tmp_path / "r", syms)
    _train(model, opt, tr, 2)
    state = tr.state_dict()
    tr.abort()
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    meta["samples"]["params"][0]["shape"] = [7, 3, 3, 3]
    (tmp_path / "r" / "run.json").write_text(json.dumps(meta))
    before = (tmp_path / "r" / "samples.bin").read_bytes()
    tr = nm.Tracker(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path / "r", syms)
    with pytest.raises(RunLogError, match="logged parameter sample names '0.weight'"):
        tr.load_state_dict(state)
    assert (tmp_path / "r" / "samples.bin").read_bytes() == before


def test_figure1_plots_the_recorded_sample(tmp_path):
    _tracked(tmp_path / "r", steps=12)
    ev = evaluate_run(tmp_path / "r", checkpoints=False)
    samples = tracker_samples(tmp_path / "r", ["0", "3"])
    rs = read_samples(tmp_path / "r")
    assert set(samples) == {"0", "3"} and samples["0"].source == "tracker"
    fig = trajectories_figure(ev, "scale", ["0", "3"], samples)
    lines = lines_by_gid(fig)
    for layer, name in (("0", "0.weight"), ("3", "3.weight")):
        for k in range(16):
            ln = lines[f"sample|{layer}|{k}"]
            assert list(ln.get_xdata()) == list(range(13)) and np.array_equal(ln.get_ydata(), rs.values[name][:, k])
    ser = ev.series["scale"]
    j = next(i for i, s in enumerate(ser.symmetries) if s.layer == "3")
    assert np.array_equal(lines[f"quantity|{ser.symmetries[j].key}"].get_ydata(), ser.measured[:, j])
    assert tracker_samples(tmp_path / "r", ["no.such.layer"]) == {}
