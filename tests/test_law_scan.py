"""The compiled law scan (numeric/scan.py) against plain step loops, on random inputs with everything a real
log has: schedules, per-step momentum, idle steps, lr = 0 steps, a first-step buffer fill, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from symmetry_engine.numeric import scan as scan_mod
from symmetry_engine.numeric.predict import _continuous_coeffs, continuous_for_class
from symmetry_engine.numeric.scan import scan_affine
from symmetry_engine.symbolic import RuleSpec, compiled_recurrence
from symmetry_engine.symbolic.laws import ETA_ZERO, PARAM_NAMES

T, G = 300, 7


def _schedule(rng):
    lrs = np.where(np.arange(T) < T // 2, 0.1, 0.01) * (1 + 0.1 * np.sin(np.arange(T) / 7.0))
    lrs[[5, 6, 40]] = 0.0                         # lr = 0 steps (warm-up, a schedule's end)
    lrs[T // 3:T // 3 + 30] = 0.05                 # a long constant stretch
    active = np.ones(T, dtype=bool)
    active[[12, 13, 100, 101, 102]] = False        # the class had no gradient: idle
    params = {"lambda": np.full(T, 5e-3), "beta": 0.9 + 0.05 * np.cos(np.arange(T) / 11.0), "d": np.full(T, 0.1)}
    return lrs, params, active


def _reference_exact(comp, init, inputs, lrs, params, first_at, active):
    """The recurrence as the law says it, one step at a time, offsets evaluated directly (the old loop)."""
    eta = np.where(lrs == 0, ETA_ZERO, lrs)
    x = np.array(init, dtype=np.float64)
    out = [x[0].copy()]
    for n in range(len(lrs)):
        if not active[n]:
            out.append(x[0].copy())
            continue
        which = 0 if n == first_at else 1
        p = [float(np.broadcast_to(params[k], (len(lrs),))[n]) for k in PARAM_NAMES]
        A = np.array(comp.matrices[which](eta[n], *p), dtype=np.float64)
        ins = [inputs[name][n] for name in comp.inputs]
        b = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (init.shape[1],))
                      for v in comp.offsets[which](*ins, eta[n], *p)])
        x = A @ x + b
        out.append(x[0].copy())
    return np.array(out)


@pytest.mark.parametrize("kind,spec", [("scale", RuleSpec("sgd", True)), ("scale", RuleSpec("sgd", True, True)),
                                       ("scale", RuleSpec()), ("translation", RuleSpec("sgd", True)),
                                       ("rescale", RuleSpec("sgd", True, False, True))],
                         ids=["momentum", "nesterov", "plain", "translation", "decoupled"])
@pytest.mark.parametrize("numba", [True, False], ids=["compiled", "numpy"])
def test_exact_scan_equals_step_loop(kind, spec, numba, monkeypatch):
    if numba and not scan_mod.HAVE_NUMBA:
        pytest.skip("numba not installed")
    if not numba:
        monkeypatch.setattr(scan_mod, "_KERNELS", {})
    rng = np.random.default_rng(0)
    lrs, params, active = _schedule(rng)
    comp = compiled_recurrence(kind, spec)
    inputs = {name: rng.standard_normal((T, G)) * (1e-3 if name in ("Q", "P") else 1e-4) for name in comp.inputs}
    if "D" in inputs:
        inputs["D"] = np.abs(inputs["D"])
        inputs["D"][lrs == 0] = 0.0  # D = η²|v|² is recorded as exactly 0 when η = 0
    init = np.zeros((len(comp.states), G))
    init[0] = rng.uniform(1, 2, G)
    if len(comp.states) > 1:
        init[1:] = rng.standard_normal((len(comp.states) - 1, G)) * 1e-3  # a buffer that already existed
    for first_at in (3, None):
        got = comp.run(init, inputs, lrs, params, first_at=first_at, active=active)
        want = _reference_exact(comp, init, inputs, lrs, params, first_at, active)
        assert np.all(np.isfinite(got))
        rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
        assert rel <= 1e-12, rel
        assert np.ptp(got[:, 0]) > 1e-4  # the forecast moves: the comparison is not vacuous


def test_scan_in_chunks_equals_one_pass():
    """The state returned by one chunk continues the next one exactly (streaming over a long log)."""
    rng = np.random.default_rng(1)
    lrs, params, active = _schedule(rng)
    comp = compiled_recurrence("scale", RuleSpec("sgd", True))
    A, C, c = comp.coefficients(lrs, params, first_at=0, active=active)
    u = [rng.standard_normal((T, G)).astype(np.float32) * 1e-3, np.abs(rng.standard_normal((T, G))) * 1e-4]
    x0 = np.zeros((2, G))
    x0[0] = 1.0
    one = scan_affine(A, C, c, u, x0.copy())
    x = x0.copy()
    parts = [scan_affine(A[a:b], C[a:b], c[a:b], [v[a:b] for v in u], x) for a, b in ((0, 17), (17, 150), (150, T))]
    np.testing.assert_array_equal(np.concatenate(parts), one)


def _reference_continuous(kind, spec, x0, drive, lrs, lam, beta, damp, active):
    """Per step: first order x ← e^{−ah}x + bφF; second order: zero-order hold with its own expm per step."""
    coeffs = _continuous_coeffs(kind, spec)
    out, x, v = [x0.copy()], x0.copy(), np.zeros_like(x0)
    for n in range(len(lrs)):
        p = (lam[n], beta[n], damp[n])
        if coeffs[0] == 1:
            h = lrs[n]
            if active[n]:
                a, b = float(coeffs[1](h, *p)), float(coeffs[2](h, *p))
                phi = -np.expm1(-a * h) / a if a != 0 else h
                x = np.exp(-a * h) * x + (b * drive[n] * phi if drive is not None else 0.0)
        else:
            h = lrs[n] * (1 - p[2])
            if active[n] and h > 0:
                g, w2, f = float(coeffs[1](h, *p)), float(coeffs[2](h, *p)), float(coeffs[3](h, *p))
                M = np.array([[0, 1, 0], [-w2, -2 * g, 1], [0, 0, 0]], dtype=float)
                E = scipy.linalg.expm(M * h)
                force = f * (drive[n] if drive is not None else 0.0) / h ** 2
                x, v = E[0, 0] * x + E[0, 1] * v + E[0, 2] * force, E[1, 0] * x + E[1, 1] * v + E[1, 2] * force
        out.append(np.array(x, dtype=float).copy())
    return np.array(out)


@pytest.mark.parametrize("kind,spec", [("scale", RuleSpec()), ("scale", RuleSpec("sgd", True)),
                                       ("translation", RuleSpec("sgd", True))], ids=["first-order", "oscillator",
                                                                                    "translation"])
def test_continuous_scan_equals_step_loop(kind, spec):
    rng = np.random.default_rng(2)
    lrs, params, active = _schedule(rng)
    lrs = np.where(np.arange(T) % 50 < 40, np.round(lrs, 2), lrs)  # constant stretches and single steps
    x0 = rng.uniform(1, 2, G)
    drive = None if kind == "translation" else np.abs(rng.standard_normal((T, G))) * 1e-4
    lam, beta, damp = params["lambda"], np.round(params["beta"], 2), params["d"]
    got = continuous_for_class(kind, spec, x0, drive, lrs, lam, beta, damp, active)
    want = _reference_continuous(kind, spec, x0, drive, lrs, lam, beta, damp, active)
    rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert rel <= 1e-12, rel
    assert np.ptp(got[:, 0]) > 1e-4


def test_memory_mapped_log_evaluates_like_the_in_memory_one(tmp_path, monkeypatch):
    """read_run(mmap=True) hands out lazy columns; the chunked evaluation over them (tiny chunks, decimated
    trajectories) gives the same errors, breaking and verdicts as the in-memory log."""
    import torch

    from symmetry_engine.numeric import evaluate as E
    from symmetry_engine.numeric import runlog

    from .test_tracker import MOMENTUM, train

    train(tmp_path / "run", MOMENTUM, n_steps=40, schedule=True, dtype=torch.float64)
    ref = E.evaluate_run(tmp_path / "run", checkpoints=False)
    lazy = runlog.read_run(tmp_path / "run", mmap=True)
    assert isinstance(lazy.stats["scale"]["Q"], runlog.LazyColumn)
    eager = runlog.read_run(tmp_path / "run")
    for kind, ks in eager.stats.items():
        for col, arr in ks.items():
            np.testing.assert_array_equal(lazy.stats[kind][col][:], arr)
            np.testing.assert_array_equal(lazy.stats[kind][col][3:9, 1:4], arr[3:9, 1:4])
    monkeypatch.setattr(runlog, "MMAP_BYTES", 0)            # every log through the memory map
    monkeypatch.setattr(E, "CHUNK_VALUES", 50)              # chunks of a step or two
    monkeypatch.setattr(E, "SERIES_VALUES", 200)            # trajectories decimated
    got = E.evaluate_run(tmp_path / "run", checkpoints=False)
    assert len(got.steps) < len(ref.steps) and got.steps[0] == 0 and got.steps[-1] == ref.steps[-1]
    assert got.series["scale"].measured.shape[0] == len(got.steps)
    for a, b in zip(ref.groups, got.groups):
        assert (a.key, a.verdict) == (b.key, b.verdict)
        for f in ("err_exact", "err_law", "err_continuous", "optimizer_breaking", "final_exact", "final_continuous"):
            assert abs(getattr(a, f) - getattr(b, f)) <= 1e-12 * max(1.0, abs(getattr(a, f))), (a.key, f)
        assert (a.breaking is None) == (b.breaking is None)
        assert a.breaking is None or abs(a.breaking - b.breaking) <= 1e-15
    assert max(g.err_exact for g in got.groups if g.verdict != "degenerate") < 1e-12
