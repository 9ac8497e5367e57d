"""Model zoo: architectures and spec resolution, datasets, random architectures, the training loop.

``build_model(spec, num_classes, input_shape, **kwargs) -> (nn.Module, ModelInfo)`` resolves zoo names
(VGG ±BN, ResNet-18/34, MLP, ConvNet), ``torchvision:NAME`` and ``package.module:callable``;
``load_dataset`` gives offline digits / synthetic data or reads Tiny ImageNet / CIFAR from disk;
``random_architecture`` samples models with known symmetries; ``train(TrainConfig)`` writes tracked runs.
The names below load on first use, so importing a torch-free part (presets, the training config and its
command line) does not import torch: ``nmech train --help`` answers at once.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "DataSplit": "datasets", "DatasetError": "datasets", "load_dataset": "datasets",
    "PRESETS": "presets", "preset": "presets",
    "ModelInfo": "specs", "SpecError": "specs", "build_model": "specs", "zoo_names": "specs",
    "TrainConfig": "train_config", "TrainingError": "train_config",
    "RunResult": "training", "train": "training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'model_zoo' has no attribute {name!r}")


__all__ = sorted(_LAZY)
