"""Benchmark 1: what attaching the tracker costs a real training loop, next to the paper code's approach.

Why it exists: the tracker is meant to stay on for whole training runs, so it must cost ≤ 2% of a
training step (issue: numeric back end at scale) and hold O(1) records, not O(flush_every). Measured on
VGG-16-BN (zoo, 3×32×32, 10 classes, batch 128, one torch thread) at width 1/4 and width 1, trained with
SGD (lr 0.01, momentum 0.9, weight decay 5e-4), side by side in one process with:

* **untracked** — the same model and optimizer without hooks;
* **tracked** — ``Tracker`` with default settings (flush_every = 50);
* **paper** — the paper code's bookkeeping (anchors.md): per parameter element, accumulation buffers
  Σ_k e^{2λt_k} g_k² and Σ_k e^{2λt_k} v_k² (momentum) updated every step, here with ``torch._foreach``
  ops (as cheap as that design gets in torch), twice the model's memory.

Timing protocol (the machine is shared, so load changes from second to second): three identical copies
of the model take one training step each per round, in an order that rotates every round, so each round
sees the same load; the first ``warmup`` rounds are dropped. Reported: the ratio of median step times,
the median of per-round ratios, and the time spent inside ``optimizer.step()`` (where the hooks run)
minus the untracked optimizer step, divided by the untracked step — the least noisy estimate of the
added cost. Memory: tensors reachable from the tracker (model, optimizer state and gradients excluded),
split into its plan (partial-sum buffer, gather indices) and the records it holds before they reach
the file (pending records).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from .common import build_zoo_model, median, now, progress, table

NAME = "tracker_overhead"
SIZES = {"quick": [dict(width=0.25, batch=32, warmup=2, steps=10)],
         "full": [dict(width=0.25, batch=128, warmup=3, steps=100), dict(width=1.0, batch=128, warmup=2, steps=16)]}
TARGET = 1.02
MEMORY_TARGET = 0.01  # pending records / parameter memory


class PaperAccumulator:
    """The paper code's per-element buffers Σ e^{2λt} g² and Σ e^{2λt} v², updated after every step."""

    def __init__(self, opt: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
        self.opt, self.lr, self.lam, self.n = opt, lr, weight_decay, 0
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.acc_g = [torch.zeros_like(p) for p in self.params]
        self.acc_v = [torch.zeros_like(p) for p in self.params]
        opt.register_step_post_hook(self._post)

    def _post(self, opt, args, kwargs) -> None:
        w = math.exp(2 * self.lam * self.lr * self.n)  # t = η·n (constant lr, as in the paper's code)
        with torch.no_grad():
            grads = [p.grad for p in self.params]
            torch._foreach_addcmul_(self.acc_g, grads, grads, value=w)
            bufs = [opt.state[p]["momentum_buffer"] for p in self.params]
            torch._foreach_addcmul_(self.acc_v, bufs, bufs, value=w)
        self.n += 1

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.acc_g + self.acc_v)


def _tensor_bytes(objs, exclude: set[int]) -> int:
    """Bytes of the distinct tensor storages / ndarrays reachable through containers and symmetry_engine
    objects (not through the model or optimizer, whose tensors are excluded anyway)."""
    total, seen, storages, stack = 0, set(), set(exclude), list(objs)
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            key = o.untyped_storage().data_ptr()
            if key and key not in storages:
                storages.add(key)
                total += o.untyped_storage().nbytes()
        elif isinstance(o, np.ndarray):
            total += o.nbytes if o.base is None else 0
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set)):
            stack.extend(o)
        elif type(o).__module__.startswith("symmetry_engine.") and hasattr(o, "__dict__"):
            stack.extend(vars(o).values())
    return total


