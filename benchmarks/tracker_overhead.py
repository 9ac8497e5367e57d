"""Benchmark 1: what attaching the tracker costs a real training loop (time, disk, memory).

Why it exists: the tracker is meant to stay on for whole training runs, so it must stay cheap. Its
design (tracker.py docstring) promises batched per-group reductions, O(groups) records and no O(params)
state for SGD with momentum (Δ is read from the momentum buffer). This benchmark measures those promises
on VGG-16-BN (width 0.25, 3×32×32, 10 classes) trained with SGD (lr 0.01, momentum 0.9, weight decay
5e-4): per-step wall time with and without the tracker (target ≤ 1.3×, see README), the number of
symmetry groups, bytes written to stats.bin per step, and the tracker's persistent tensor memory next to
the model's parameter memory.

Timing protocol (the machine is shared, so load changes from second to second): two identical copies of
the model, one tracked and one not, take training steps alternately (A B, B A, ...), so each pair of
steps sees the same load. The first ``warmup`` pairs are dropped. The tracker's ``flush_every`` is the
block length, so exactly one flush (host copy + write + fsync) lands in the last measured step: medians
leave it out, means include it. In full mode the block is 50 steps, the Tracker's default flush_every.
"""

from __future__ import annotations

import copy
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from .common import build_zoo_model, median, now, progress, table

NAME = "tracker_overhead"
SIZES = {"quick": dict(batch=32, warmup=2, steps=12), "full": dict(batch=128, warmup=3, steps=47)}
TARGET = 1.3
DEFAULT_FLUSH = 50  # Tracker's default flush_every, used for the memory figure at default settings


def _tensor_bytes(objs, exclude: set[int]) -> int:
    """Bytes of the distinct tensor storages / ndarrays reachable through containers and dataclass-like
    symmetry_engine objects (not through the model or optimizer, whose tensors are excluded anyway)."""
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
    """(plan and state bytes, pending-record bytes) held by the tracker, model/optimizer tensors excluded."""
    own = [*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters() if p.grad is not None),
           *(v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor))]
    exclude = {t.untyped_storage().data_ptr() for t in own}
    rest = [v for k, v in vars(tr).items() if k not in ("_pending", "symmetries", "meta")]
    return _tensor_bytes(rest, exclude), _tensor_bytes(tr._pending, exclude)


