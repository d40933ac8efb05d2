"""Networks for small images. Each takes (in_channels, num_classes) from the data spec."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """VGG-style blocks (two 3x3 conv + BN + ReLU, then 2x2 max-pool), global average pool, linear head.

    The default widths reach > 99% on 8x8 digits and 28x28 MNIST in seconds on a CPU.
    `upsample` > 1 first resizes the input bilinearly by that factor: on tiny images (8x8 digits)
    the 3x3 convolutions then see sub-pixel detail, which cuts the test errors about in half.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128),
                 dropout: float = 0.2, upsample: int = 1) -> None:
        super().__init__()
        # A separate module (Identity when off) keeps the parameter names of `features` unchanged.
        self.resize = nn.Upsample(scale_factor=upsample, mode="bilinear") if upsample > 1 else nn.Identity()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.resize(images)))


def resnet18_small(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 for small images: a 3x3 stride-1 stem and no max-pool (as for CIFAR)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def torchvision_classifier(name: str, in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    """Any torchvision classifier by name (randomly initialised), with a 1x1 adapter when not RGB."""
    from torchvision.models import get_model, list_models

    from converge import UnknownNameError

    known = list_models(module=__import__("torchvision").models)
    if name not in known:
        raise UnknownNameError("torchvision model", name, known)
    model = get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return model if in_channels == 3 else nn.Sequential(nn.Conv2d(in_channels, 3, kernel_size=1), model)
