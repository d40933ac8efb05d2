"""Networks for small images. Each takes (in_channels, num_classes) from the data spec, and names its
pretrained part (`backbone()`, in `blocks()` bottom to top) apart from its head, for transfer learning. Each
runs its backbone through `converge.FrozenFeatures` (`cached`): frozen, its outputs are cached, keyed by the
bytes of the image the backbone reads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from converge import ConfigError, DataError, FrozenFeatures, UnknownNameError


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
        self.cached = FrozenFeatures()
        self.stages = len(widths)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.cached(self.features, self.resize(images)))

    def backbone(self) -> nn.Module:
        return self.features

    def blocks(self) -> list[nn.Module]:
        """One block per width: its two convolutions, norms and pooling (views: the parameters keep their names)."""
        size = len(self.features) // self.stages
        return [self.features[start:start + size] for start in range(0, len(self.features), size)]


class GreyToRGB(nn.Module):
    """A grey image as an RGB one: its channel copied into R, G and B (torchvision's
    `Grayscale(num_output_channels=3)`), what a network pretrained on RGB images reads. No weights: a frozen
    backbone behind it reads the same image every epoch, so its cached features stay valid."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.expand(-1, 3, -1, -1)


class Classifier(nn.Module):
    """A torchvision network as `body` (its classifier layer taken out) and a new linear `head`, after an
    `adapter` to 3 channels when the images are not RGB: grey images are repeated into R, G and B
    (`GreyToRGB`); other channel counts go through a learned 1x1 convolution, which trains with the head, so a
    frozen body's features are then not cached (`FrozenFeatures` says so in the log)."""

    def __init__(self, body: nn.Module, head: nn.Linear, in_channels: int) -> None:
        super().__init__()
        self.adapter = _adapter(in_channels)
        self.body, self.head = body, head
        self.cached = FrozenFeatures()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.cached(self.body, self.adapter(images)))

    def backbone(self) -> nn.Module:
        return self.body


def _adapter(in_channels: int) -> nn.Module:
    if in_channels == 3:
        return nn.Identity()
    return GreyToRGB() if in_channels == 1 else nn.Conv2d(in_channels, 3, kernel_size=1)


def resnet18_small(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 for small images: a 3x3 stride-1 stem and no max-pool (as for CIFAR)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return _split(model, num_classes, in_channels=3)


def torchvision_classifier(name: str, in_channels: int, num_classes: int, weights: str | None = None,
                           **kwargs: object) -> nn.Module:
    """Any torchvision classifier by name: randomly initialised, or from torchvision's named `weights`
    (`DEFAULT`, `IMAGENET1K_V1`, ...) with a new head for `num_classes`.

    Pretrained weights come from torch hub's checkpoints folder, downloaded there when missing (never with
    CONVERGE_OFFLINE=1), and load as a weights-only state dict. Grey images are copied into R, G and B
    (`GreyToRGB`); other channel counts go through a learned 1x1 adapter that starts, with pretrained weights,
    as their mean in each of R, G and B.
    """
    from torchvision.models import get_model, list_models

    known = list_models(module=__import__("torchvision").models)
    if name not in known:
        raise UnknownNameError("torchvision model", name, known)
    if weights is None:
        return _split(get_model(name, weights=None, num_classes=num_classes, **kwargs), num_classes, in_channels)
    chosen = _named_weights(name, weights)
    model = get_model(name, weights=None, num_classes=len(chosen.meta["categories"]), **kwargs)
    model.load_state_dict(torch.load(_hub_file(name, chosen), map_location="cpu", weights_only=True))
    net = _split(model, num_classes, in_channels)
    if isinstance(net.adapter, nn.Conv2d):
        nn.init.constant_(net.adapter.weight, 1.0 / in_channels)
        nn.init.zeros_(net.adapter.bias)
    return net


def _split(model: nn.Module, num_classes: int, in_channels: int) -> Classifier:
    """The model's last linear layer becomes a new head for `num_classes` (in its place: an identity)."""
    linear = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ConfigError(f"{type(model).__name__} has no linear classifier layer to replace by a new head")
    name, last = linear[-1]
    parent = model.get_submodule(name.rpartition(".")[0])
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    head = last if last.out_features == num_classes else nn.Linear(last.in_features, num_classes)
    return Classifier(model, head, in_channels)


def _named_weights(name: str, weights: str):
    from torchvision.models import get_model_weights

    family = get_model_weights(name)
    known = ["DEFAULT", *family.__members__]
    if weights not in known:
        raise UnknownNameError(f"weights of torchvision's {name}", weights, known)
    return family.DEFAULT if weights == "DEFAULT" else family[weights]


def _hub_file(name: str, weights) -> Path:
    """The weights' file in torch hub's checkpoints folder, downloaded there (checksum-verified) when missing."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if path.is_file():
        return path
    where = (f"put the file at {path} (the folder is $TORCH_HOME/hub/checkpoints, by default "
             f"~/.cache/torch/hub/checkpoints), copied from {weights.url}")
    if os.environ.get("CONVERGE_OFFLINE") == "1":
        raise DataError(f"torchvision's {name} weights {weights} are not on this machine (CONVERGE_OFFLINE=1): {where}")
    path.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), match.group(1) if match else None)
    except (OSError, RuntimeError) as error:  # no network (URLError is an OSError), or a corrupt download
        raise DataError(f"cannot download torchvision's {name} weights {weights} ({error}): {where}") from None
    return path
