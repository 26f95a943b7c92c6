"""The thief's training-time augmentations that the literature uses against availability poisons.

- :func:`strong_augment`: UEraser-style heavy augmentation (Qin et al. 2023, "Learning the unlearnable";
  APBench's U-Max row): random erasing, strong random geometry (rotation, scaling, shear, translation,
  flip) and strong random intensity changes (contrast, brightness, gamma, a smooth "plasma" field, noise),
  a fresh draw per image. :func:`ueraser_hook` is UEraser-Max: K draws per image, trained on the one
  with the highest loss (adversarial augmentation).
- :func:`cutout` (DeVries and Taylor 2017): one random square per image set to zero.
- :func:`mixup` (Zhang et al. 2018) and :func:`cutmix` (Yun et al. 2019): pairs of images mixed, their
  labels mixed in the same proportion (class-probability targets for :func:`medenc.learn.train.fit`'s
  ``mix``).

All work on model inputs ``(N, C, H, W)`` (display window about 0..1); every random number comes from the
given CPU generator, so results do not depend on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["cutmix", "cutout", "mixup", "random_erasing", "strong_augment", "ueraser_hook"]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(x: Tensor, generator: torch.Generator) -> Tensor:
    """Per-image random rotation (+-30 deg), scaling (0.75-1.25), shear (+-15 deg), translation (+-12.5%)
    and horizontal flip (p 1/2); bilinear, zero outside.

    Shape:
        x: (N, C, H, W); result: same.
    """
    n = x.shape[0]
    angle = _uniform(n, -math.pi / 6, math.pi / 6, generator)
    scale = _uniform(n, 0.75, 1.25, generator)
    shear = _uniform(n, -math.pi / 12, math.pi / 12, generator)
    shift = _uniform(2 * n, -0.25, 0.25, generator).view(n, 2)  # in [-1, 1] grid units: +-12.5% of the side
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin + torch.tan(shear) * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = shift
    grid = functional.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _plasma(n: int, h: int, w: int, generator: torch.Generator) -> Tensor:
    """A smooth random field in -1..1 (sum of coarse noise octaves, upsampled). Shape: (N, 1, H, W)."""
    field = torch.zeros(n, 1, h, w)
    for cells, weight in ((2, 0.5), (4, 0.3), (8, 0.2)):
        coarse = torch.rand(n, 1, cells + 1, cells + 1, generator=generator) * 2 - 1
        field += weight * functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    return field.clamp(-1, 1)


def random_intensity(x: Tensor, generator: torch.Generator) -> Tensor:
    """Per-image random contrast (x0.6-1.4), brightness (+-0.2), gamma (0.7-1.5), plasma brightness and
    contrast fields (+-0.15, x(1+-0.3)) and Gaussian noise (sigma up to 0.05).

    Shape:
        x: (N, C, H, W); result: same.
    """
    n, _, h, w = x.shape
    dev = x.device

    def per_image(low: float, high: float) -> Tensor:
        return _uniform(n, low, high, generator).view(-1, 1, 1, 1).to(dev)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = (x - mean) * per_image(0.6, 1.4) + mean + per_image(-0.2, 0.2)
    y = y.clamp(0, 1) ** per_image(0.7, 1.5)
    y = y * (1 + 0.3 * _plasma(n, h, w, generator).to(dev)) + 0.15 * _plasma(n, h, w, generator).to(dev)
    noise = torch.randn(x.shape, generator=generator).to(dev) * per_image(0.0, 0.05)
    return y + noise


def random_erasing(x: Tensor, generator: torch.Generator, *, p: float = 0.5) -> Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``p`` a rectangle of 2-33% of the area, aspect
    0.3-3.3, filled with uniform noise.

    Shape:
        x: (N, C, H, W); result: same.
    """
    n, _, h, w = x.shape
    area = _uniform(n, 0.02, 0.33, generator) * h * w
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), generator))
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1).float()).long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1).float()).long()
    on = torch.rand(n, generator=generator) < p
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    in_rows = (rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
    in_cols = (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1))
    box = in_rows & in_cols & on.view(-1, 1, 1)
    fill = torch.rand(x.shape, generator=generator).to(x.device)
    return torch.where(box.unsqueeze(1).to(x.device), fill, x)


