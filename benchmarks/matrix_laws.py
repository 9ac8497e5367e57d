"""Matrix symmetries end to end: law accuracy over random runs, law counts, and the matrix tracker's cost.

``python -m benchmarks.matrix_laws [--quick] [--json PATH]``

1. accuracy: random float64 runs of three models (a Linear-pair MLP, nn.MultiheadAttention, a hand-written
   single head) under random SGD settings (momentum 0 or in [0.5, 0.95], dampening, coupled weight decay,
   a step or random schedule), tracked by MatrixTracker and evaluated by evaluate_matrix_run: the worst
   err_exact, err_law and breaking over all symmetries and runs; plus the same for a member list that is
   not a symmetry (head 0's queries with head 1's keys), and one float32 run;
2. counts: law_count on ReLU MLPs, linear networks and one attention layer against the theorems;
3. cost: per-step wall time of an attention block (E = 256, 8 heads, batch 32 × 64 tokens) with and
   without the matrix tracker on its 16 head symmetries, steps alternated A B / B A (shared machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from symmetry_engine.matrix_symmetry import GLMember, GLSymmetry, attention_heads, from_pair, multihead_attention
from symmetry_engine.numeric.law_count import law_count_report
from symmetry_engine.numeric.matrix_evaluate import evaluate_matrix_run
from symmetry_engine.numeric.matrix_tracker import MatrixTracker

from .common import median, now

NAME = "matrix_laws"


class PairMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.a(x))))


class MHA(nn.Module):
    def __init__(self, E: int = 8, H: int = 2) -> None:
        super().__init__()
        self.attn, self.head = nn.MultiheadAttention(E, H, batch_first=True), nn.Linear(E, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


class SingleHead(nn.Module):
    def __init__(self, E: int = 6, d: int = 3) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(E, d), nn.Linear(E, d), nn.Linear(E, d), nn.Linear(d, E)
        self.head, self.d = nn.Linear(E, 3), d

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / self.d ** 0.5, dim=-1)
        return self.head(self.o(a @ self.v(x)).mean(1))


def wrong_head() -> GLSymmetry:
    q, k = tuple(range(0, 4)), tuple(range(12, 16))
    return GLSymmetry(4, (GLMember("attn.in_proj_weight", 0, q, "M"), GLMember("attn.in_proj_bias", 0, q, "M"),
                          GLMember("attn.in_proj_weight", 0, k, "M^-T"), GLMember("attn.in_proj_bias", 0, k, "M^-T")),
                      "attn", "wrong head")


MODELS = {
    "pair_mlp": (PairMLP, (6,), lambda: [from_pair("a.weight", "a.bias", "b.weight", 5)]),
    "mha": (MHA, (5, 8), lambda: multihead_attention("attn", 8, 2)),
    "single_head": (SingleHead, (5, 6), lambda: attention_heads(
        ("q.weight", 0), ("k.weight", 0), ("v.weight", 0), "o.weight", 1, 3, "attn",
        q_bias=("q.bias", 0), k_bias=("k.bias", 0), v_bias=("v.bias", 0))),
}


def one_run(name: str, seed: int, steps: int, dtype=torch.float64, extra=()) -> dict:
    rng = random.Random(seed)
    cls, shape, syms = MODELS[name]
    torch.manual_seed(seed)
    model = cls().to(dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((64,) + shape, generator=g).to(dtype)
    y = torch.randint(0, 3, (64,), generator=g)
    beta = 0.0 if rng.random() < 0.4 else rng.uniform(0.5, 0.95)
    cfg = dict(lr=rng.uniform(0.01, 0.1) * (1 - beta) * 4, momentum=beta, dampening=rng.uniform(0, 0.3) if beta else 0.0,
               weight_decay=rng.choice([0.0, 1e-3, 1e-2]))
    opt = torch.optim.SGD(model.parameters(), **cfg)
    factors = [1.0 if n < steps // 2 else 0.3 for n in range(steps)] if rng.random() < 0.5 else \
        [rng.uniform(0.3, 1.0) for _ in range(steps)]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: factors[min(n, steps - 1)])
    with tempfile.TemporaryDirectory() as d:
        with MatrixTracker(model, opt, d, list(syms()) + list(extra), flush_every=16):
            for _ in range(steps):
                idx = torch.randint(0, 64, (16,), generator=g)
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
        ev = evaluate_matrix_run(d)
    return {"model": name, "config": cfg, "rows": ev["symmetries"]}


def accuracy(runs: int, steps: int) -> dict:
    worst = {"err_exact": 0.0, "err_law": 0.0, "breaking": 0.0}
    drift_min, n_sym = float("inf"), 0
    for i in range(runs):
        out = one_run(sorted(MODELS)[i % 3], seed=100 + i, steps=steps)
        for row in out["rows"]:
            n_sym += 1
            for k in worst:
                worst[k] = max(worst[k], row[k])
            drift_min = min(drift_min, row["drift"])
    bad = one_run("mha", 7, steps, extra=[wrong_head()])["rows"][-1]
    f32 = one_run("mha", 8, steps, dtype=torch.float32)["rows"]
    return {"runs": runs, "steps": steps, "symmetries": n_sym, "worst": worst, "smallest_drift": drift_min,
            "wrong_head": {k: bad[k] for k in ("err_exact", "err_law", "breaking", "verdict")},
            "float32": {k: max(r[k] for r in f32) for k in ("err_exact", "err_law", "breaking")}}


def counts() -> list[dict]:
    from symmetry_engine.graph.analysis import analyze

    out = []

    def count(label, model, x, extra=(), theorem=None):
        a = analyze(model, x, loss="mse")
        ms = [GLSymmetry.from_json(m.to_json()) for m in a.matrix_symmetries] + list(extra)
        rep = law_count_report(a.symmetries, ms, a.param_shapes)
        out.append({"model": label, "functions": rep.functions, "count": rep.count, "theorem": theorem,
                    "gap": [rep.smallest_kept, rep.largest_dropped]})

    torch.manual_seed(0)
    count("ReLU MLP 5-7-4-3 (bias)", nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 4), nn.ReLU(), nn.Linear(4, 3)),
          torch.randn(4, 5), theorem=11)
    count("ReLU MLP 5-7-4-3 (no bias)", nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 4, bias=False),
                                                       nn.ReLU(), nn.Linear(4, 3, bias=False)), torch.randn(4, 5), theorem=11)
    count("linear 2-5-5-2 (bias)", nn.Sequential(nn.Linear(2, 5), nn.Linear(5, 5), nn.Linear(5, 2)), torch.randn(4, 2),
          theorem=30)
    count("linear 1-4-1 (no bias; r > in + out)", nn.Sequential(nn.Linear(1, 4, bias=False), nn.Linear(4, 1, bias=False)),
          torch.randn(4, 1), theorem=7)

    class Attn(nn.Module):
        def __init__(self, residual: bool) -> None:
            super().__init__()
            self.attn, self.residual = nn.MultiheadAttention(8, 2, bias=False, batch_first=True), residual

        def forward(self, x):
            h = self.attn(x, x, x, need_weights=False)[0]
            return x + h if self.residual else h

    for res in (False, True):
        count(f"attention E=8 H=2{' + residual' if res else ''}", Attn(res), torch.randn(2, 5, 8),
              multihead_attention("attn", 8, 2, bias=False), theorem=40)
    return out


def overhead(steps: int, warmup: int = 3) -> dict:
    torch.manual_seed(0)
    E, H = 256, 8

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(E, H, batch_first=True), nn.Linear(E, 10)

        def forward(self, x):
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    a = Block()
    b = copy.deepcopy(a)
    oa = torch.optim.SGD(a.parameters(), lr=0.01, momentum=0.9)
    ob = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 64, E), torch.randint(0, 10, (32,))
    plain, tracked = [], []
    with tempfile.TemporaryDirectory() as d:
        tr = MatrixTracker(b, ob, d, multihead_attention("attn", E, H), flush_every=steps + warmup)

        def step(model, opt):
            t = now()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            return now() - t

        for i in range(steps + warmup):
            order = [(a, oa, plain), (b, ob, tracked)][:: 1 if i % 2 == 0 else -1]
            for model, opt, acc in order:
                dt = step(model, opt)
                if i >= warmup:
                    acc.append(dt)
        tr.close()
        size = tr.record_size * 8
    return {"plain_ms": 1e3 * median(plain), "tracked_ms": 1e3 * median(tracked),
            "ratio": median(tracked) / median(plain), "symmetries": 2 * H, "bytes_per_step": size}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = {"accuracy": accuracy(9 if args.quick else 30, 60 if args.quick else 200), "counts": counts(),
           "overhead": overhead(6 if args.quick else 20)}
    acc = res["accuracy"]
    print(f"accuracy over {acc['runs']} float64 runs ({acc['symmetries']} symmetries, {acc['steps']} steps): "
          f"worst err_exact {acc['worst']['err_exact']:.1e}, err_law {acc['worst']['err_law']:.1e}, breaking "
          f"{acc['worst']['breaking']:.1e}; smallest drift of C {acc['smallest_drift']:.1e}")
    w = acc["wrong_head"]
    print(f"wrong head: err_exact {w['err_exact']:.1e}, err_law {w['err_law']:.1e}, breaking {w['breaking']:.1e} "
          f"({w['verdict']})")
    f = acc["float32"]
    print(f"float32 MHA: err_exact {f['err_exact']:.1e}, err_law {f['err_law']:.1e}, breaking {f['breaking']:.1e}")
    for c in res["counts"]:
        print(f"count {c['model']}: {c['count']} laws (theorem {c['theorem']}) from {c['functions']} functions; "
              f"gap {c['gap'][0]:.1e} / {c['gap'][1]:.1e}")
    o = res["overhead"]
    print(f"matrix tracker on E=256, 8 heads (16 symmetries, {o['bytes_per_step']} B/step): "
          f"{o['plain_ms']:.1f} ms -> {o['tracked_ms']:.1f} ms per step ({o['ratio']:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
