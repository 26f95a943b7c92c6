"""The model-input mapping: native pixel values -> classifier input, as differentiable torch ops.

PGD runs on the native (stored) pixel grid through this mapping, so what is written back is exactly
what was optimised. The mapping is linear: an optional bilinear resize to the model's input size, then
a per-image intensity window ``(x - lo) / (hi - lo)`` whose ``lo``/``hi`` are computed once from the
original image and held fixed. The rule and size are stored with the trained model.

How eps maps to native units (the key's eps is on the model-input scale):

- Linf: a resize is a convex combination of pixels, so ``||M(d)||_inf <= ||d||_inf / (hi - lo)``;
  native eps = eps * (hi - lo) guarantees the model-scale bound.
- L2: bilinear resizing from ``H x W`` to ``h x w`` scales the L2 norm of a smooth perturbation by about
  ``sqrt(h*w / (H*W))``; native eps = eps * (hi - lo) * sqrt(H*W / (h*w)). Without a resize this is exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

RULES = ("percentile", "minmax", "fixed")


@dataclass(frozen=True)
class Preprocess:
    """How raw slices become model inputs; saved in every model checkpoint.

    Attributes:
        size: model input ``(height, width)``.
        rule: ``"percentile"`` (per-image ``low``/``high`` percentiles), ``"minmax"`` (per-image min
            and max) or ``"fixed"`` (the window ``low``..``high`` in native units for every image).
        low: lower percentile (percentile rule) or lower window value (fixed rule).
        high: upper percentile or upper window value.
    """

    size: tuple[int, int]
    rule: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown intensity rule {self.rule!r}; expected one of {', '.join(RULES)}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (height, width) >= 1, got {self.size}")
        if not self.low < self.high:
            raise ValueError(f"intensity window needs low < high, got {self.low} and {self.high}")
        if self.rule == "percentile" and not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    def window(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image intensity window ``(lo, hi)`` of native images.

        Shape:
            images: (N, C, H, W); result: two (N,) float32 tensors.
        """
        flat = images.detach().reshape(images.shape[0], -1).float()
        if self.rule == "fixed":
            lo = torch.full((flat.shape[0],), float(self.low), device=flat.device)
            hi = torch.full((flat.shape[0],), float(self.high), device=flat.device)
            return lo, hi
        if self.rule == "minmax":
            lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        else:
            q = torch.tensor([self.low / 100.0, self.high / 100.0], device=flat.device)
            lo, hi = torch.quantile(flat, q, dim=1)
        # a flat image has no window: use a unit width so the mapping stays finite
        hi = torch.where(hi - lo > 1e-6, hi, lo + 1.0)
        return lo, hi

    def mapping(self, images: Tensor) -> ModelInputMapping:
        """The mapping for these native images, windows computed from them and then held fixed.

        Shape:
            images: (N, C, H, W).
        """
        lo, hi = self.window(images)
        return ModelInputMapping(self.size, lo, hi, tuple(images.shape[-2:]))

    def to_model(self, images: Tensor) -> Tensor:
        """Model inputs for native images (no gradient needed).

        Shape:
            images: (N, C, H, W); result: (N, C, *size) float32.
        """
        with torch.no_grad():
            return self.mapping(images)(images.float())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and reports."""
        data = asdict(self)
        data["size"] = list(self.size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(size=tuple(data["size"]), rule=data["rule"], low=float(data["low"]), high=float(data["high"]))


class ModelInputMapping:
    """Differentiable map from native images to model inputs with per-image windows held fixed.

    Args:
        size: model input ``(height, width)``.
        lo: per-image window start.
        hi: per-image window end.
        native_size: ``(H, W)`` of the native images the windows belong to.

    Shape:
        lo, hi: (N,).
    """

    def __init__(self, size: tuple[int, int], lo: Tensor, hi: Tensor, native_size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.lo = lo.float()
        self.hi = hi.float()
        self.native_size = (int(native_size[0]), int(native_size[1]))

    def __len__(self) -> int:
        return int(self.lo.shape[0])

    def __call__(self, x: Tensor) -> Tensor:
        """Map native images to model inputs.

        Shape:
            x: (N, C, H, W) with N == len(self); result: (N, C, *size).
        """
        if x.shape[0] != len(self):
            raise ValueError(f"mapping holds {len(self)} windows, got a batch of {x.shape[0]}")
        if tuple(x.shape[-2:]) != self.size:
            downsampling = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=downsampling)
        lo = self.lo.to(x.device).view(-1, *[1] * (x.ndim - 1))
        width = (self.hi - self.lo).to(x.device).view(-1, *[1] * (x.ndim - 1))
        return (x - lo) / width

    def select(self, index: Tensor) -> ModelInputMapping:
        """The mapping of a subset (or repetition) of the samples.

        Shape:
            index: (M,) long; result holds M windows.
        """
        index = index.to(self.lo.device)
        return ModelInputMapping(self.size, self.lo[index], self.hi[index], self.native_size)

    def to(self, device: torch.device | str) -> ModelInputMapping:
        """The same mapping with its windows on ``device``."""
        return ModelInputMapping(self.size, self.lo.to(device), self.hi.to(device), self.native_size)

    def eps_scale(self, norm: str = "l2") -> Tensor:
        """Per-image factor turning a model-scale eps (and step) into native units.

        Shape:
            result: (N,).
        """
        width = self.hi - self.lo
        if norm == "linf":
            return width
        area_ratio = (self.native_size[0] * self.native_size[1]) / (self.size[0] * self.size[1])
        return width * math.sqrt(area_ratio)
