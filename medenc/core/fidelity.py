"""How much encryption changed an image: PSNR, SSIM, L2 and Linf of the change (pure torch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def data_range(reference: Tensor) -> Tensor:
    """Per-image dynamic range ``max - min`` of the reference images (1 for a flat image).

    Shape:
        reference: (N, *); result: (N,) float64.
    """
    flat = _flat(reference)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    return torch.where(span > 0, span, torch.ones_like(span))


def psnr(reference: Tensor, changed: Tensor, value_range: Tensor | float | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (``inf`` where nothing changed).

    Args:
        reference: original images.
        changed: encrypted images.
        value_range: peak value range; default: each reference image's max - min.

    Shape:
        reference, changed: (N, *); result: (N,) float64.
    """
    peak = data_range(reference) if value_range is None else torch.as_tensor(value_range, dtype=torch.float64)
    mse = (_flat(reference) - _flat(changed)).pow(2).mean(dim=1)
    with torch.no_grad():
        return torch.where(mse > 0, 10 * torch.log10(peak.pow(2) / mse), torch.full_like(mse, math.inf))


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    reference: Tensor,
    changed: Tensor,
    value_range: Tensor | float | None = None,
    *,
    window: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window 11 / 1.5, K1 0.01, K2 0.03) per image.

    Multi-channel images are averaged over channels; images smaller than the window use a window
    of their size.

    Shape:
        reference, changed: (N, C, H, W); result: (N,) float64.
    """
    if reference.ndim != 4:
        raise ValueError(f"ssim needs (N, C, H, W) images, got shape {tuple(reference.shape)}")
    n, c, h, w = reference.shape
    peak = data_range(reference) if value_range is None else torch.as_tensor(value_range, dtype=torch.float64)
    peak = peak.expand(n) if peak.ndim == 0 else peak
    # in units of the range, float32 is precise enough and twice as fast as float64
    scale = peak.view(n, 1, 1, 1).to(reference.device)
    x, y = (reference.double() / scale).float(), (changed.double() / scale).float()
    size = min(window, h, w)
    g = _gaussian_1d(size, sigma, x.dtype).to(x.device)
    rows, cols = g.view(1, 1, size, 1).expand(c, 1, size, 1), g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian: two 1-D passes
        return functional.conv2d(functional.conv2d(t, rows, groups=c), cols, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return score.double().mean(dim=(1, 2, 3)).cpu()


def change_norms(reference: Tensor, changed: Tensor) -> tuple[Tensor, Tensor]:
    """L2 and Linf norms of the change per image.

    Shape:
        reference, changed: (N, *); result: two (N,) float64 tensors.
    """
    delta = _flat(changed) - _flat(reference)
    return delta.norm(dim=1), delta.abs().amax(dim=1)


def fidelity_table(reference: Tensor, changed: Tensor, value_range: Tensor | float | None = None) -> dict[str, list]:
    """Per-image PSNR, SSIM, L2 and Linf as plain lists (JSON-ready).

    Shape:
        reference, changed: (N, C, H, W).
    """
    l2, linf = change_norms(reference, changed)
    return {
        "psnr_db": psnr(reference, changed, value_range).tolist(),
        "ssim": ssim(reference, changed, value_range).tolist(),
        "l2": l2.tolist(),
        "linf": linf.tolist(),
    }


def summarize(values: list[float]) -> dict[str, float]:
    """Mean, min, median and max of a list of finite or infinite numbers."""
    t = torch.tensor(values, dtype=torch.float64)
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return {"mean": float("nan"), "min": float("nan"), "median": float("nan"), "max": float("nan")}
    return {
        "mean": float(finite.mean()),
        "min": float(t.min()),
        "median": float(t.median()),
        "max": float(t.max()),
    }
