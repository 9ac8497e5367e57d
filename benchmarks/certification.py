"""Benchmark 3: the price of certifying every symmetry numerically.

Why it exists: ``analyze(..., certify_symmetries=True)`` proves each detected symmetry by numbers
(float64 copy of the model, random group elements, gradient test; see certify.py). That is the check a
user runs when they distrust the graph analysis, so its cost must be known: how many times a plain
``analyze`` it costs, and what it costs per symmetry (it grows with the number of groups checked one by
one). Model: VGG-16-BN from the zoo at a small width, 3×32×32 input, batch 4, cross-entropy.
Timings are medians of ``repeats`` runs after one warm-up analysis of the same model.
"""

from __future__ import annotations

import torch

from .common import build_zoo_model, median, progress, table, timed

NAME = "certification"
SIZES = {"quick": dict(width=0.125, repeats=1), "full": dict(width=0.25, repeats=3)}


def run(quick: bool) -> dict:
    from symmetry_engine.graph.analysis import analyze

    cfg = SIZES["quick" if quick else "full"]
    torch.manual_seed(0)
    model, _ = build_zoo_model("vgg16_bn", num_classes=10, input_shape=(3, 32, 32), width=cfg["width"])
    x = torch.randn(4, 3, 32, 32)
    analyze(model, x)  # warm-up: first torch.export of this model
    plain_t, plain = timed(lambda: analyze(model, x), cfg["repeats"])
    progress(f"plain analyze: {median(plain_t):.2f} s")
    cert_t, cert = timed(lambda: analyze(model, x, certify_symmetries=True), cfg["repeats"])
    progress(f"certified analyze: {median(cert_t):.2f} s")
    n = len(cert.symmetries)
    p, c = median(plain_t), median(cert_t)
    n_ok = sum(cert_.certified for cert_ in cert.certificates)
    singles = sum(cert_.loss_rel_single is not None for cert_ in cert.certificates)
    per_kind = {k: v for k, v in cert.counts.items()}
    out = {"config": {"model": f"vgg16_bn width {cfg['width']}, 3x32x32, batch 4", **cfg,
                      "torch_threads": torch.get_num_threads()},
           "plain_s": p, "certified_s": c, "ratio": c / p, "certification_only_s": c - p,
           "per_symmetry_ms": 1e3 * (c - p) / max(1, n), "symmetries": n, "by_kind": per_kind,
           "certified": n_ok, "single_checks": singles, "plain_runs_s": plain_t, "certified_runs_s": cert_t,
           "all_certified": cert.all_certified, "params": sum(q.numel() for q in model.parameters())}
    print(table([["analyze", p, "", ""], ["analyze + certify", c, c - p, 1e3 * (c - p) / max(1, n)]],
                ["", "time s", "extra s", "extra ms / symmetry"]))
    print(f"  certified / plain = {c / p:.2f}x; {n_ok}/{n} symmetries certified "
          f"({', '.join(f'{k} {v}' for k, v in per_kind.items())}); {singles} single-group loss checks; "
          f"{out['params']} parameters")
    return out
