"""One rank of the DDP test (tests/test_ddp.py), started by ``torchrun --nproc_per_node 2`` on CPU (gloo).

Each rank trains the same float64 model (DistributedDataParallel) on its half of every global batch; the
Tracker is attached to the optimizer of the DDP-wrapped model, so its pre-hook sees the all-reduced
gradients. Only rank 0 writes the run log. Usage: ``ddp_worker.py RUN_DIR SYMMETRIES_JSON STEPS``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5)).double()


def batches(steps: int, size: int = 16):
    g = torch.Generator().manual_seed(7)
    X = torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (64,), generator=g)
    for n in range(steps):
        i = (n * size) % 64
        yield X[i:i + size], y[i:i + size]


OPT = dict(lr=0.05, momentum=0.9, weight_decay=5e-3)


def main(run_dir: str, syms_path: str, steps: int) -> None:
    from symmetry_engine.numeric.tracker import Tracker
    from symmetry_engine.symmetry import symmetries_from_json

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    net = torch.nn.parallel.DistributedDataParallel(model())
    opt = torch.optim.SGD(net.parameters(), **OPT)
    syms = symmetries_from_json(json.loads(Path(syms_path).read_text()))
    tr = Tracker(net, opt, run_dir, syms, flush_every=5)
    for xb, yb in batches(steps):
        per = xb.shape[0] // world
        xs, ys = xb[rank * per:(rank + 1) * per], yb[rank * per:(rank + 1) * per]
        opt.zero_grad()
        loss = F.cross_entropy(net(xs), ys)
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)                 # the global batch's loss (the mean of the ranks' means)
        tr.record_loss(total / world)
        opt.step()
    state = tr.state_dict()
    tr.close()
    Path(run_dir).parent.joinpath(f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world": world, "step": state["step"], "writes": tr.active}))
    # both ranks leave together: a rank that tears gloo down while its peer is still busy (rank 0 closes
    # the log) can abort in gloo's worker threads ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
