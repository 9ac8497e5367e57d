"""DDP: ``torchrun --nproc_per_node 2`` (gloo, CPU) against one process on the same global batch, float64."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from symmetry_engine.numeric.evaluate import evaluate_run
from symmetry_engine.numeric.runlog import read_run
from symmetry_engine.numeric.tracker import Tracker
from symmetry_engine.symmetry import symmetries_to_json

from . import ddp_worker as W

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_ddp_two_processes_record_what_one_process_records(tmp_path):
    from symmetry_engine.graph.analysis import analyze

    net = W.model()
    syms = analyze(net, torch.zeros(2, 3, 4, 4, dtype=torch.float64)).symmetries
    assert {s.kind for s in syms} == {"translation", "rescale"}
    (tmp_path / "syms.json").write_text(json.dumps(symmetries_to_json(syms)))
    # the reference: one process, the whole global batch
    opt = torch.optim.SGD(net.parameters(), **W.OPT)
    tr = Tracker(net, opt, tmp_path / "single", syms, flush_every=5)
    for xb, yb in W.batches(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        tr.record_loss(loss)
        opt.step()
    tr.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "ddp" / "run"),
                           str(tmp_path / "syms.json"), str(STEPS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["writes"] for r in ranks] == [True, False] and all(r["step"] == STEPS for r in ranks)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["rank0.json", "rank1.json", "run"]
    a, b = read_run(tmp_path / "single"), read_run(tmp_path / "ddp" / "run")
    assert b.closed and b.T == STEPS and b.meta["distributed"] == {"backend": "gloo", "world_size": 2,
                                                                   "recorded_by_rank": 0}
    assert [s.key for s in a.symmetries] == [s.key for s in b.symmetries]  # names mapped through "module."
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-13)
    np.testing.assert_allclose(b.grad_sq, a.grad_sq, rtol=1e-12)
    for kind, ks in a.stats.items():
        for col, arr in ks.items():
            scale = np.nanmax(np.abs(ks["A" if kind == "translation" else "M"]))
            diff = np.nanmax(np.abs(b.stats[kind][col] - arr)) / scale
            assert diff <= 1e-12, (kind, col, diff)
    assert np.abs(a.stats["rescale"]["D"][:-1]).max() > 0  # the runs moved
    ev_a, ev_b = evaluate_run(tmp_path / "single", checkpoints=False), evaluate_run(tmp_path / "ddp" / "run",
                                                                                      checkpoints=False)
    assert [g.verdict for g in ev_a.groups] == [g.verdict for g in ev_b.groups]
    assert max(g.err_exact for g in ev_b.groups if g.verdict != "degenerate") <= 1e-12