def tracker_memory(tr, model, opt) -> tuple[int, int]:
    """(plan bytes, pending-record bytes) held by the tracker, model/optimizer tensors excluded."""
    own = [*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters() if p.grad is not None),
           *(v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor))]
    exclude = {t.untyped_storage().data_ptr() for t in own}
    pending_objs = [tr._rec, tr._sink._host, tr._writer._file._buffer]
    pending = _tensor_bytes(pending_objs, exclude)
    exclude |= {tr._rec.untyped_storage().data_ptr()}
    if tr._sink._host is not None:
        exclude.add(tr._sink._host.untyped_storage().data_ptr())
    rest = [v for k, v in vars(tr).items() if k not in ("symmetries", "meta", "_rec", "_sink", "_writer")]
    return _tensor_bytes(rest, exclude), pending


def run_width(cfg: dict) -> dict:
    from symmetry_engine.graph.analysis import analyze
    from symmetry_engine.numeric import kernels
    from symmetry_engine.numeric.runlog import STATS_FILE
    from symmetry_engine.numeric.tracker import Tracker

    width = cfg["width"]
    torch.manual_seed(0)
    base, _ = build_zoo_model("vgg16_bn", num_classes=10, input_shape=(3, 32, 32), width=width)
    models = {k: copy.deepcopy(base) for k in ("untracked", "tracked", "paper")}
    x, y = torch.randn(cfg["batch"], 3, 32, 32), torch.randint(0, 10, (cfg["batch"],))
    t = now()
    syms = analyze(models["tracked"], x[:8]).symmetries
    t_analyze = now() - t
    hp = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    opts = {k: torch.optim.SGD(m.parameters(), **hp) for k, m in models.items()}
    tmp = tempfile.TemporaryDirectory(prefix="nmech-bench-")
    run_dir = os.path.join(tmp.name, "run")
    t = now()
    tr = Tracker(models["tracked"], opts["tracked"], run_dir, syms)  # default settings
    t_init = now() - t
    paper = PaperAccumulator(opts["paper"], hp["lr"], hp["weight_decay"])
    names = list(models)
    times = {k: [] for k in names}
    opt_times = {k: [] for k in names}
    plan_bytes = pending_bytes = 0

    def step(k: str) -> tuple[float, float]:
        model, opt = models[k], opts[k]
        t0 = now()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if k == "tracked":
            tr.record_loss(loss)
        t1 = now()
        opt.step()
        t2 = now()
        return t2 - t0, t2 - t1

    n_rounds = cfg["warmup"] + cfg["steps"]
    for i in range(n_rounds):
        order = names[i % 3:] + names[:i % 3]
        for k in order:
            total, in_opt = step(k)
            if i >= cfg["warmup"]:
                times[k].append(total)
                opt_times[k].append(in_opt)
            if k == "tracked":
                plan, pending = tracker_memory(tr, models["tracked"], opts["tracked"])
                plan_bytes, pending_bytes = max(plan_bytes, plan), max(pending_bytes, pending)
        if (i + 1) % max(1, n_rounds // 4) == 0:
            progress(f"width {width}: round {i + 1}/{n_rounds}")
    record_bytes = tr.record_size * 8
    sample_s = _sample_cost(tr)
    tr.close()
    stats_size = os.path.getsize(os.path.join(run_dir, STATS_FILE))
    tmp.cleanup()

    un = times["untracked"]
    param_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    out = {"config": {"model": f"vgg16_bn width {width}, 3x32x32, 10 classes", **cfg,
                      "torch_threads": torch.get_num_threads(), "fused_kernels": kernels.HAVE_NUMBA},
           "groups": len(syms), "params": sum(p.numel() for p in base.parameters()), "param_bytes": param_bytes,
           "analyze_s": t_analyze, "tracker_init_s": t_init, "record_bytes": record_bytes,
           "bytes_per_step": stats_size / (cfg["warmup"] + cfg["steps"] + 1),
           "tracker_plan_bytes": plan_bytes, "tracker_pending_bytes": pending_bytes,
           "memory_ratio_plan": plan_bytes / param_bytes, "memory_ratio_pending": pending_bytes / param_bytes,
           "paper_bytes": paper.nbytes(), "memory_ratio_paper": paper.nbytes() / param_bytes, "target": TARGET,
           "sample_row_s": sample_s, "sample_layers": len(tr._sampler.pairs) if tr._sampler else 0}
    for k in ("tracked", "paper"):
        tk = times[k]
        out[k] = {"step_s_median": median(tk), "step_s_mean": float(np.mean(tk)),
                  "ratio_of_medians": median(tk) / median(un),
                  "ratio_paired_median": median([b / a for a, b in zip(un, tk)]),
                  "ratio_of_means": float(np.mean(tk) / np.mean(un)),
                  "hook_s_median": median(opt_times[k]) - median(opt_times["untracked"]),
                  "ratio_hook": 1.0 + (median(opt_times[k]) - median(opt_times["untracked"])) / median(un)}
    out["untracked"] = {"step_s_median": median(un), "step_s_mean": float(np.mean(un)),
                        "opt_step_s_median": median(opt_times["untracked"])}
    print(f"  VGG-16-BN width {width}, batch {cfg['batch']}: {len(syms)} groups, {out['params']} parameters "
          f"({param_bytes / 1e6:.1f} MB float32), {cfg['steps']} rounds after {cfg['warmup']} warm-up")
    rows = [[k, median(times[k]), float(np.mean(times[k])), min(times[k]), max(times[k]), median(opt_times[k])]
            for k in names]
    print(table(rows, ["per step (s)", "median", "mean", "min", "max", "opt.step median"]))
    for k in ("tracked", "paper"):
        r = out[k]
        print(f"  {k:>7} / untracked: {r['ratio_of_medians']:.4f}x (medians), {r['ratio_paired_median']:.4f}x "
              f"(median of per-round ratios), {r['ratio_of_means']:.4f}x (means); inside optimizer.step: "
              f"+{r['hook_s_median'] * 1e3:.2f} ms per step = {r['ratio_hook']:.4f}x")
    ok = out["tracked"]["ratio_paired_median"] <= TARGET
    ok_hook = out["tracked"]["ratio_hook"] <= TARGET
    print(f"  goal: tracker <= {TARGET}x per step: {'met' if ok else 'NOT met'} end to end (median of per-round "
          f"ratios), {'met' if ok_hook else 'NOT met'} by the time inside optimizer.step()")
    mem_ok = out["memory_ratio_pending"] <= MEMORY_TARGET
    print(f"  memory: tracker plan {plan_bytes / 1e6:.3f} MB = {out['memory_ratio_plan']:.4f}x params; pending "
          f"records {pending_bytes / 1e6:.3f} MB = {out['memory_ratio_pending']:.4f}x params (goal <= "
          f"{MEMORY_TARGET}: {'met' if mem_ok else 'NOT met'}; one record = {record_bytes / 1e3:.1f} kB); "
          f"paper buffers {paper.nbytes() / 1e6:.1f} MB = {out['memory_ratio_paper']:.2f}x params")
    print(f"  stats.bin: {out['bytes_per_step']:.0f} bytes/step; one-time: analyze {t_analyze:.2f} s, "
          f"Tracker() {t_init:.3f} s")
    print(f"  parameter sample (samples.bin, {out['sample_layers']} layers): {sample_s * 1e6:.0f} us per step to take "
          f"the row = {sample_s / median(un):.5f}x of the untracked step (part of the tracked step above)")
    return out


def _sample_cost(tr) -> float:
    """Median time of the per-step sample (numeric/samples.py): one ``torch.take`` per layer into a row."""
    if tr._sampler is None:
        return 0.0
    ts = []
    for _ in range(200):
        t = now()
        tr._sampler.take()
        ts.append(now() - t)
    return median(ts)


def run(quick: bool) -> dict:
    res = {}
    for cfg in SIZES["quick" if quick else "full"]:
        res[f"width_{cfg['width']}"] = run_width(cfg)
    return {"widths": res, "target": TARGET}
