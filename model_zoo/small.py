"""Small models for CPU runs and tests: a configurable MLP and a two-block ConvNet."""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from .vgg import scaled

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid, "identity": nn.Identity, "elu": nn.ELU, "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Flatten → (Linear → act)×len(widths) → Linear; flattening first lets it take image batches."""

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int, act: str = "relu",
                 bias: bool = True) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        d = in_features
        for w in widths:
            layers += [nn.Linear(d, int(w), bias=bias), activation(act)]
            d = int(w)
        layers.append(nn.Linear(d, num_classes, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(self.flatten(x))


class ConvNet(nn.Module):
    """conv-(BN)-ReLU-maxpool ×2 → flatten (spatial size input/4) → Linear-ReLU-Linear."""

    def __init__(self, num_classes: int = 10, input_size: int = 32, in_channels: int = 3, width: float = 1.0,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if input_size % 4 != 0:
            raise ValueError(f"convnet needs input_size divisible by 4, got {input_size}")
        c1, c2, h = scaled(32, width), scaled(64, width), scaled(128, width)
        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if batch_norm else []) + [
                nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*block(in_channels, c1), *block(c1, c2))
        self.flatten = nn.Flatten()
        s = input_size // 4
        self.classifier = nn.Sequential(nn.Linear(c2 * s * s, h), nn.ReLU(), nn.Linear(h, num_classes))

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def build_mlp(input_shape: Sequence[int], num_classes: int = 10, widths: Sequence[int] = (256, 256),
              activation: str = "relu", bias: bool = True) -> MLP:
    if isinstance(widths, str):
        widths = [int(w) for w in widths.replace(",", " ").split()]
    return MLP(math.prod(input_shape), widths, num_classes, act=activation, bias=bias)
