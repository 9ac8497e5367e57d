"""ResNet-18/34 (basic blocks) with a CIFAR-style 3×3 stem or the ImageNet-style 7×7 stem + max-pool.

Residual adds couple channels across blocks (theory.md §1: every producer of a channel must be scaled
together), so these models exercise the analyzer's channel-coupling logic; projection shortcuts
(1×1 conv + BN) appear where the stage width or stride changes.
"""

from __future__ import annotations

from torch import nn

from .vgg import scaled

LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus identity or 1×1-conv-BN shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int = 10, width: float = 1.0,
                 stem: str = "cifar", in_channels: int = 3) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        c = scaled(64, width)
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, c, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=False)
        stages = []
        for i, n in enumerate(blocks):
            cout = scaled(64 * 2**i, width)
            stage = [BasicBlock(c, cout, stride=1 if i == 0 else 2)]
            stage += [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def build_resnet(name: str, num_classes: int = 10, width: float = 1.0, stem: str = "cifar",
                 in_channels: int = 3) -> ResNet:
    return ResNet(LAYERS[name], num_classes=num_classes, width=width, stem=stem, in_channels=in_channels)
