"""The classifier zoo: base models for encryption and victim models for the security evaluation.

Every architecture takes ``(N, C, H, W)`` images and returns ``(N, K)`` logits; all end in adaptive
average pooling, so one network accepts any input size at or above its ``min_size``.

- ``resnet18``, ``densenet121``: MONAI's 2D networks. ``resnet18`` uses a stride-2 7x7 stem and a
  max-pool, the ImageNet layout of the paper's ResNet-18 (MONAI's default stem has stride 1, which
  costs four times the compute at 320x320 for no gain on this task).
- ``vgg11``/``vgg13``/``vgg16``/``vgg19``: VGG with batch norm, CIFAR-style head (global average
  pooling, one linear layer), as in the CIFAR code the paper's victims came from.
- ``preresnet20``/``32``/``56``/``110``: CIFAR pre-activation ResNets of depth 6n+2 (He et al. 2016),
  16/32/64 channels, basic blocks.
- ``smallcnn``: a plain four-layer CNN, fast on a CPU; used by the tests and the CPU demo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medenc.errors import InputError

__all__ = ["ARCHITECTURES", "VGG", "ArchSpec", "PreResNet", "SmallCNN", "build_model", "count_parameters"]


@dataclass(frozen=True)
class ArchSpec:
    """One entry of :data:`ARCHITECTURES`.

    Attributes:
        builder: ``builder(in_channels, num_classes) -> nn.Module``.
        min_size: smallest input height/width the network accepts.
        description: one line for ``--help`` and the docs.
    """

    builder: Callable[[int, int], nn.Module]
    min_size: int
    description: str


# --------------------------------------------------------------------------------------------- helpers
def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------ VGG
_VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGG(nn.Module):
    """VGG with batch norm and a CIFAR-style head (global average pooling + one linear layer).

    Args:
        depth: 11, 13, 16 or 19.
        in_channels: image channels C.
        num_classes: number of classes K.

    Shape:
        ``(N, C, H, W) -> (N, K)`` with H, W >= 32 (five 2x2 max-pools).
    """

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if depth not in _VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(_VGG_CONFIGS)}, got {depth}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _VGG_CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                width = int(item)
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ------------------------------------------------------------------------------------------ PreResNet
class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the identity.

    When the block changes resolution or width, a 1x1 convolution of the pre-activated input is the
    shortcut (He et al., "Identity Mappings in Deep Residual Networks").
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + residual


class PreResNet(nn.Module):
    """CIFAR-style pre-activation ResNet of depth 6n+2 (20, 32, 56, 110, ...).

    A 3x3 stem with 16 channels, three stages of n basic blocks with 16, 32 and 64 channels (stride 2
    at the start of stages two and three), a final BN-ReLU, global average pooling and a linear layer.
    The depth counts the 6n+1 3x3 convolutions and the linear layer.

    Args:
        depth: total depth, 6n+2.
        in_channels: image channels C.
        num_classes: number of classes K.

    Shape:
        ``(N, C, H, W) -> (N, K)``.
    """

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"PreResNet depth must be 6n+2 with n >= 1 (20, 32, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(PreActBlock(in_planes, planes, stride=2 if stage > 0 and i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


# ------------------------------------------------------------------------------------------- SmallCNN
class SmallCNN(nn.Module):
    """A plain small CNN: four conv-BN-ReLU layers (32, 64, 128, 128 channels), three max-pools.

    The head average-pools to a 2x2 grid (keeping coarse position, which matters for tumor classes)
    and applies one linear layer. About 0.25 M parameters.

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        width: channels of the first layer (doubling to ``4 * width``).

    Shape:
        ``(N, C, H, W) -> (N, K)`` with H, W >= 8.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        channels = in_channels
        for i, w in enumerate(widths):
            layers += [
                nn.Conv2d(channels, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            channels = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(channels * 4, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ---------------------------------------------------------------------------------------- MONAI nets
def _monai_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    from monai.networks.nets import resnet18

    return resnet18(
        spatial_dims=2,
        n_input_channels=in_channels,
        num_classes=num_classes,
        conv1_t_stride=2,
        bias_downsample=False,
    )


def _monai_densenet121(in_channels: int, num_classes: int) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes)


def _vgg(depth: int) -> Callable[[int, int], nn.Module]:
    return lambda c, k: VGG(depth, c, k)


def _preresnet(depth: int) -> Callable[[int, int], nn.Module]:
    return lambda c, k: PreResNet(depth, c, k)


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(_monai_resnet18, 32, "ResNet-18 (MONAI, ImageNet stem), 11.2 M parameters"),
    "densenet121": ArchSpec(_monai_densenet121, 32, "DenseNet-121 (MONAI), 7.0 M parameters"),
    **{f"vgg{d}": ArchSpec(_vgg(d), 32, f"VGG-{d} with batch norm, CIFAR head") for d in sorted(_VGG_CONFIGS)},
    **{
        f"preresnet{d}": ArchSpec(_preresnet(d), 8, f"pre-activation ResNet-{d} (CIFAR style)")
        for d in (20, 32, 56, 110)
    },
    "smallcnn": ArchSpec(lambda c, k: SmallCNN(c, k), 8, "plain 4-layer CNN, fast on CPU"),
}
"""Known architectures by name (``build_model``'s ``arch``)."""


def _check_arch(arch: str) -> ArchSpec:
    spec = ARCHITECTURES.get(arch)
    if spec is None:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return spec


def build_model(arch: str, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """Build an untrained classifier.

    Weights are drawn from torch's global random generator: seed it first for a reproducible model.

    Args:
        arch: a name in :data:`ARCHITECTURES`.
        in_channels: image channels C (1 for MRI slices).
        num_classes: number of classes K (at least 2).

    Returns:
        The network in training mode, on the CPU, float32.

    Raises:
        InputError: unknown architecture, or channels/classes out of range.

    Shape:
        The model maps ``(N, C, H, W)`` to ``(N, K)`` logits for H, W >= ``ARCHITECTURES[arch].min_size``.
    """
    spec = _check_arch(arch)
    if in_channels < 1:
        raise InputError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 2:
        raise InputError(f"a classifier needs at least 2 classes, got {num_classes}")
    return spec.builder(int(in_channels), int(num_classes))
