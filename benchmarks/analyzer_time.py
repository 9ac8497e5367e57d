"""Benchmark 2: how long the analyzer takes on standard torchvision models, split into its two phases.

Why it exists: ``analyze`` runs once per model before training (and inside ``track``), so it must cost
about as much as a few training steps, not minutes. The split says where time goes: capture
(``symmetry_engine.graph.capture``: ``torch.export`` + building the NetworkX graph) versus detection
(``detect_symmetries``: the scale/rescale/translation passes). Each model's time is put next to one
forward+backward pass of the same model on the same input, measured in this run (ratio analyze /
fwd+bwd), and next to Torch-Pruning's ``DependencyGraph().build_dependency`` on a fresh copy of the same
model and input, measured in the same process and the same loop (ratio analyze / Torch-Pruning; the goal
is at most 0.5×). Torch-Pruning traces autograd once and finds coupled channels, not symmetries; it is
the `bench` extra (``pip install 'neural-mechanics[bench]'``), and its column says "not installed"
without it.

Full mode: 224×224 inputs (batch 2: batch norm needs a batch), 1000 classes. Quick mode: resnet18 and
vgg16_bn at 64×64. Each analysis timing is the median of ``repeats`` runs, each on a freshly built
model (as a user pays it), after one warm-up analysis of a small zoo model that absorbs the process's
one-time torch.export set-up (printed separately).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import build_zoo_model, median, now, progress, table, timed

NAME = "analyzer_time"
SIZES = {"quick": dict(models=("resnet18", "vgg16_bn"), size=64, repeats=2, fb_repeats=3),
         "full": dict(models=("resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "densenet121", "vit_b_16"),
                      size=224, repeats=3, fb_repeats=5)}


def _torch_pruning_build(name: str, x: torch.Tensor) -> float | None:
    """Seconds for Torch-Pruning's dependency-graph build on a fresh model (None: not installed)."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=1000)
    t = now()
    tp.DependencyGraph().build_dependency(model, example_inputs=x)
    return now() - t


def _warm_up() -> float:
    """The first capture in a process pays torch.export's one-time set-up; time it apart from the models."""
    from symmetry_engine.graph import capture, detect_symmetries

    small, _ = build_zoo_model("vgg11_bn", num_classes=10, input_shape=(3, 32, 32), width=0.125)
    t = now()
    detect_symmetries(capture(small, torch.randn(2, 3, 32, 32)))
    return now() - t


def run(quick: bool) -> dict:
    import torchvision

    from symmetry_engine.graph import capture, detect_symmetries

    cfg = SIZES["quick" if quick else "full"]
    warm = _warm_up()
    progress(f"warm-up: first analysis in this process (small vgg11_bn): {warm:.2f} s")
    results, rows = {}, []
    for name in cfg["models"]:
        x = torch.randn(2, 3, cfg["size"], cfg["size"])
        y = torch.randint(0, 1000, (2,))
        cap_t, det_t, n_sym = [], [], 0
        for _ in range(cfg["repeats"]):
            torch.manual_seed(0)
            model = torchvision.models.get_model(name, weights=None, num_classes=1000)
            t0 = now()
            cg = capture(model, x)
            t1 = now()
            det = detect_symmetries(cg)
            t2 = now()
            cap_t.append(t1 - t0)
            det_t.append(t2 - t1)
            n_sym = len(det.symmetries)

        def fwd_bwd() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

        fwd_bwd()  # warm-up (allocator, kernels)
        fb_t, _ = timed(fwd_bwd, cfg["fb_repeats"])
        cap, det_s, fb = median(cap_t), median(det_t), median(fb_t)
        tp_runs = [t for t in (_torch_pruning_build(name, x) for _ in range(cfg["repeats"])) if t is not None]
        ref = median(tp_runs) if tp_runs else None
        results[name] = {"capture_s": cap, "detect_s": det_s, "analyze_s": cap + det_s, "fwd_bwd_s": fb,
                         "ratio_analyze_over_fwd_bwd": (cap + det_s) / fb, "symmetries": n_sym,
                         "capture_method": cg.method, "graph_nodes": cg.graph.number_of_nodes(),
                         "params": sum(p.numel() for p in model.parameters()),
                         "capture_runs_s": cap_t, "detect_runs_s": det_t, "fwd_bwd_runs_s": fb_t,
                         "torch_pruning_build_s": ref, "torch_pruning_runs_s": tp_runs,
                         "ratio_analyze_over_torch_pruning": None if ref is None else (cap + det_s) / ref}
        rows.append([name, cap, det_s, cap + det_s, fb, (cap + det_s) / fb, n_sym,
                     "not installed" if ref is None else f"{ref:.2f}",
                     "" if ref is None else f"{(cap + det_s) / ref:.2f}x"])
        progress(f"{name}: capture {cap:.2f} s, detect {det_s:.2f} s, fwd+bwd {fb:.2f} s, {n_sym} symmetries")
    print(f"  input 2x3x{cfg['size']}x{cfg['size']}, 1000 classes; medians of {cfg['repeats']} analyses and "
          f"{cfg['fb_repeats']} fwd+bwd passes (after one warm-up pass)")
    print(table(rows, ["model", "capture s", "detect s", "analyze s", "fwd+bwd s", "analyze/fwd+bwd",
                       "symmetries", "TP build s*", "analyze/TP"]))
    print("  * Torch-Pruning DependencyGraph().build_dependency on a fresh model, same input, same process, "
          f"median of {cfg['repeats']}; goal analyze/TP <= 0.5x")
    return {"config": {**{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                       "batch": 2, "num_classes": 1000, "torch_threads": torch.get_num_threads()},
            "warmup_capture_s": warm, "models": results}
