"""What a data thief can do to encrypted images before or while training: input transformations and
training recipes.

Input transformations work on model inputs ``(N, C, H, W)`` (intensity window applied, roughly 0..1) and
are applied by the thief to every image he trains or tests on. JPEG runs through a real codec (Pillow),
on the 8-bit rendering a thief would make (values clipped to the window, rounded to 0..255).

JPEG and JPEG 2000 at a compression ratio (radiology's measure) go through :mod:`medenc.security.codecs`.

Training recipes are options of :func:`medenc.learn.train.fit` (:mod:`medenc.security.rows` maps them):
flips only, crops only, both (the standard recipe), UEraser-style heavy augmentation, Cutout, MixUp,
CutMix (:mod:`medenc.security.augment`), early stopping on a few clean labelled images, adversarial
training, fine-tuning on them, and a SimCLR start fine-tuned on them (:mod:`medenc.security.pretrain`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from medenc.core.pgd import frozen
from medenc.errors import InputError
from medenc.security.codecs import jpeg2000_ratio, jpeg_ratio, to_uint8

__all__ = [
    "DEFAULT_DEFENCES",
    "DEFENCES",
    "Defence",
    "DefenceSpec",
    "bit_depth",
    "blur",
    "crop_only",
    "flip_only",
    "jpeg",
    "jpeg2000_ratio",
    "jpeg_ratio",
    "median",
    "parse_defences",
    "squeeze",
    "untargeted_pgd",
]


# ------------------------------------------------------------------------------------ input transforms
def jpeg(x: Tensor, quality: int = 30) -> Tensor:
    """JPEG re-compression with Pillow's codec (baseline, grey, 4:4:4) at ``quality`` 1..95.

    Shape:
        x: (N, C, H, W); result: same, float32 in 0..1.
    """
    from PIL import Image

    if not 1 <= int(quality) <= 95:
        raise InputError(f"JPEG quality must lie in 1..95, got {quality}")
    pixels = to_uint8(x)
    out = np.empty_like(pixels)
    for i in range(pixels.shape[0]):
        for c in range(pixels.shape[1]):
            buffer = io.BytesIO()
            Image.fromarray(pixels[i, c], mode="L").save(buffer, format="JPEG", quality=int(quality))
            buffer.seek(0)
            out[i, c] = np.asarray(Image.open(buffer).convert("L"))
    return torch.from_numpy(out).float().div_(255.0).to(x.device)


def blur(x: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels.

    Shape:
        x: (N, C, H, W); result: same.
    """
    from medenc.core.harden import gaussian_blur

    if not sigma > 0:
        raise InputError(f"blur sigma must be > 0, got {sigma}")
    with torch.no_grad():
        return gaussian_blur(x.float(), float(sigma))


def median(x: Tensor, size: int = 3) -> Tensor:
    """Median filter over ``size x size`` neighbourhoods (odd size, reflect padding).

    Shape:
        x: (N, C, H, W); result: same.
    """
    size = int(size)
    if size < 3 or size % 2 == 0:
        raise InputError(f"median filter size must be odd and >= 3, got {size}")
    r = size // 2
    padded = functional.pad(x.float(), (r, r, r, r), mode="reflect")
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)
    return patches.reshape(*x.shape, size * size).median(dim=-1).values


def bit_depth(x: Tensor, bits: int = 3) -> Tensor:
    """Bit-depth reduction (Xu et al. 2018, feature squeezing): keep ``bits`` bits of the 0..1 range.

    Shape:
        x: (N, C, H, W); result: same, values in 0..1.
    """
    bits = int(bits)
    if not 1 <= bits <= 8:
        raise InputError(f"bit depth must lie in 1..8, got {bits}")
    levels = 2**bits - 1
    return torch.round(x.float().clamp(0.0, 1.0) * levels) / levels


def squeeze(x: Tensor, quality: int = 10) -> Tensor:
    """Image shortcut squeezing (Liu et al., ICML 2023): grayscale, then JPEG at a low quality (10).

    Grayscale is the identity for one-channel MRI, so this is the paper's ISS-JPEG-10 here.

    Shape:
        x: (N, C, H, W); result: same.
    """
    grey = x.float().mean(dim=1, keepdim=True).expand_as(x)
    return jpeg(grey, quality)


