"""Model zoo: architectures and spec resolution, datasets, random architectures, the training loop.

``build_model(spec, num_classes, input_shape, **kwargs) -> (nn.Module, ModelInfo)`` resolves zoo names
(VGG ±BN, ResNet-18/34, MLP, ConvNet), ``torchvision:NAME`` and ``package.module:callable``;
``load_dataset`` gives offline digits / synthetic data or reads Tiny ImageNet / CIFAR from disk;
``random_architecture`` samples models with known symmetries; ``train(TrainConfig)`` writes tracked runs.
Training imports are lazy-cheap (no symmetry_engine import until a run starts).
"""

from .datasets import DataSplit, DatasetError, load_dataset
from .presets import PRESETS, preset
from .specs import ModelInfo, SpecError, build_model, zoo_names
from .training import RunResult, TrainConfig, TrainingError, train

__all__ = [
    "DataSplit", "DatasetError", "ModelInfo", "PRESETS", "RunResult", "SpecError", "TrainConfig", "TrainingError",
    "build_model", "load_dataset", "preset", "train", "zoo_names",
]
