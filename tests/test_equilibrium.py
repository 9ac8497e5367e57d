"""Spherical motion: the logged-statistics angle equals the angle between saved weights, and a BN layer
under SGD(M)+WD settles at √(2ηλ/(1+β)) per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symmetry_engine as nm
from symmetry_engine import Member, Symmetry
from symmetry_engine.numeric.equilibrium import angular_updates


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)).double()


def _scale_groups() -> list[Symmetry]:
    return [Symmetry("scale", (Member("0.weight", 0, (c,), 1), Member("0.bias", 0, (c,), 1)), "0", c) for c in range(8)]


def _run(tmp_path, steps: int, lr: float, momentum: float, wd: float, keep_weights: bool = False):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(512, 12, generator=g, dtype=torch.float64), torch.randint(0, 4, (512,), generator=g)
    tracker = nm.Tracker(model, opt, tmp_path / "run", _scale_groups())
    weights = []
    for step in range(steps):
        idx = torch.randint(0, 512, (32,), generator=g)
        if keep_weights:
            weights.append(torch.cat([model[0].weight, model[0].bias[:, None]], 1).detach().clone())
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    if keep_weights:
        weights.append(torch.cat([model[0].weight, model[0].bias[:, None]], 1).detach().clone())
    tracker.close()
    return tmp_path / "run", weights


def test_angle_from_statistics_equals_angle_between_weights(tmp_path) -> None:
    run, weights = _run(tmp_path, 30, lr=0.2, momentum=0.9, wd=1e-2, keep_weights=True)
    ev = nm.evaluate_run(run, checkpoints=False)
    for n in range(30):
        a, b = weights[n], weights[n + 1]
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
        sin = torch.sqrt(torch.clamp(1 - cos**2, min=0))
        angle = torch.atan2(sin, cos).numpy()
        np.testing.assert_allclose(ev.angular.angles[n], angle, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_bn_layer_reaches_the_predicted_equilibrium(tmp_path, momentum: float) -> None:
    lr, wd = 0.5, 0.02
    ev = nm.evaluate_run(_run(tmp_path, 1500, lr=lr, momentum=momentum, wd=wd)[0], checkpoints=False)
    a = ev.angular
    assert a.predicted[-1] == pytest.approx(np.sqrt(2 * lr * wd / (1 + momentum)))
    assert a.relaxation_steps < 300
    ratio = np.median(a.tail_ratio(0.2))
    assert 0.8 < ratio < 1.25, ratio          # the equilibrium holds; far from it the ratio is off by 10×


def test_no_angular_analysis_without_weight_decay(tmp_path) -> None:
    ev = nm.evaluate_run(_run(tmp_path, 5, lr=0.1, momentum=0.9, wd=0.0)[0], checkpoints=False)
    assert ev.angular is None
    assert angular_updates(np.ones((3, 2)), np.zeros((3, 2)), np.array([0.1, 0.1]), 0.9, 0.0, 1e-3).angles.shape == (2, 2)