def strong_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """UEraser-style heavy augmentation: :func:`random_affine`, :func:`random_intensity`, :func:`random_erasing`.

    Shape:
        x: (N, C, H, W); result: same.
    """
    return random_erasing(random_intensity(random_affine(x.float(), generator), generator), generator).contiguous()


def ueraser_hook(repeats: int) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """UEraser-Max as a :func:`medenc.learn.train.fit` ``batch_hook``: ``repeats`` draws of
    :func:`strong_augment` per image, keep the draw with the highest loss (train mode, no gradient).

    The hook gets an unaugmented batch (fit's ``augment`` off) and draws from its own generator.
    """
    generator = torch.Generator().manual_seed(20230)

    def hook(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        if repeats == 1:
            return strong_augment(xb, generator)
        draws = torch.stack([strong_augment(xb, generator) for _ in range(repeats)])  # (K, N, C, H, W)
        with torch.no_grad():
            losses = torch.stack(
                [functional.cross_entropy(model(d).float(), yb, reduction="none") for d in draws]
            )  # (K, N)
        pick = losses.argmax(0)
        return draws[pick, torch.arange(xb.shape[0])].contiguous()

    return hook


def cutout(x: Tensor, generator: torch.Generator, *, fraction: float = 0.5) -> Tensor:
    """Cutout: one square of side ``fraction`` of the image per image, centred anywhere (clipped at the
    border), set to zero (16 px at 32 px in the original).

    Shape:
        x: (N, C, H, W); result: same.
    """
    n, _, h, w = x.shape
    side = max(1, round(fraction * min(h, w)))
    cy = (torch.rand(n, generator=generator) * h).long().view(-1, 1, 1)
    cx = (torch.rand(n, generator=generator) * w).long().view(-1, 1, 1)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    half = side // 2
    box = (rows - cy >= -half) & (rows - cy < side - half) & (cols - cx >= -half) & (cols - cx < side - half)
    return x.masked_fill(box.unsqueeze(1).to(x.device), 0.0)


def _partners(n: int, generator: torch.Generator) -> Tensor:
    return torch.randperm(n, generator=generator)


def mixup(
    x: Tensor, y: Tensor, generator: torch.Generator, *, num_classes: int, alpha: float = 1.0
) -> tuple[Tensor, Tensor]:
    """MixUp: each image mixed with a random partner, ``lam x + (1 - lam) x'``, ``lam ~ Beta(alpha, alpha)``
    per batch; targets mixed alike.

    Shape:
        x: (N, C, H, W); y: (N,); result: x like x, targets (N, K).
    """
    lam = _beta(alpha, generator)
    order = _partners(x.shape[0], generator).to(x.device)
    one_hot = functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[order], lam * one_hot + (1 - lam) * one_hot[order]


def cutmix(
    x: Tensor, y: Tensor, generator: torch.Generator, *, num_classes: int, alpha: float = 1.0
) -> tuple[Tensor, Tensor]:
    """CutMix: a random box of each image replaced by the same box of a random partner (area share
    ``1 - lam``, ``lam ~ Beta(alpha, alpha)`` per batch); targets mixed by the exact pasted area.

    Shape:
        x: (N, C, H, W); y: (N,); result: x like x, targets (N, K).
    """
    n, _, h, w = x.shape
    lam = _beta(alpha, generator)
    bh, bw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, (1,), generator=generator)), int(torch.randint(w, (1,), generator=generator))
    top, bottom = max(0, cy - bh // 2), min(h, cy + (bh - bh // 2))
    left, right = max(0, cx - bw // 2), min(w, cx + (bw - bw // 2))
    order = _partners(n, generator).to(x.device)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[order, :, top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    one_hot = functional.one_hot(y, num_classes).float()
    return mixed, kept * one_hot + (1 - kept) * one_hot[order]


def _beta(alpha: float, generator: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from the generator (ratio of two Gamma draws via standard uniforms)."""
    a = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return float(a[0] / a.sum())
