"""Benchmark 4: how fast the numeric laws run over long, wide statistics, and that they stay finite.

Why it exists: ``evaluate_run`` calls ``predict_exact`` and ``predict_continuous`` on every group of a
run, i.e. arrays [T+1, G] with T up to tens of thousands of steps and G up to tens of thousands of
groups. They must be vectorized over groups (throughput in groups·steps per second) and must not
overflow: the paper's code weighted terms by e^{+γt}, which overflows float32 and forced float128.
Here the statistics are synthetic, stored in float32 (as a float32 training run would produce them),
with per-group magnitudes spread log-uniformly over 10^-30 … 10^30 (most of float32's range). The law is
scale with SGD momentum 0.9, weight decay 5e-4 and a step schedule η = 0.1 → 0.01 (T/2) → 0.001 (3T/4),
so the continuous law runs three constant-η segments. Every prediction is asserted finite.

Memory: the laws need a few float64 temporaries per element. Their peak is measured with tracemalloc on
a small calibration slice (numpy reports its buffers to tracemalloc); groups are then processed in
column chunks that keep the peak under MEM_BUDGET (groups are independent, so chunks give the same
predictions). Timings count only the predict_* calls, not the data generation.
"""

from __future__ import annotations

import os
import tracemalloc

import numpy as np

from .common import now, progress, table

NAME = "law_throughput"
SIZES = {"quick": dict(T=5_000, G=1_000), "full": dict(T=40_000, G=5_000)}
MEM_BUDGET = float(os.environ.get("NMECH_BENCH_MEM_GB", "2")) * 2**30
CALIBRATION_GROUPS = 64


def synthetic(T: int, g: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """float32 statistics for ``g`` groups: N (only row 0 is read by the laws), Q and D [T+1, g]."""
    rng = np.random.default_rng(seed)
    scale = (10.0 ** rng.uniform(-30, 30, g)).astype(np.float32)
    q = rng.standard_normal((T + 1, g), dtype=np.float32)
    q *= 1e-3 * scale
    d = np.abs(rng.standard_normal((T + 1, g), dtype=np.float32))
    d *= 1e-4 * scale
    return {"N": np.broadcast_to(scale, (T + 1, g)), "Q": q, "D": d}, scale


def schedule(T: int) -> np.ndarray:
    lrs = np.full(T, 0.1)
    lrs[T // 2:] = 0.01
    lrs[3 * T // 4:] = 0.001
    return lrs


def run(quick: bool) -> dict:
    from symmetry_engine.numeric.predict import OptimizerConfig, predict_continuous, predict_exact

    cfg = SIZES["quick" if quick else "full"]
    T, G = cfg["T"], cfg["G"]
    opt = OptimizerConfig(rule="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    lrs = schedule(T)
    laws = {"predict_exact": predict_exact, "predict_continuous": predict_continuous}
    for fn in laws.values():  # compile the engine's laws (sympy derivation, lambdify) outside the timings
        fn("scale", synthetic(4, 2, 0)[0], lrs[:4], opt)

    # calibration: peak bytes per (row x group) of data + each law, measured with tracemalloc
    tracemalloc.start()
    stats, _ = synthetic(T, CALIBRATION_GROUPS, 1)
    for fn in laws.values():
        fn("scale", stats, lrs, opt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del stats
    per_elem = peak / ((T + 1) * CALIBRATION_GROUPS)
    chunk = int(min(G, max(1, MEM_BUDGET // (per_elem * (T + 1)))))
    n_chunks = -(-G // chunk)
    progress(f"peak {per_elem:.0f} bytes per (step x group) -> {n_chunks} chunk(s) of <= {chunk} groups "
             f"(budget {MEM_BUDGET / 2**30:.1f} GiB)")

    secs = {k: 0.0 for k in laws}
    lo, hi, nonfinite = np.inf, 0.0, 0
    growth = 0.0
    for c in range(n_chunks):
        g = min(chunk, G - c * chunk)
        stats, scale = synthetic(T, g, 100 + c)
        for name, fn in laws.items():
            t = now()
            pred = fn("scale", stats, lrs, opt)
            secs[name] += now() - t
            assert pred.shape == (T + 1, g)
            nonfinite += int(pred.size - np.count_nonzero(np.isfinite(pred)))
            mag = np.abs(pred)
            lo, hi = min(lo, float(mag.min())), max(hi, float(mag.max()))
            growth = max(growth, float((mag.max(0) / scale).max()))
            del pred, mag
        del stats
        if n_chunks > 1:
            progress(f"chunk {c + 1}/{n_chunks}: exact {secs['predict_exact']:.1f} s, "
                     f"continuous {secs['predict_continuous']:.1f} s so far")
    assert nonfinite == 0, f"{nonfinite} non-finite predictions"
    rows, out = [], {"config": {"T": T, "G": G, "kind": "scale", "optimizer": opt.to_json(),
                                "lr_schedule": "0.1, 0.01 from T/2, 0.001 from 3T/4", "input_dtype": "float32",
                                "group_scale_range": [1e-30, 1e30]},
                     "chunks": n_chunks, "chunk_groups": chunk, "peak_bytes_per_element": per_elem,
                     "all_finite": True, "abs_pred_min": lo, "abs_pred_max": hi,
                     "max_pred_over_initial_N": growth}
    for name, s in secs.items():
        out[name] = {"seconds": s, "group_steps_per_s": G * T / s}
        rows.append([name, s, f"{G * T / s:.3g}", f"{1e9 * s / (G * T):.1f}"])
    print(f"  statistics [T+1, G] = [{T + 1}, {G}] float32, scale law, SGD momentum 0.9, wd 5e-4, 3-step schedule")
    print(table(rows, ["law", "seconds", "groups*steps/s", "ns per group*step"]))
    print(f"  all {2 * (T + 1) * G} predictions finite; |pred| in [{lo:.3g}, {hi:.3g}] for group scales "
          f"10^-30..10^30 (float32 max 3.4e38); max |pred| / N_0 = {growth:.3g}")
    return out
