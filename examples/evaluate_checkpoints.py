"""Checkpoints saved without the tracker, held against the laws afterwards.

Most runs worth checking were not tracked. This script plays both parts: first a plain PyTorch loop
(no tracker) trains a small conv net with batch norm on CIFAR-shaped images generated in memory
(10 classes, 3×32×32, nothing downloaded) with SGD, momentum, weight decay and a step schedule, and saves
``{"step", "model", "optimizer"}`` every ``--every`` steps the way training scripts usually do; then
``evaluate_checkpoints`` reads that directory with the model, the training data and the optimizer's
description. Translation laws are forecast exactly from the first checkpoint; scale and rescale laws are
fed gradient statistics estimated by short training replicas at each checkpoint, so their errors are
labelled approximate (docs/run_format.md, "Checkpoint-only evaluation").

    python examples/evaluate_checkpoints.py --out runs/example-ckpt --steps 200 --every 20

Writes OUT/checkpoints/step_*.pt (the training's own files) and OUT/report/report.html (+ report.md,
report.json, figures). The same evaluation from the shell:
``nmech evaluate --checkpoints OUT/checkpoints --model mypkg:make_net ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import symmetry_engine as nm
from analyses.report import write_report


def cifar_shaped(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of shape 3×32×32 in 10 classes: a fixed random pattern per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, 10, (n,), generator=g)
    return 0.6 * patterns[y] + torch.randn(n, 3, 32, 32, generator=g), y


def make_net(width: int = 8, classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AvgPool2d(8),
        nn.Flatten(), nn.Linear(2 * width, classes))


def lr_at(step: int, lr: float, milestone: int, gamma: float) -> float:
    """The learning rate of optimizer step ``step``: StepLR's, ×gamma every ``milestone`` steps (the evaluation
    compares it with the lr each checkpoint's optimizer state holds, and warns when they differ)."""
    return lr * gamma ** (step // milestone)


def train_untracked(out: Path, args: argparse.Namespace, data: TensorDataset) -> Path:
    """A training loop without the tracker; checkpoints as most training scripts save them."""
    torch.manual_seed(args.seed)
    model = make_net().double()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=args.milestone, gamma=args.gamma)
    ckdir = out / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    x, y = data.tensors
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps + 1):
        if step % args.every == 0:
            torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()},
                       ckdir / f"step_{step:06d}.pt")
        if step == args.steps:
            break
        idx = torch.randint(0, len(x), (args.batch_size,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    return ckdir


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/example-ckpt")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--milestone", type=int, default=100, help="StepLR step_size")
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--replica-steps", type=int, default=8, help="replica steps per checkpoint for scale/rescale")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    x, y = cifar_shaped(1024, args.seed)
    data = TensorDataset(x.double(), y)
    ckdir = train_untracked(out, args, data)

    # later, possibly elsewhere: the same architecture, the training data and the optimizer's description
    ev = nm.evaluate_checkpoints(ckdir, make_net().double(), data,
                                 lr=lambda n: lr_at(n, args.lr, args.milestone, args.gamma),
                                 momentum=args.momentum, weight_decay=args.weight_decay,
                                 batch_size=args.batch_size, batches=args.replica_steps, seed=args.seed,
                                 model_info={"spec": "examples/evaluate_checkpoints.py:make_net", "dataset":
                                             "generated CIFAR-shaped (3×32×32, 10 classes)"})
    report = write_report(ev, out / "report")
    v = ev.verdicts
    print(f"{len(ev.steps)} checkpoints, steps {int(ev.steps[0])}..{int(ev.steps[-1])}; verdicts: "
          + ", ".join(f"{v[k]} {k}" for k in ("holds", "approximate", "broken", "degenerate")))
    for kind, s in ev.summary.items():
        approx = (s.get("approx") or {}).get("max")
        law = f"law max error {s['law']['max']:.2e} (exact)" if kind == "translation" else \
            f"law max error {approx:.2e} (approximate: estimated from checkpoints)"
        print(f"{kind:<12} {s['groups']:>5} groups  {law}")
    print(f"report: {report}")
    print(f"html report: {report.with_suffix('.html')}")
    return report


if __name__ == "__main__":
    main()
