"""Coverage: does `analyze` work on every torchvision classification model, what does it find, how long?

Why it exists: the analyzer's promise is "state-of-the-art architectures", so the table in
docs/model_zoo.md must say, model by model, whether the analysis runs, how many groups of each kind it
reports, which ops it does not know (they block symmetries and are named), and what it costs. Every
row is measured in the run that prints it.

Protocol: ``torchvision.models.list_models(module=torchvision.models)`` (classification), each built with
``weights=None, num_classes=10`` in train mode, an input of 2×3×S×S (S = 224; 299 for Inception-v3; ViT
variants at their declared image size), plain analysis (no certification; soundness is tested in
tests/), one run per model, wall time of the whole `analyze` call. GoogLeNet and Inception-v3 keep their
auxiliary heads and are scored on the main logits (the default of ``--output``).

    python -m benchmarks.coverage                       # all models, markdown table on stdout
    python -m benchmarks.coverage --models resnet18,vit_b_16 --size 224
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

NAME = "coverage"


def _size(name: str, default: int) -> int:
    return 299 if name == "inception_v3" else default


def row(name: str, size: int) -> dict:
    import torchvision

    from symmetry_engine.graph.analysis import analyze

    torch.manual_seed(0)
    out: dict = {"model": name, "ok": False}
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=10).train()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        out["error"] = f"build: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        return out
    s = _size(name, size)
    x = torch.randn(2, 3, s, s)
    t = time.perf_counter()
    try:
        result = analyze(model, x)
    except Exception as exc:  # noqa: BLE001 - a failing model is a row, not a crash
        out["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:100]}"
        out["time"] = time.perf_counter() - t
        return out
    out.update(ok=True, time=time.perf_counter() - t, size=s, unknown=result.unknown_ops, **result.counts,
               params=sum(p.numel() for p in model.parameters()))
    return out


def main(argv: list[str] | None = None) -> int:
    import torchvision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated torchvision names (default: every classification model)")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = args.models.split(",") if args.models else sorted(torchvision.models.list_models(module=torchvision.models))
    rows = []
    print("| model | analyzes | translation | scale | rescale | unknown ops | time (s) |")
    print("|---|---|---:|---:|---:|---|---:|")
    for n in names:
        r = row(n, args.size)
        rows.append(r)
        if r["ok"]:
            print(f"| {n} | yes | {r['translation']} | {r['scale']} | {r['rescale']} | "
                  f"{', '.join(r['unknown']) or '—'} | {r['time']:.1f} |")
        else:
            print(f"| {n} | no: {r['error']} | | | | | {r.get('time', 0):.1f} |")
        sys.stdout.flush()
    ok = sum(r["ok"] for r in rows)
    total_t = sum(r.get("time", 0.0) for r in rows)
    print(f"\n{ok}/{len(rows)} models analyze ({100 * ok / max(len(rows), 1):.1f}%); total analysis time {total_t:.0f} s; "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, 1 thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
