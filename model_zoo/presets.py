"""Named training configurations: the paper's runs (theory.md §6) and CPU-sized stand-ins on digits.

Paper runs: VGG-16 with and without BN on Tiny ImageNet (64×64, 200 classes), SGD η = 0.1 constant,
batch 256, 100 epochs, λ ∈ {0, 1e-4, 5e-4, 1e-3}, momentum β ∈ {0, 0.8, 0.9, 0.99}. Names:
``paper-vgg16[-bn]-wd{0,1e-4,5e-4,1e-3}[-m{0.8,0.9,0.99}]`` (no ``-m`` suffix = plain SGD).
They need ``--data-path`` to the extracted Tiny ImageNet and a GPU to finish in hours.

``digits-small`` (VGG-16-BN, width 1/8, 300 steps, η = 0.1, β = 0.9, λ = 5e-4) and ``digits-small-nobn``
(VGG-16, 600 steps, η = 0.01: without BN the deep stack needs a smaller step) finish in seconds to
minutes on a CPU and show the same three symmetry families.
"""

from __future__ import annotations

from typing import Any

WEIGHT_DECAYS = {"0": 0.0, "1e-4": 1e-4, "5e-4": 5e-4, "1e-3": 1e-3}
MOMENTA = {"": 0.0, "-m0.8": 0.8, "-m0.9": 0.9, "-m0.99": 0.99}


def _paper() -> dict[str, dict[str, Any]]:
    out = {}
    for bn in ("", "-bn"):
        for wd_name, wd in WEIGHT_DECAYS.items():
            for m_name, beta in MOMENTA.items():
                out[f"paper-vgg16{bn}-wd{wd_name}{m_name}"] = {
                    "model": f"vgg16{bn.replace('-', '_')}", "dataset": "tiny-imagenet", "input_size": 64,
                    "batch_size": 256, "epochs": 100, "lr": 0.1, "momentum": beta, "weight_decay": wd,
                    "schedule": "constant", "checkpoint_log": 40, "num_workers": 8, "device": "auto",
                }
    return out


PRESETS: dict[str, dict[str, Any]] = {
    **_paper(),
    "digits-small": {"model": "vgg16_bn", "model_kwargs": {"width": 0.125}, "dataset": "digits", "input_size": 32,
                     "batch_size": 64, "steps": 300, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                     "checkpoint_log": 10},
    "digits-small-nobn": {"model": "vgg16", "model_kwargs": {"width": 0.125}, "dataset": "digits", "input_size": 32,
                          "batch_size": 64, "steps": 600, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                          "checkpoint_log": 10},
}


def preset(name: str) -> dict[str, Any]:
    """A copy of the named preset's config fields (``KeyError`` with close matches if unknown)."""
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown preset {name!r}{hint}; e.g. digits-small, paper-vgg16-bn-wd5e-4-m0.9")
    d = dict(PRESETS[name])
    d["model_kwargs"] = dict(d.get("model_kwargs", {}))
    return d
