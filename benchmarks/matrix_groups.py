"""Matrix symmetries on torchvision models: how many groups of each kind, what the label flow costs, and
a certified sample.

Why it exists: the matrix pass runs integer label tensors of the real activation shapes through every
data-movement op (symmetry_engine/graph/matrix_flow.py), so its cost grows with the activations, not with
the number of parameters; this prints it beside the capture it follows.  Each model: capture time, matrix
pass time, groups by kind (query/key, value/output, Linear/Conv pair; rotary subgroups apart), and
``--certify N`` groups spread over the model checked with a random group element in float64.

    python -m benchmarks.matrix_groups [--models vit_b_16,swin_t] [--size 224] [--certify 8]
"""

from __future__ import annotations

import argparse
import time

import torch


def kind_of(note: str) -> str:
    for k in ("query/key", "value/output", "Linear pair", "Conv pair"):
        if k in note:
            return k
    return note


def run(models: list[str], size: int, certify: int) -> list[dict]:
    import torchvision

    from symmetry_engine.graph import capture
    from symmetry_engine.graph.matrix import matrix_pass
    from symmetry_engine.graph.matrix_certify import certify_matrix

    rows = []
    for name in models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)()
        x = torch.randn(2, 3, size, size)
        t0 = time.perf_counter()
        cg = capture(model, x)
        t1 = time.perf_counter()
        syms = matrix_pass(cg)
        t2 = time.perf_counter()
        kinds: dict[str, int] = {}
        for s in syms:
            k = kind_of(s.note) + (" (rotary)" if s.basis is not None else "")
            kinds[k] = kinds.get(k, 0) + 1
        row = {"model": name, "capture_s": t1 - t0, "matrix_s": t2 - t1, "groups": len(syms), "kinds": kinds}
        if certify and syms:
            step = max(len(syms) // certify, 1)
            certs = certify_matrix(model, x, syms[::step][:certify], batch_size=2)
            row["certified"] = f"{sum(c.certified for c in certs)}/{len(certs)}"
            row["max_loss_rel"] = max(c.loss_rel_joint for c in certs)
        rows.append(row)
        print(f"{name:<20} capture {row['capture_s']:6.2f} s  matrix {row['matrix_s']:5.2f} s  groups {len(syms):4d}  "
              + ", ".join(f"{k} {v}" for k, v in kinds.items())
              + (f"  certified {row['certified']} (max loss change {row['max_loss_rel']:.1e})" if "certified" in row else ""),
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b_16,swin_t,maxvit_t,resnet50,convnext_tiny")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--certify", type=int, default=4, help="groups per model checked numerically (0: none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run([m for m in args.models.split(",") if m], args.size, args.certify)


if __name__ == "__main__":
    main()
