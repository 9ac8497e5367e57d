"""Continuous laws (paper §4): their error against simulations shrinks at the derived order in η."""

from __future__ import annotations

import numpy as np
import pytest

from symmetry_engine.numeric.predict import LawUnavailable, OptimizerConfig, predict_continuous, predict_exact
from .test_predict_exact import Toy, rel_error, simulate


def measured_order(kind: str, momentum: float, lam: float, etas: list[float], horizon: float = 2.0) -> tuple[float, list[float]]:
    errs = []
    for eta in etas:
        opt = OptimizerConfig(lr=eta, momentum=momentum, weight_decay=lam)
        T = int(round(horizon / eta))
        lrs = np.full(T, eta)
        stats = simulate(Toy(kind, np.random.default_rng(0), noise=False), opt, lrs)
        errs.append(rel_error(kind, predict_continuous(kind, stats, lrs, opt), stats))
    return float(np.polyfit(np.log(etas), np.log(errs), 1)[0]), errs


@pytest.mark.parametrize("kind", ["scale", "rescale", "translation"])
def test_plain_sgd_continuous_law_is_first_order(kind):
    slope, errs = measured_order(kind, 0.0, 0.5, [0.04, 0.02, 0.01, 0.005])
    assert 0.9 <= slope <= 1.1, (slope, errs)
    assert errs[-1] < 1e-3


@pytest.mark.parametrize("kind", ["scale", "rescale", "translation"])
def test_heavy_ball_oscillator_is_first_order(kind):
    slope, errs = measured_order(kind, 0.9, 0.2, [0.01, 0.005, 0.0025, 0.00125])
    assert 0.75 <= slope <= 1.25, (slope, errs)
    assert errs[-1] < 5e-3


def test_exact_beats_continuous():
    opt = OptimizerConfig(lr=0.05, momentum=0.9, weight_decay=0.05)
    lrs = np.full(200, 0.05)
    stats = simulate(Toy("scale", np.random.default_rng(5)), opt, lrs)
    assert rel_error("scale", predict_exact("scale", stats, lrs, opt), stats) < 1e-12
    assert rel_error("scale", predict_continuous("scale", stats, lrs, opt), stats) > 1e-6


def test_underdamped_float32_over_40k_steps():
    T, G = 40_000, 4
    rng = np.random.default_rng(6)
    D = 1e-3 * (1 + 0.1 * rng.random((T + 1, G)))
    stats64 = {"N": np.ones((T + 1, G)), "D": D}
    stats32 = {k: v.astype(np.float32) for k, v in stats64.items()}
    opt = OptimizerConfig(lr=0.1, momentum=0.99, weight_decay=5e-4)   # under-damped (theory.md §4)
    p32 = predict_continuous("scale", stats32, np.full(T, 0.1, np.float32), opt)
    p64 = predict_continuous("scale", stats64, np.full(T, 0.1), opt)
    assert np.all(np.isfinite(p32))
    assert np.max(np.abs(p32 - p64) / np.abs(p64)) < 1e-5
    # steady state of x'' + 2γx' + ω²x = 2D/h²: x = 2D/(h² ω²) = D(1+β)/(2ηλ)
    assert abs(p64[-1, 0] / (1.05e-3 * 1.99 / (2 * 0.1 * 5e-4)) - 1) < 0.06


def test_piecewise_constant_schedule_carries_state():
    opt = OptimizerConfig(lr=0.01, momentum=0.9, weight_decay=0.1)
    lrs = np.r_[np.full(300, 0.01), np.full(300, 0.005)]
    stats = simulate(Toy("scale", np.random.default_rng(8), noise=False), opt, lrs)
    assert rel_error("scale", predict_continuous("scale", stats, lrs, opt), stats) < 2e-2


def test_no_continuous_law_for_nesterov_or_adam():
    stats = {"N": np.ones((3, 1)), "D": np.zeros((3, 1)), "G": np.zeros((3, 1))}
    for opt in (OptimizerConfig(momentum=0.9, nesterov=True), OptimizerConfig(rule="adam")):
        with pytest.raises(LawUnavailable):
            predict_continuous("scale", stats, np.full(2, 0.1), opt)
