"""VGG-11/13/16/19 with and without batch norm, in CIFAR (32×32) and Tiny ImageNet (64×64) layouts.

The paper's experiments (theory.md §6) use VGG-16 ±BN on Tiny ImageNet. Two layout choices matter for
the symmetries, so they are deliberate here:

* after the last max-pool the feature map is flattened as is (1×1 at 32×32, 2×2 at 64×64) — there is no
  adaptive pool to 1×1, so at 64×64 a conv channel reaches a *block* of 4 classifier columns, which is the
  conv → flatten → Linear rescale case the analyzer must handle;
* convs keep their bias even before BN (as torchvision does), which gives the per-channel translation
  symmetry of a bias in front of batch norm.

Module names follow torchvision (``features.N``, ``classifier.N``), so ``state_dict`` keys look familiar.
"""

from __future__ import annotations

from torch import nn

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier; never below 1 so tiny test models stay valid."""
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """VGG feature stack + 3-layer classifier (Linear→ReLU→Linear→ReLU→Linear, hidden 512·width)."""

    def __init__(
        self,
        config: list[int | str],
        num_classes: int = 10,
        batch_norm: bool = False,
        width: float = 1.0,
        input_size: int = 32,
        in_channels: int = 3,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        pools = sum(1 for v in config if v == "M")
        if input_size % (2**pools) != 0 or input_size < 2**pools:
            raise ValueError(f"input_size must be a positive multiple of {2**pools} for {pools} max-pools, got {input_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = scaled(int(v), width)
            layers.append(nn.Conv2d(c, out, kernel_size=3, padding=1, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=False))
            c = out
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        spatial = input_size // (2**pools)
        hidden = scaled(512, width)
        head: list[nn.Module] = [nn.Linear(c * spatial * spatial, hidden), nn.ReLU(inplace=False)]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head += [nn.Linear(hidden, hidden), nn.ReLU(inplace=False)]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.classifier = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convs (as torchvision's VGG): PyTorch's default conv init shrinks the signal ~2.5× per layer,
        so VGG-16 without BN would not train. Linear layers keep PyTorch's default (torchvision's N(0, 0.01)
        makes the narrow-width head too small to learn quickly)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def build_vgg(
    name: str,
    num_classes: int = 10,
    input_size: int = 32,
    width: float = 1.0,
    dropout: float = 0.0,
    bias: bool = True,
    in_channels: int = 3,
) -> VGG:
    """``name`` is ``vgg11`` … ``vgg19`` optionally suffixed ``_bn``."""
    base, bn = (name[:-3], True) if name.endswith("_bn") else (name, False)
    return VGG(CONFIGS[base], num_classes=num_classes, batch_norm=bn, width=width, input_size=input_size,
               in_channels=in_channels, dropout=dropout, bias=bias)
