"""Your own training loop, tracked: CIFAR-shaped data, param groups and a learning-rate scheduler.

A small conv net with batch norm trained by plain PyTorch on CIFAR-shaped images generated in memory
(10 classes, 3×32×32; nothing is downloaded). The optimizer has three param groups, as in most real
setups: conv weights with weight decay, norms and biases without, and a classifier head with a smaller
learning rate; the learning rate warms up linearly and then follows a cosine (SequentialLR). Two lines
attach the tracker; after training the run is evaluated against the laws and reported.

    python examples/own_training_loop.py --out runs/example-loop --steps 300

With ``--tensorboard DIR`` the tracker also writes per-layer quantities, laws, errors and breaking to
TensorBoard while it trains (``tensorboard --logdir DIR``).

Writes RUN/run.json + stats.bin + samples.bin (tracker), RUN/eval.jsonl (test loss/accuracy per epoch, the format of
``nmech train``), and RUN/report/report.html (+ report.md, report.json, figures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import symmetry_engine as nm
from analyses.report import write_report


def cifar_shaped(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of shape 3×32×32 in 10 classes: a fixed random pattern per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.6 * patterns[y] + torch.randn(n, 3, 32, 32, generator=g)
    return x, y


class SmallNet(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AvgPool2d(8))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def param_groups(model: SmallNet, lr: float, weight_decay: float) -> list[dict]:
    """Conv weights with decay; norm parameters and biases without; the head at a tenth of the lr."""
    decay, no_decay = [], []
    for name, p in model.features.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": list(model.head.parameters()), "lr": lr * 0.1, "weight_decay": weight_decay}]


@torch.no_grad()
def test_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    out = model(x)
    model.train()
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/example-loop")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--tensorboard", default=None, metavar="DIR",
                    help="live TensorBoard scalars while training (needs the tensorboard extra)")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    x_train, y_train = cifar_shaped(2048, args.seed)
    x_test, y_test = cifar_shaped(512, args.seed + 1)
    x_train, x_test = x_train.to(dtype), x_test.to(dtype)
    model = SmallNet().to(dtype)
    opt = torch.optim.SGD(param_groups(model, args.lr, args.weight_decay), lr=args.lr, momentum=args.momentum)
    warmup = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps - warmup)], milestones=[warmup])

    out = Path(args.out)
    tracker = nm.track(model, opt, out, example_inputs=x_train[:4], overwrite=True,           # 1: attach
                       tensorboard=args.tensorboard,
                       meta={"train": {"dataset": "generated CIFAR-shaped (3×32×32, 10 classes)",
                                       "batch_size": args.batch_size, "seed": args.seed, "steps": args.steps,
                                       "schedule": "linear warmup + cosine (SequentialLR)"}})
    per_epoch = len(x_train) // args.batch_size
    out.mkdir(parents=True, exist_ok=True)
    eval_log = open(out / "eval.jsonl", "w")
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(x_train), generator=g)
    for step in range(args.steps):
        k = step % per_epoch
        if k == 0 and step:
            perm = torch.randperm(len(x_train), generator=g)
        idx = perm[k * args.batch_size:(k + 1) * args.batch_size]
        opt.zero_grad()
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        tracker.record_loss(loss)
        opt.step()                      # the tracker's optimizer hooks record this step
        sched.step()
        if (step + 1) % per_epoch == 0 or step + 1 == args.steps:
            test_loss, test_acc = test_pass(model, x_test, y_test)
            eval_log.write(json.dumps({"step": step + 1, "epoch": (step + 1) / per_epoch, "train_loss": loss.item(),
                                       "test_loss": test_loss, "test_accuracy": test_acc}) + "\n")
            eval_log.flush()
    eval_log.close()
    tracker.close()                                                                              # 2: close

    ev = nm.evaluate_run(out)
    report = write_report(ev, out / "report")
    for kind, s in ev.summary.items():
        print(f"{kind:<12} {s['groups']:>5} groups  exact law max error {s['exact']['max']:.2e}  "
              f"continuous law max error {s['continuous']['max']:.2e}")
    print(f"report: {report}")
    print(f"html report: {report.with_suffix('.html')}")
    return report


if __name__ == "__main__":
    main()
