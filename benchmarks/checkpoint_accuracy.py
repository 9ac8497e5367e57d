"""How close does checkpoint-only evaluation come to a tracked run of the same training?

Protocol: train a zoo model in float64 with ``model_zoo.training.train`` (tracked, checkpoints every
``--every`` steps and at step 0), then evaluate its checkpoint directory alone with
``evaluate_checkpoints`` and the same optimizer description. Printed per configuration:

* translation: max ``err_exact`` over the head groups and over all translation groups (exact law);
* scale / rescale: median and max of ``err_approx`` (the law fed statistics estimated by replicas),
  which equals the estimated trajectory against the tracked log's measured one at the checkpoints;
* the estimated driving statistic against the logged one: median over groups of Σ_n D_n (momentum) or
  Σ_n G_n (plain SGD), estimated / logged;
* context: the run-to-run spread of the same quantity — two runs from one initialisation with other
  batch orders, max over checkpoints of |N_a − N_b| / max M, median over groups — which no free-running
  forecast from the first checkpoint can be expected to beat by much.

    python -m benchmarks.checkpoint_accuracy                      # convnet-BN on digits, β = 0.9 and β = 0
    python -m benchmarks.checkpoint_accuracy --model vgg11_bn --width 0.125 --input-size 32 --steps 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _model(args, data):
    from model_zoo.specs import build_model

    kw = {"width": args.width, **({"batch_norm": True} if args.model == "convnet" else {})}
    return build_model(args.model, num_classes=data.num_classes, input_shape=data.input_shape, **kw)[0]


def run_to_run_spread(args, data, symmetries, momentum: float) -> dict[str, float]:
    """Median over groups of max_c |N_a − N_b| / max M for two batch orders from one initialisation."""
    from symmetry_engine.numeric.checkpoint_stats import GroupReducer

    reducers = {k: GroupReducer([s for s in symmetries if s.kind == k]) for k in ("scale", "rescale")}
    X, Y = data.train.tensors
    X = X.double()
    out = []
    for order in (11, 22):
        torch.manual_seed(args.seed)
        model = _model(args, data).double().train()
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=momentum, weight_decay=args.weight_decay)
        gen = torch.Generator().manual_seed(order)
        N, M = {k: [] for k in reducers}, {k: [] for k in reducers}
        for n in range(args.steps + 1):
            if n % args.every == 0:
                th = {a: p.detach() for a, p in model.named_parameters()}
                for k, r in reducers.items():
                    s = r.sides(lambda a: th[a] * th[a])
                    N[k].append(s[0] - s[1])
                    M[k].append(s.sum(0))
            if n == args.steps:
                break
            idx = torch.randperm(len(Y), generator=gen)[:args.batch_size]
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), Y[idx]).backward()
            opt.step()
        out.append(({k: np.array(v) for k, v in N.items()}, {k: np.array(v) for k, v in M.items()}))
    (Na, Ma), (Nb, _) = out
    return {k: float(np.median(np.max(np.abs(Na[k] - Nb[k]), 0) / np.max(Ma[k], 0))) for k in reducers}


def measure(args, momentum: float, root: Path) -> None:
    from model_zoo.datasets import load_dataset
    from model_zoo.training import TrainConfig, lr_at, train
    from symmetry_engine.numeric.checkpoint_eval import evaluate_checkpoints
    from symmetry_engine.numeric.runlog import read_run

    data = load_dataset("digits", None, args.input_size)
    kw = {"width": args.width, **({"batch_norm": True} if args.model == "convnet" else {})}
    cfg = TrainConfig(model=args.model, model_kwargs=kw, dataset="digits", input_size=args.input_size,
                      batch_size=args.batch_size, steps=args.steps, lr=args.lr, momentum=momentum,
                      weight_decay=args.weight_decay, dtype="float64", checkpoint_every=args.every,
                      checkpoint_steps=(0,), progress=False, eval_each_epoch=False, seed=args.seed,
                      out=str(root / f"m{momentum}"))
    t = time.time()
    train(cfg)
    t_train = time.time() - t
    log = read_run(cfg.out)
    t = time.time()
    ev = evaluate_checkpoints(Path(cfg.out) / "checkpoints", _model(args, data), data.train,
                              lr=lambda n: lr_at(cfg, n, cfg.steps), momentum=momentum,
                              weight_decay=args.weight_decay, batch_size=args.batch_size, batches=args.batches,
                              symmetries=log.symmetries, seed=args.seed)
    t_eval = time.time() - t
    trans = [g for g in ev.groups if g.kind == "translation"]
    columns = [s for s in log.symmetries if s.kind == "translation" and any(m.axis == 1 for m in s.members)]
    head = columns[-1].members[0].param.rsplit(".", 1)[0] if columns else None   # the classifier's module
    head_groups = [g for g in trans if head and g.layer.rsplit(".", 1)[0] == head]
    print(f"\n{args.model} width {args.width}, digits {args.input_size}x{args.input_size}, batch {args.batch_size}, "
          f"float64, SGD lr {args.lr} momentum {momentum} wd {args.weight_decay}, {args.steps} steps, checkpoints "
          f"every {args.every}, replica {args.batches} steps (train {t_train:.0f} s, checkpoint evaluation {t_eval:.0f} s)")
    if head_groups:
        counted = [g for g in trans if g.verdict != "degenerate"]
        print(f"  translation: head ({head}, {len(head_groups)} groups) err_exact max "
              f"{max(g.err_exact for g in head_groups):.2e}; all {len(counted)} non-degenerate groups max "
              f"{max(g.err_exact for g in counted):.2e} ({len(trans) - len(counted)} degenerate counted apart); "
              f"verdicts {sorted({g.verdict for g in trans})}")
    spread = run_to_run_spread(args, data, log.symmetries, momentum)
    col = "D" if momentum > 0 else "G"
    for kind in ("scale", "rescale"):
        gs = [g.err_approx for g in ev.groups if g.kind == kind]
        if not gs:
            continue
        logged = log.stats[kind].total(col)[int(ev.steps[0]):int(ev.steps[-1])].sum(axis=0)
        ok = np.abs(logged) > 0   # rescale's signed sums can vanish
        ratio = ev.drive_sums[kind][col][ok] / logged[ok]
        print(f"  {kind:<8} {len(gs):>4} groups: err_approx median {np.median(gs):.2e}, max {np.max(gs):.2e}; "
              f"estimated/logged Σ{col} median {np.median(ratio):.3f} (IQR {np.percentile(ratio, 25):.2f}–"
              f"{np.percentile(ratio, 75):.2f}); run-to-run spread of N (median) {spread[kind]:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="convnet")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--input-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, nargs="+", default=[0.9, 0.0])
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.momentum:
            measure(args, m, Path(tmp))


if __name__ == "__main__":
    main()
