"""Mixed precision: autocast bfloat16 / float16 on CPU, a GradScaler that skips steps, a fused optimizer that
gets still-scaled gradients; run.json records it and the verdicts explain the breaking it causes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import symmetry_engine as nm
from symmetry_engine.numeric.evaluate import evaluate_run
from symmetry_engine.numeric.runlog import read_run
from symmetry_engine.numeric.verdicts import Thresholds

from .test_optimizer_setups import BATCH, _data, _model

STEPS = 30


def _train(run_dir, dtype, scaler=None, inf_at=(), fused=False):
    model = _model().float()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, fused=fused or None)
    x, y = _data()
    tr = nm.track(model, opt, run_dir, example_inputs=x[:4].float(), autocast_dtype=dtype, grad_scaler=scaler)
    for n in range(STEPS):
        i = (n * BATCH) % x.shape[0]
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(x[i:i + BATCH].float()), y[i:i + BATCH])
        tr.record_loss(loss.float())
        if scaler is None:
            loss.backward()
            opt.step()
            continue
        scaler.scale(loss).backward()
        if n in inf_at:
            next(model.parameters()).grad[0] = float("inf")  # an overflowing gradient: the scaler skips the step
        scaler.step(opt)
        scaler.update()
    tr.close()


def test_bfloat16_autocast_is_recorded_and_explained(tmp_path):
    _train(tmp_path / "bf16", torch.bfloat16)
    meta = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert meta["dtype"] == "float32" and meta["amp"] == {"autocast_dtype": "bfloat16", "grad_scaler": False,
                                                          "skipped_steps": 0}
    ev = evaluate_run(tmp_path / "bf16", checkpoints=False)
    assert ev.thresholds.compute_dtype == "bfloat16" and ev.thresholds.breaking_roundoff == 2.0 ** -7
    assert ev.thresholds.exact_identity == pytest.approx(1e3 * np.finfo(np.float32).eps)
    assert ev.verdicts["broken"] == 0
    explained = [g for g in ev.groups if g.cause == "bfloat16 autocast round-off"]
    assert len(explained) > 10 and all(g.verdict == "approximate" for g in explained)
    assert max(g.err_exact for g in ev.groups if g.verdict != "degenerate") <= 1e-4  # the bookkeeping still holds
    # the same statistics judged by the float32 storage alone call exact symmetries broken
    f32 = Thresholds.for_dtype("float32")
    assert sum(1 for g in ev.groups if g.breaking is not None and g.breaking > f32.breaking_roundoff) > 0


@pytest.mark.parametrize("fused", [False, True], ids=["scaler-skips-step", "fused-found-inf"])
def test_float16_grad_scaler_skipped_steps_record_nothing(tmp_path, fused):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    _train(tmp_path / "fp16", torch.float16, scaler=scaler, inf_at=(4, 11), fused=fused)
    log = read_run(tmp_path / "fp16")
    assert log.closed and log.T == STEPS - 2 and list(log.steps) == list(range(STEPS - 1))
    assert log.meta["amp"] == {"autocast_dtype": "float16", "grad_scaler": True, "skipped_steps": 2}
    assert np.all(np.isfinite(log.grad_sq)) and np.all(np.isfinite(log.losses)) and log.diverged_at is None
    assert log.grad_sq.max() < 1e3  # unscaled gradients (the scale is 2**10)
    ev = evaluate_run(tmp_path / "fp16", checkpoints=False)
    assert ev.thresholds.compute_dtype == "float16" and ev.verdicts["broken"] == 0
    assert max(g.err_exact for g in ev.groups if g.verdict != "degenerate") <= 1e-4