def run(quick: bool) -> dict:
    from symmetry_engine.graph.analysis import analyze
    from symmetry_engine.numeric.runlog import STATS_FILE
    from symmetry_engine.numeric.tracker import Tracker

    cfg = SIZES["quick" if quick else "full"]
    torch.manual_seed(0)
    model_a, _ = build_zoo_model("vgg16_bn", num_classes=10, input_shape=(3, 32, 32), width=0.25)
    model_b = copy.deepcopy(model_a)
    x, y = torch.randn(cfg["batch"], 3, 32, 32), torch.randint(0, 10, (cfg["batch"],))
    t = now()
    syms = analyze(model_b, x[:8]).symmetries
    t_analyze = now() - t
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for m in (model_a, model_b)]
    tmp = tempfile.TemporaryDirectory(prefix="nmech-bench-")
    run_dir = os.path.join(tmp.name, "run")
    n_steps = cfg["warmup"] + cfg["steps"]
    t = now()
    tr = Tracker(model_b, opts[1], run_dir, syms, flush_every=n_steps)
    t_init = now() - t
    times = {False: [], True: []}      # whole step
    opt_times = {False: [], True: []}  # optimizer.step() alone (the tracker's hooks run inside it)
    plan_bytes = pending_peak = pending_records = 0

    def step(tracked: bool) -> tuple[float, float]:
        model, opt = (model_b, opts[1]) if tracked else (model_a, opts[0])
        t0 = now()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if tracked:
            tr.record_loss(loss)
        t1 = now()
        opt.step()
        t2 = now()
        return t2 - t0, t2 - t1

    for i in range(n_steps):
        for tracked in ((False, True) if i % 2 == 0 else (True, False)):
            total, in_opt = step(tracked)
            if i >= cfg["warmup"]:
                times[tracked].append(total)
                opt_times[tracked].append(in_opt)
            if tracked and tr._pending:
                plan, pending = tracker_memory(tr, model_b, opts[1])
                plan_bytes = max(plan_bytes, plan)
                if pending > pending_peak:
                    pending_peak, pending_records = pending, len(tr._pending)
        if (i + 1) % max(1, n_steps // 4) == 0:
            progress(f"step pair {i + 1}/{n_steps}")
    tr.close()
    stats_size = os.path.getsize(os.path.join(run_dir, STATS_FILE))
    tmp.cleanup()

    base, trk = times[False], times[True]
    paired = [b / a for a, b in zip(base, trk)]
    n_params = sum(p.numel() for p in model_b.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model_b.parameters())
    per_record = pending_peak / max(1, pending_records)
    counts = {k: sum(s.kind == k for s in syms) for k in ("translation", "scale", "rescale")}
    out = {
        "config": {"model": "vgg16_bn width 0.25, 3x32x32, 10 classes", **cfg, "torch_threads": torch.get_num_threads()},
        "step_s_median": {"untracked": median(base), "tracked": median(trk)},
        "step_s_mean": {"untracked": float(np.mean(base)), "tracked": float(np.mean(trk))},
        "optimizer_step_s_median": {"untracked": median(opt_times[False]), "tracked": median(opt_times[True])},
        "ratio_of_medians": median(trk) / median(base), "ratio_paired_median": median(paired),
        "ratio_of_means": float(np.mean(trk) / np.mean(base)), "target": TARGET,
        "analyze_s": t_analyze, "tracker_init_s": t_init,
        "groups": len(syms), "groups_by_kind": counts, "params": n_params, "param_bytes": param_bytes,
        "bytes_per_step": stats_size / (n_steps + 1), "record_bytes": tr.record_size * 8,
        "tracker_plan_bytes": plan_bytes, "pending_bytes_per_record": per_record,
        "memory_ratio_plan": plan_bytes / param_bytes,
        "memory_ratio_default_flush": (plan_bytes + DEFAULT_FLUSH * per_record) / param_bytes,
    }
    ok = out["ratio_of_medians"] <= TARGET
    print(table([["untracked", median(base), float(np.mean(base)), min(base), max(base), median(opt_times[False])],
                 ["tracked", median(trk), float(np.mean(trk)), min(trk), max(trk), median(opt_times[True])]],
                ["per step (s)", "median", "mean", "min", "max", "opt.step median"]))
    print(f"  tracked / untracked: {out['ratio_of_medians']:.3f}x (medians; target <= {TARGET}x: "
          f"{'met' if ok else 'NOT met'}), {out['ratio_paired_median']:.3f}x (median of {len(paired)} paired "
          f"steps), {out['ratio_of_means']:.3f}x (means, incl. one flush)")
    print(f"  tracker hooks: +{median(opt_times[True]) - median(opt_times[False]):.4f} s per step inside optimizer.step()")
    print(f"  groups: {len(syms)} ({', '.join(f'{k} {v}' for k, v in counts.items())}); parameters: {n_params} "
          f"({param_bytes / 1e6:.2f} MB float32); groups / params = {len(syms) / n_params:.4f}")
    print(f"  stats.bin: {out['bytes_per_step']:.0f} bytes/step (record_size x 8 = {out['record_bytes']}) = "
          f"{out['bytes_per_step'] / param_bytes:.4f} x the parameter bytes")
    print(f"  tracker memory: plan/index tensors {plan_bytes / 1e6:.3f} MB = {out['memory_ratio_plan']:.3f} x params; "
          f"pending records {per_record / 1e3:.1f} kB each (peak seen {pending_records}); at the default "
          f"flush_every={DEFAULT_FLUSH}: {out['memory_ratio_default_flush']:.3f} x params")
    print(f"  one-time: analyze {t_analyze:.2f} s, Tracker() plan {t_init:.3f} s")
    return out