# ------------------------------------------------------------------------------------ training recipes
def flip_only(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flips (p = 1/2), the part of the standard recipe that swaps concat halves.

    Shape:
        x: (N, C, H, W); result: same.
    """
    from medenc.learn.train import augment_batch

    return augment_batch(x, generator, pad=0)


def crop_only(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crops of the zero-padded image (pad 1/8 of the side), no flips.

    Shape:
        x: (N, C, H, W); result: same.
    """
    from medenc.core.harden import random_shift

    return random_shift(x, generator).contiguous()


def untargeted_pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int = 5, norm: str = "l2") -> Tensor:
    """Adversarial examples for training (Madry et al. 2018): ascend the loss of the true label.

    Step length ``2.5 * eps / steps``, no random start, no bounds (model inputs are unbounded); the
    model's train/eval mode and ``requires_grad`` flags are restored.

    Shape:
        x: (N, C, H, W); y: (N,); result: like x, detached.
    """
    step = 2.5 * eps / steps
    with frozen(model):
        x0 = x.detach().float()
        delta = torch.zeros_like(x0, requires_grad=True)
        for _ in range(steps):
            loss = functional.cross_entropy(model(x0 + delta).float(), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if norm == "l2":
                    g = grad.reshape(grad.shape[0], -1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    delta += step * grad / g
                    d = delta.reshape(delta.shape[0], -1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    delta *= torch.clamp(eps / d, max=1.0)
                else:
                    delta += step * grad.sign()
                    delta.clamp_(-eps, eps)
        return (x0 + delta).detach()


def adversarial_hook(eps: float, steps: int, norm: str = "l2") -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """A :func:`medenc.learn.train.fit` ``batch_hook`` that trains on :func:`untargeted_pgd` examples."""

    def hook(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        return untargeted_pgd(model, xb, yb, eps=eps, steps=steps, norm=norm)

    return hook


# -------------------------------------------------------------------------------------------- registry
class DefenceSpec(NamedTuple):
    """A registry entry: its kind, input transformation (or None), default parameter and description."""

    kind: str
    function: Callable[..., Tensor] | None
    default: float | None
    description: str
    #: the parameter is an integer (quality, size, bits, repeats)
    integer: bool = True
    #: the transformation fills a ``stats`` dict (what it achieved)
    reports: bool = False


@dataclass(frozen=True)
class Defence:
    """One thief's counter-measure.

    Attributes:
        name: registry name (:data:`DEFENCES`).
        param: its parameter (JPEG quality, blur sigma, compression ratio, UEraser repeats) or None.
    """

    name: str
    param: float | None = None

    @property
    def kind(self) -> str:
        """``"input"`` (a transformation of every image) or ``"training"`` (a training recipe)."""
        return DEFENCES[self.name].kind

    @property
    def value(self) -> float | int:
        """The parameter, or the registry's default; an int where the parameter is one."""
        spec = DEFENCES[self.name]
        value = spec.default if self.param is None else self.param
        if value is None:
            raise ValueError(f"{self.name} takes no parameter")
        return int(value) if spec.integer else float(value)

    @property
    def label(self) -> str:
        """Row name in the report, e.g. ``jpeg q10``, ``jpeg2000 10:1`` or ``blur sigma 1``."""
        if DEFENCES[self.name].default is None:
            return self.name
        v = self.value
        v = int(v) if float(v).is_integer() else v
        names = {
            "jpeg": f"jpeg q{v}",
            "jpeg-cr": f"jpeg {v}:1",
            "j2k-cr": f"jpeg2000 {v}:1",
            "squeeze": f"squeeze (ISS) q{v}",
            "blur": f"blur sigma {v}",
            "median": f"median {v}x{v}",
            "bitdepth": f"bit depth {v}",
            "ueraser": f"ueraser (max of {v})" if v > 1 else "ueraser (1 draw)",
        }
        return names[self.name]

    def transform(self, x: Tensor, *, stats: dict | None = None) -> Tensor:
        """Apply an input transformation (``kind == "input"``) with this defence's parameter.

        Args:
            x: model inputs.
            stats: filled with what the transformation achieved, where it reports (compression ratios).

        Shape:
            x: (N, C, H, W); result: same.
        """
        spec = DEFENCES[self.name]
        if spec.function is None:
            raise ValueError(f"{self.name} is a training recipe, not an input transformation")
        if spec.reports:
            return spec.function(x, self.value, stats=stats)
        return spec.function(x, self.value)


#: name -> :class:`DefenceSpec`
DEFENCES: dict[str, DefenceSpec] = {
    "jpeg": DefenceSpec("input", jpeg, 30, "JPEG re-compression (Pillow) at quality PARAM"),
    "jpeg-cr": DefenceSpec(
        "input", jpeg_ratio, 10, "JPEG at compression ratio PARAM:1 (quality searched per image)", False, True
    ),
    "j2k-cr": DefenceSpec(
        "input", jpeg2000_ratio, 10, "JPEG 2000 (irreversible) at compression ratio PARAM:1", False, True
    ),
    "squeeze": DefenceSpec(
        "input", squeeze, 10, "image shortcut squeezing: grayscale + JPEG quality PARAM (ICML 2023)"
    ),
    "blur": DefenceSpec("input", blur, 1.0, "Gaussian blur of sigma PARAM pixels", False),
    "median": DefenceSpec("input", median, 3, "median filter PARAM x PARAM"),
    "bitdepth": DefenceSpec("input", bit_depth, 3, "bit-depth reduction to PARAM bits"),
    "flip-aug": DefenceSpec("training", None, None, "random horizontal flips while training"),
    "crop-aug": DefenceSpec("training", None, None, "random crops of the padded image while training"),
    "augment": DefenceSpec("training", None, None, "flips and crops (the standard recipe)"),
    "ueraser": DefenceSpec(
        "training",
        None,
        5,
        "UEraser-style heavy augmentation (erasing, strong geometry and intensity), "
        "the highest-loss of PARAM draws per image (UEraser-Max; 1 = one draw)",
    ),
    "cutout": DefenceSpec("training", None, None, "Cutout: a random square of half the side set to zero"),
    "mixup": DefenceSpec("training", None, None, "MixUp training (Beta(1, 1), labels mixed alike)"),
    "cutmix": DefenceSpec("training", None, None, "CutMix training (Beta(1, 1), labels mixed by area)"),
    "early-stop": DefenceSpec("training", None, None, "keep the epoch best on the thief's few clean labelled images"),
    "advtrain": DefenceSpec(
        "training", None, None, "adversarial training, L2 budget = the key's eps (PGD steps: --adv-steps)"
    ),
    "finetune": DefenceSpec(
        "training", None, None, "fine-tune the stolen model on the thief's few clean labelled images"
    ),
    "ssl-finetune": DefenceSpec(
        "training",
        None,
        None,
        "SimCLR pretraining on the encrypted images (no labels), then training on the thief's "
        "few clean labelled images",
    ),
}

#: what ``--defenses all`` runs
DEFAULT_DEFENCES = (
    "jpeg:75",
    "jpeg:30",
    "jpeg-cr:10",
    "jpeg-cr:20",
    "j2k-cr:10",
    "j2k-cr:20",
    "squeeze",
    "blur:1",
    "median:3",
    "bitdepth:3",
    "flip-aug",
    "crop-aug",
    "augment",
    "ueraser",
    "cutout",
    "mixup",
    "cutmix",
    "early-stop",
    "advtrain",
    "finetune",
    "ssl-finetune",
)


def parse_defences(text: str) -> list[Defence]:
    """``"all"``, ``"none"`` or a comma-separated list such as ``"jpeg:10,j2k-cr:20,blur:1.5,flip-aug"``.

    Raises:
        InputError: an unknown name, a bad or missing parameter, or a parameter on a recipe that takes none.
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if items == ["all"]:
        items = list(DEFAULT_DEFENCES)
    if items == ["none"]:
        return []  # only the reference rows (clean baseline, undefended thief)
    if not items:
        raise InputError("give at least one defence (or 'all')")
    result: list[Defence] = []
    for item in items:
        name, _, raw = item.partition(":")
        name = name.strip()
        if name not in DEFENCES:
            raise InputError(f"unknown defence {name!r}; known: all, {', '.join(DEFENCES)} (e.g. jpeg:10)")
        spec = DEFENCES[name]
        param: float | None = None
        if raw:
            if spec.default is None:
                raise InputError(f"defence {name!r} takes no parameter, got {item!r}")
            try:
                param = float(raw)
            except ValueError:
                raise InputError(f"parameter of {name!r} must be a number, got {raw!r}") from None
            if spec.integer and not param.is_integer():
                raise InputError(f"parameter of {name!r} must be a whole number, got {raw!r}")
        elif spec.default is not None:
            param = float(spec.default)
        defence = Defence(name, param)
        if defence not in result:
            if spec.kind == "input":  # check the parameter now, on a tiny image, not after an hour of training
                defence.transform(torch.full((1, 1, 16, 16), 0.5))
            elif name == "ueraser" and not 1 <= defence.value <= 20:
                raise InputError(f"ueraser repeats must lie in 1..20, got {raw}")
            result.append(defence)
    return result
