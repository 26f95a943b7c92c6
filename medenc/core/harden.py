"""Hardening of the encryption against a determined data thief (pure torch).

The paper's perturbation is optimised for one base classifier and for the images exactly as written.
A thief who trains another architecture, or who flips, crops, re-compresses or blurs the images before
training, partly escapes it (see ``docs/threat-model.md``). Three counter-measures live here; the key
switches them on (``EncryptionKey.eot``, ``eot_samples``, ``ratio_jitter`` and the ``hconcat_mirror``
combiner) and :class:`medenc.core.encrypt.Encryptor` applies them:

- :class:`EnsembleModel`: several base classifiers attacked at once (the mean of their
  log-probabilities), so the perturbation carries features that several architectures read.
- :class:`EOTModel`: expectation over transformations (Athalye et al. 2018). Every PGD step sees the
  images through random flips, shifts (the thief's random crops), a differentiable JPEG
  approximation and a Gaussian blur, so the perturbation is optimised to survive them.
- :func:`jitter_ratios`: per-image random Horizontal Concat ratios around the key's per-class ratio.

The transforms work on model inputs ``(N, C, H, W)`` (intensity window applied, roughly 0..1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from medenc.core.key import EOT_TRANSFORMS

__all__ = [
    "EOT_TRANSFORMS",
    "EOTModel",
    "EnsembleModel",
    "differentiable_jpeg",
    "gaussian_blur",
    "jitter_ratios",
    "jpeg_quant_table",
    "random_flip",
    "random_shift",
]

_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


# ------------------------------------------------------------------------------------------ transforms
def random_flip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image left-right with probability ``p`` (differentiable).

    Shape:
        x: (N, C, H, W); result: same.
    """
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


def random_shift(x: Tensor, generator: torch.Generator, pad: int | None = None) -> Tensor:
    """Shift each image by a random whole number of pixels in ``-pad..pad`` per axis, filling with zeros.

    The same as the thief's random crop of the zero-padded image (:func:`medenc.learn.train.augment_batch`);
    differentiable with respect to ``x``.

    Shape:
        x: (N, C, H, W); result: same.
    """
    n, _, h, w = x.shape
    pad = max(1, round(min(h, w) / 8)) if pad is None else int(pad)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    padded = functional.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (kernel radius ``ceil(3 sigma)``, reflect padding).

    Shape:
        x: (N, C, H, W); result: same.
    """
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = functional.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def jpeg_quant_table(quality: float) -> Tensor:
    """The IJG luminance quantisation table scaled for a JPEG quality of 1..100.

    Shape:
        result: (8, 8) float32.
    """
    quality = float(min(max(quality, 1.0), 100.0))
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    table = torch.tensor(_LUMA_TABLE, dtype=torch.float32)
    return torch.clamp(torch.floor((table * scale + 50.0) / 100.0), min=1.0)


def _dct_matrix(n: int = 8) -> Tensor:
    k = torch.arange(n, dtype=torch.float32)
    matrix = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def differentiable_jpeg(x: Tensor, quality: float) -> Tensor:
    """JPEG compression of 8-bit grey images, approximated so gradients flow (Shin and Song 2017).

    Each channel is rendered to 0..255, cut into 8x8 blocks (edge-padded to a multiple of 8), moved to
    the DCT domain, divided by the quality-scaled luminance table and rounded with the cubic
    approximation ``round(u) + (u - round(u))**3`` (exact value forward, non-zero gradient), then
    dequantised and transformed back. Chroma subsampling does not apply to grey images.

    Shape:
        x: (N, C, H, W) with values meant to lie in 0..1; result: same.
    """
    n, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    v = functional.pad(x * 255.0 - 128.0, (0, pw, 0, ph), mode="replicate") if ph or pw else x * 255.0 - 128.0
    hh, ww = v.shape[-2:]
    blocks = v.reshape(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)
    dct = _dct_matrix().to(device=x.device, dtype=x.dtype)
    table = jpeg_quant_table(quality).to(device=x.device, dtype=x.dtype)
    coeffs = dct @ blocks @ dct.T / table
    rounded = torch.round(coeffs)
    coeffs = (rounded + (coeffs - rounded) ** 3) * table
    out = (dct.T @ coeffs @ dct).permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)
    return (out[..., :h, :w] + 128.0) / 255.0


def apply_random(x: Tensor, transforms: Sequence[str], generator: torch.Generator) -> Tensor:
    """One random draw of the named transforms (in :data:`EOT_TRANSFORMS` order).

    ``flip``: per image with probability 1/2; ``crop``: a random shift of up to 1/8 of the side;
    ``jpeg``: with probability 1/2, a quality drawn from 10..75; ``blur``: with probability 1/2, a
    Gaussian of sigma drawn from 0.5..1.5.

    Shape:
        x: (N, C, H, W); result: same.
    """
    for name in EOT_TRANSFORMS:
        if name not in transforms:
            continue
        if name == "flip":
            x = random_flip(x, generator)
        elif name == "crop":
            x = random_shift(x, generator)
        elif float(torch.rand((), generator=generator)) < 0.5:
            u = float(torch.rand((), generator=generator))
            x = differentiable_jpeg(x, 10.0 + 65.0 * u) if name == "jpeg" else gaussian_blur(x, 0.5 + u)
    return x


# ------------------------------------------------------------------------------------------- models
class EnsembleModel(nn.Module):
    """Several classifiers as one: the output is the mean of their log-probabilities.

    Cross-entropy of that output toward a target pushes every member toward it (a logit ensemble, as
    in transfer attacks, Liu et al. 2017). All members must take the same inputs and share classes.

    Shape:
        ``(N, C, H, W) -> (N, K)``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [functional.log_softmax(m(x).float(), dim=1) for m in self.members]
        return torch.stack(outputs).mean(dim=0)


class EOTModel(nn.Module):
    """A classifier seen through random transformations: the mean log-probability over ``samples`` draws.

    Args:
        model: the classifier (or an :class:`EnsembleModel`).
        transforms: names from :data:`EOT_TRANSFORMS`.
        samples: random draws averaged per forward pass (each costs one forward and backward pass).
        generator: CPU random generator of the draws (default: seeded with 0).

    Shape:
        ``(N, C, H, W) -> (N, K)``.
    """

    def __init__(
        self,
        model: nn.Module,
        transforms: Sequence[str],
        samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        unknown = [t for t in transforms if t not in EOT_TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown EOT transform(s) {unknown}; expected some of {', '.join(EOT_TRANSFORMS)}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.model = model
        self.transforms = tuple(transforms)
        self.samples = int(samples)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [
            functional.log_softmax(self.model(apply_random(x, self.transforms, self.generator)).float(), dim=1)
            for _ in range(self.samples)
        ]
        return torch.stack(outputs).mean(dim=0)


# ------------------------------------------------------------------------------------------- ratios
def jitter_ratios(ratios: Tensor, jitter: float, generator: torch.Generator, *, margin: float = 0.05) -> Tensor:
    """Per-image ratios: each class ratio plus a uniform draw from ``-jitter..jitter``, kept in the image.

    Shape:
        ratios: (N,); result: (N,) float32 in ``[margin, 1 - margin]``.
    """
    if jitter <= 0:
        return ratios
    noise = (torch.rand(ratios.shape[0], generator=generator) * 2.0 - 1.0) * float(jitter)
    return torch.clamp(ratios + noise.to(ratios.device), margin, 1.0 - margin)
