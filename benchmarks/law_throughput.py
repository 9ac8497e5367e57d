"""Benchmark 4: how fast the numeric laws run over long, wide logs, in bounded memory, and that they stay finite.

Why it exists: evaluating a run applies the exact and the continuous law to every group: [T+1, G] with T
up to tens of thousands of steps and G up to tens of thousands of groups (a full-width VGG-16-BN has
14,209). The goal (issue: numeric back end at scale) is [40,001 × 20,000] in under 10 s per law on this
CPU with bounded memory. Both laws are affine recurrences x_{n+1} = A_n x_n + C_n u_n + c_n with per-step
coefficients (symbolic/laws.py ``coefficients``, numeric/predict.py ``continuous_coefficients``), run by
numeric/scan.py over chunks of steps with the state carried from chunk to chunk, so memory is one chunk
of statistics, whatever T.

The statistics are synthetic, float32 (as a float32 run would record them), with per-group magnitudes
log-uniform over 10^-30 … 10^30 (most of float32's range; the paper's code had to fall back to float128),
drawn once as a pool of 998 rows that the chunks cycle through.
Law: scale, SGD momentum 0.9, weight decay 5e-4, η = 0.1 → 0.01 (T/2) → 0.001 (3T/4). Each chunk of
statistics is generated just before it is used (as a chunked reader of stats.bin would hand it over);
generation is not timed. The streaming runs in a child process so its peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import numpy as np

from .common import now, table

NAME = "law_throughput"
SIZES = {"quick": dict(T=5_000, G=2_000, chunk=1_000), "full": dict(T=40_000, G=20_000, chunk=500)}
TARGET_S = 10.0


def schedule(T: int) -> np.ndarray:
    lrs = np.full(T, 0.1)
    lrs[T // 2:] = 0.01
    lrs[3 * T // 4:] = 0.001
    return lrs


POOL_ROWS = 997  # random rows drawn once and cycled through (drawing 1.6e9 normals would dominate the wall time)


def _pool(rng: np.random.Generator, G: int) -> np.ndarray:
    return rng.standard_normal((POOL_ROWS + 1, G), dtype=np.float32)


def _chunk(pool: np.ndarray, t0: int, L: int, scale: np.ndarray) -> dict[str, np.ndarray]:
    rows = (t0 + np.arange(L)) % POOL_ROWS
    q = pool[rows] * (1e-3 * scale)
    d = np.abs(pool[rows + 1]) * (1e-4 * scale)
    return {"Q": q, "D": d, "G": d}


def peak_rss() -> int:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's peak at fork)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(T: int, G: int, chunk: int) -> dict:
    """Stream both laws over [T+1, G] synthetic statistics; returns timings, finiteness and peak RSS."""
    from symmetry_engine.numeric.predict import continuous_coefficients
    from symmetry_engine.numeric.scan import HAVE_NUMBA, scan_affine
    from symmetry_engine.symbolic import RuleSpec, compiled_recurrence

    spec = RuleSpec("sgd", True)
    lrs = schedule(T)
    lam, beta, d = np.full(T, 5e-4), np.full(T, 0.9), np.zeros(T)
    params = {"lambda": lam, "beta": beta, "d": d}
    rng0 = np.random.default_rng(0)
    scale = (10.0 ** rng0.uniform(-30, 30, G)).astype(np.float32)
    t = now()
    comp = compiled_recurrence("scale", spec)
    coef = {"exact": comp.coefficients(lrs, params, first_at=0),
            "continuous": continuous_coefficients("scale", spec, lrs, lam, beta, d, np.ones(T, dtype=bool))}
    t_coef = now() - t
    names = {"exact": list(comp.inputs), "continuous": ["D"]}
    pool = _pool(rng0, G)
    warm = _chunk(pool[:, :8], 0, 4, scale[:8])
    for law, (A, C, c) in coef.items():  # compile the scan for these dtypes outside the timing
        scan_affine(A[:4], C[:4], c[:4], [warm[n] for n in names[law]], np.zeros((A.shape[1], 8)))
    out = {"T": T, "G": G, "chunk": chunk, "coefficients_s": t_coef, "numba": HAVE_NUMBA}
    rss_before = peak_rss()
    for law, (A, C, c) in coef.items():
        x = np.zeros((A.shape[1], G))
        x[0] = scale
        y = np.empty((chunk, G))
        secs, lo, hi, nonfinite, growth = 0.0, np.inf, 0.0, 0, 0.0
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            stats = _chunk(pool, t0, t1 - t0, scale)
            t = now()
            pred = scan_affine(A[t0:t1], C[t0:t1], c[t0:t1], [stats[n] for n in names[law]], x, out=y[:t1 - t0])
            secs += now() - t
            mag = np.abs(pred)
            nonfinite += int(pred.size - np.count_nonzero(np.isfinite(pred)))
            lo, hi = min(lo, float(mag.min())), max(hi, float(mag.max()))
            growth = max(growth, float((mag.max(0) / scale).max()))
        out[law] = {"seconds": secs, "group_steps_per_s": G * T / secs, "nonfinite": nonfinite,
                    "abs_min": lo, "abs_max": hi, "max_over_initial": growth}
    out["peak_rss_bytes"] = peak_rss()
    out["rss_before_streaming_bytes"] = rss_before
    return out


def run(quick: bool) -> dict:
    cfg = SIZES["quick" if quick else "full"]
    code = (f"import json; from benchmarks.law_throughput import worker; "
            f"print('RESULT ' + json.dumps(worker({cfg['T']}, {cfg['G']}, {cfg['chunk']})))")
    t = now()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    wall = now() - t
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"law worker failed: {proc.stderr.strip()[-2000:]}")
    r = json.loads(line[len("RESULT "):])
    T, G = r["T"], r["G"]
    assert r["exact"]["nonfinite"] == 0 and r["continuous"]["nonfinite"] == 0, "non-finite predictions"
    rows = [[law, r[law]["seconds"], f"{r[law]['group_steps_per_s']:.3g}", f"{1e9 * r[law]['seconds'] / (G * T):.2f}",
             "met" if r[law]["seconds"] < TARGET_S else "NOT met"] for law in ("exact", "continuous")]
    data_mb = r["chunk"] * G * 3 * 4 / 1e6
    print(f"  statistics [T+1, G] = [{T + 1}, {G}] float32 streamed in chunks of {r['chunk']} steps "
          f"(~{data_mb:.0f} MB of statistics per chunk); scale law, SGD momentum 0.9, wd 5e-4, 3-step schedule; "
          f"compiled scan: {'numba' if r['numba'] else 'NOT available (numpy loop over steps)'}")
    print(table(rows, ["law", "seconds", "groups*steps/s", "ns per group*step", f"goal < {TARGET_S:g} s"]))
    print(f"  per-step coefficients for both laws: {r['coefficients_s']:.2f} s (incl. the engine's derivation); peak RSS "
          f"of the worker {r['peak_rss_bytes'] / 2**20:.0f} MiB, of which {r['rss_before_streaming_bytes'] / 2**20:.0f} MiB "
          f"before streaming (imports, coefficients, random pool; a [T+1, G] float64 array alone would be "
          f"{(T + 1) * G * 8 / 2**30:.1f} GiB); worker wall time {wall:.1f} s")
    print(f"  all {2 * T * G} predictions finite; |pred| in [{min(r['exact']['abs_min'], r['continuous']['abs_min']):.3g}, "
          f"{max(r['exact']['abs_max'], r['continuous']['abs_max']):.3g}] for group scales 10^-30..10^30; "
          f"max |pred| / N_0 = {max(r['exact']['max_over_initial'], r['continuous']['max_over_initial']):.3g}")
    return {"rss_before_streaming_bytes": r["rss_before_streaming_bytes"], "config": {"T": T, "G": G, "chunk": r["chunk"], "kind": "scale",
                       "optimizer": {"rule": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
                       "lr_schedule": "0.1, 0.01 from T/2, 0.001 from 3T/4", "input_dtype": "float32"},
            "exact": r["exact"], "continuous": r["continuous"], "peak_rss_bytes": r["peak_rss_bytes"],
            "numba": r["numba"], "all_finite": True, "target_s": TARGET_S,
            "predict_exact": r["exact"], "predict_continuous": r["continuous"]}
