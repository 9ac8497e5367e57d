"""The tracker's fast path: fused and torch reductions agree, records stream to the file as steps complete,
the tracker holds one record whatever flush_every, non-contiguous weights and 1-D parameters are handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from symmetry_engine.numeric import kernels
from symmetry_engine.numeric.runlog import read_run
from symmetry_engine.numeric.tracker import Tracker

from .test_tracker import MOMENTUM, batches, make_model, toy_symmetries


def _run(path, fused: bool, dtype=torch.float64, opt_kw=MOMENTUM, steps: int = 15, channels_last: bool = False,
         flush_every: int = 50, each_step=None):
    model = make_model(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), **opt_kw)
    tr = Tracker(model, opt, path, toy_symmetries(), flush_every=flush_every, fused=fused)
    for n, (xb, yb) in enumerate(batches(steps, dtype)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        tr.record_loss(loss)
        opt.step()
        if each_step:
            each_step(n, tr)
    tr.close()
    return read_run(path)


def _close(a, b, tol):
    for kind, ks in a.stats.items():
        for col, arr in ks.items():
            scale = np.nanmax(np.abs(ks["A" if kind == "translation" else "M"]))
            assert np.nanmax(np.abs(b.stats[kind][col] - arr)) <= tol * scale, (kind, col)
            assert np.array_equal(np.isnan(b.stats[kind][col]), np.isnan(arr))
    np.testing.assert_allclose(b.grad_sq, a.grad_sq, rtol=tol)


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("opt_kw", [MOMENTUM, dict(lr=0.1, weight_decay=1e-2),
                                    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)],
                         ids=["momentum", "plain", "nesterov"])
def test_fused_and_torch_reductions_agree(tmp_path, dtype, opt_kw):
    a = _run(tmp_path / "torch", False, dtype, opt_kw)
    b = _run(tmp_path / "fused", True, dtype, opt_kw)
    assert a.meta["tracker"]["reductions"] == "torch" and b.meta["tracker"]["reductions"] == "fused (numba)"
    _close(a, b, 1e-13)  # both sum float64 products (float32 weights: exact products), in different orders


def test_channels_last_weights_give_the_same_statistics(tmp_path):
    a = _run(tmp_path / "a", None)
    b = _run(tmp_path / "b", None, channels_last=True)
    _close(a, b, 1e-13)


def test_records_reach_the_file_as_steps_complete_and_one_is_held(tmp_path):
    """flush_every=50: still every finished step is in stats.bin (a killed process loses at most the step in
    flight), and the tracker never buffers records."""
    seen = []

    def check(n, tr):
        size = (tmp_path / "r" / "stats.bin").stat().st_size
        seen.append(size // (8 * tr.record_size))
        assert tr._writer._file.pending == 0
        assert tr._rec.numel() == tr.record_size

    log = _run(tmp_path / "r", None, steps=9, flush_every=50, each_step=check)
    assert seen == list(range(1, 10)) and log.T == 9 and log.closed
