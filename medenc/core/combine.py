"""Combiners: join the k perturbed copies of an image into one encrypted image of the same size.

All combiners are pure torch functions over a stacked tensor of copies, with per-sample parameters
(ratio, box) so that one call handles a whole batch of mixed classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medenc.core.key import COMBINER_TARGETS


def _check(copies: Tensor, k: int, name: str) -> None:
    if copies.ndim < 3 or copies.shape[1] != k:
        raise ValueError(f"{name} needs copies of shape (N, {k}, C, ..., W), got {tuple(copies.shape)}")


def _per_sample(value: float | Tensor, n: int, device: torch.device) -> Tensor:
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    return value.expand(n) if value.ndim == 0 else value


def split_columns(ratio: float | Tensor, width: int, n: int, device: torch.device) -> Tensor:
    """Number of left columns taken from the first copy: ``round(ratio * width)`` per sample.

    Shape:
        ratio: () or (N,); result: (N,) long.
    """
    ratio = _per_sample(ratio, n, device)
    # round half away from zero, so r*W = 2.5 -> 3 on every platform (torch.round rounds half to even)
    return torch.floor(ratio * width + 0.5).long()


def left_mask(ratio: float | Tensor, like: Tensor) -> Tensor:
    """Boolean mask selecting the left ``round(ratio * W)`` columns of each sample.

    Shape:
        like: (N, C, ..., W); result: (N, 1, ..., 1, W) broadcastable to ``like``.
    """
    n, width = like.shape[0], like.shape[-1]
    cut = split_columns(ratio, width, n, like.device)
    columns = torch.arange(width, device=like.device)
    mask = columns.view(1, width) < cut.view(n, 1)
    return mask.view(n, *[1] * (like.ndim - 2), width)


def basic(copies: Tensor) -> Tensor:
    """The single perturbed copy (k = 1).

    Shape:
        copies: (N, 1, C, ...); result: (N, C, ...).
    """
    _check(copies, 1, "basic")
    return copies[:, 0]


def hconcat(copies: Tensor, ratio: float | Tensor = 0.5) -> Tensor:
    """Horizontal Concat: left ``round(r*W)`` columns of copy 1, the rest of copy 2.

    Shape:
        copies: (N, 2, C, ..., W); ratio: () or (N,); result: (N, C, ..., W).
    """
    _check(copies, 2, "hconcat")
    return torch.where(left_mask(ratio, copies[:, 0]), copies[:, 0], copies[:, 1])


def hconcat_mirror(copies: Tensor, ratio: float | Tensor = 0.5) -> Tensor:
    """Flip-consistent Horizontal Concat: copy 1 in two mirrored outer bands, copy 2 in the middle.

    Each outer band is ``round(r*W/2)`` columns wide, so copy 1 still supplies a share ``r`` of the
    columns, but the layout is its own mirror image: a left-right flip (a thief's augmentation) keeps
    every column on a band of the same copy instead of swapping the two halves as it does for
    :func:`hconcat`.

    Shape:
        copies: (N, 2, C, ..., W); ratio: () or (N,); result: (N, C, ..., W).
    """
    _check(copies, 2, "hconcat_mirror")
    like = copies[:, 0]
    n, width = like.shape[0], like.shape[-1]
    band = torch.floor(_per_sample(ratio, n, like.device) * width / 2 + 0.5).long().view(n, 1)
    columns = torch.arange(width, device=like.device).view(1, width)
    outer = (columns < band) | (columns >= width - band)
    return torch.where(outer.view(n, *[1] * (like.ndim - 2), width), copies[:, 0], copies[:, 1])


def mixup(copies: Tensor, lam: float | Tensor = 0.5) -> Tensor:
    """Mixup: ``lam * copy1 + (1 - lam) * copy2``.

    Shape:
        copies: (N, 2, C, ...); lam: () or (N,); result: (N, C, ...).
    """
    _check(copies, 2, "mixup")
    lam = _per_sample(lam, copies.shape[0], copies.device).view(-1, *[1] * (copies.ndim - 2))
    return (lam * copies[:, 0].float() + (1 - lam) * copies[:, 1].float()).to(copies.dtype)


def mixup_concat(copies: Tensor, ratio: float | Tensor = 0.5, lam: float | Tensor = 0.5) -> Tensor:
    """Mixup and Concat: mix copies 1+2 and 3+4, then Horizontal Concat the two mixes.

    Shape:
        copies: (N, 4, C, ..., W); ratio, lam: () or (N,); result: (N, C, ..., W).
    """
    _check(copies, 4, "mixup_concat")
    first = mixup(copies[:, 0:2], lam)
    second = mixup(copies[:, 2:4], lam)
    return hconcat(torch.stack([first, second], dim=1), ratio)


def cutmix(copies: Tensor, boxes: Tensor | Sequence[Sequence[float]]) -> Tensor:
    """CutMix: copy 1 with a box pasted from copy 2.

    Args:
        copies: the two perturbed copies.
        boxes: per sample ``(top, left, height, width)`` as fractions of the last two dimensions.

    Returns:
        The combined images.

    Shape:
        copies: (N, 2, C, ..., H, W); boxes: (N, 4); result: (N, C, ..., H, W).
    """
    _check(copies, 2, "cutmix")
    n, height, width = copies.shape[0], copies.shape[-2], copies.shape[-1]
    boxes = torch.as_tensor(boxes, dtype=torch.float32, device=copies.device).reshape(n, 4)
    top = torch.floor(boxes[:, 0] * height + 0.5).long().view(n, 1, 1)
    left = torch.floor(boxes[:, 1] * width + 0.5).long().view(n, 1, 1)
    bottom = top + torch.floor(boxes[:, 2] * height + 0.5).long().view(n, 1, 1)
    right = left + torch.floor(boxes[:, 3] * width + 0.5).long().view(n, 1, 1)
    rows = torch.arange(height, device=copies.device).view(1, height, 1)
    cols = torch.arange(width, device=copies.device).view(1, 1, width)
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    inside = inside.view(n, *[1] * (copies.ndim - 4), height, width)
    return torch.where(inside, copies[:, 1], copies[:, 0])


def combine(
    name: str,
    copies: Tensor,
    *,
    ratio: float | Tensor = 0.5,
    lam: float | Tensor = 0.5,
    boxes: Tensor | None = None,
) -> Tensor:
    """Apply the combiner ``name`` with per-sample parameters.

    Shape:
        copies: (N, k, C, ..., W); result: (N, C, ..., W).
    """
    if name not in COMBINER_TARGETS:
        raise ValueError(f"unknown combiner {name!r}; expected one of {', '.join(COMBINER_TARGETS)}")
    if name == "basic":
        return basic(copies)
    if name == "hconcat":
        return hconcat(copies, ratio)
    if name == "hconcat_mirror":
        return hconcat_mirror(copies, ratio)
    if name == "mixup":
        return mixup(copies, ratio)
    if name == "mixup_concat":
        return mixup_concat(copies, ratio, lam)
    if boxes is None:
        raise ValueError("cutmix needs boxes")
    return cutmix(copies, boxes)
