"""Encryptor: a base model plus a key turns images and their labels into encrypted images.

For every image of class y the key gives k target classes; targeted PGD moves one copy of the image
toward each target, and the key's combiner joins the k copies into one image of the original size.
All copies of a batch run through one batched PGD call.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from medenc.core.combine import combine
from medenc.core.fast_model import attack_model
from medenc.core.key import EncryptionKey
from medenc.core.pgd import targeted_pgd
from medenc.errors import InputError

PRECISIONS = ("fp32", "bf16", "auto")
Bound = float | Tensor


class InputMapping(Protocol):
    """What :class:`Encryptor` needs of a native -> model-input mapping (see ``medenc.core.mapping``)."""

    def __call__(self, x: Tensor) -> Tensor: ...

    def select(self, index: Tensor) -> InputMapping: ...

    def eps_scale(self, norm: str = "l2") -> Tensor: ...


@dataclass
class EncryptionResult:
    """Everything one encryption produced.

    Attributes:
        encrypted: the combined images, like the input.
        copies: the k perturbed copies per image.
        targets: the target class of each copy.

    Shape:
        encrypted: (N, C, ...); copies: (N, k, C, ...); targets: (N, k).
    """

    encrypted: Tensor
    copies: Tensor
    targets: Tensor


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Raises:
        InputError: an unknown device name, or CUDA asked for but not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {device!r}", tip="use auto, cpu, cuda or cuda:N") from error
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but CUDA is not available", tip="use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


class Encryptor:
    """Encrypt batches of images with a base classifier and a secret key.

    Args:
        model: the base classifier (logits over the key's classes).
        key: the encryption key.
        device: where PGD runs (``None``: CUDA if available, else CPU). A copy of the model goes there;
            ``model`` itself is left where it is, in its mode, with its weights.
        batch_size: PGD samples per call (images x targets); larger batches use more memory.
        precision: ``"fp32"``, ``"bf16"`` (autocast, perturbation in fp32) or ``"auto"`` (bf16 on
            CUDA, fp32 on CPU).
        fast_model: attack the frozen copy made by :func:`medenc.core.fast_model.attack_model` (batch norm folded,
            channels-last, cheaper first-layer gradient on CPU): same logits up to rounding, faster.
            The copy is taken here: later changes to ``model``'s weights do not reach it.
        compile: run the attacked model through ``torch.compile`` (``True`` or a mode such as
            ``"max-autotune"``); pays off on CUDA for large jobs. The last, smaller batch of a job is
            padded to the full batch so that one compiled shape serves every call.
        extra_models: hardening: more base classifiers (same inputs and classes) attacked together with
            ``model`` as one :class:`medenc.core.harden.EnsembleModel`.

    The key's hardening options are applied here: ``key.eot`` wraps the attacked model(s) in a
    :class:`medenc.core.harden.EOTModel`, ``key.ratio_jitter`` draws per-image ratios. Their random draws
    come from one generator seeded from the key's seed (or from the system's randomness for a key
    without a seed).
    """

    def __init__(
        self,
        model: nn.Module,
        key: EncryptionKey,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        fast_model: bool = True,
        compile: bool | str = False,
        extra_models: Sequence[nn.Module] = (),
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.key = key
        self.batch_size = batch_size
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.precision = precision
        self.compile = compile
        self.channels_last = fast_model or self.device.type == "cuda"
        # the caller's model is never moved or changed: PGD attacks a copy on the device
        self.model = model  # as passed (for callers that want to predict with it); not used by PGD
        self.attacked_model = attack_model(model, self.device) if fast_model else _device_copy(model, self.device)
        self.hardening_generator = torch.Generator().manual_seed(
            key.seed if key.seed is not None else secrets.randbits(63)
        )
        if extra_models or key.eot:
            from medenc.core.harden import EnsembleModel, EOTModel

            if extra_models:
                copier = attack_model if fast_model else _device_copy
                extras = [copier(m, self.device) for m in extra_models]
                self.attacked_model = EnsembleModel([self.attacked_model, *extras])
            if key.eot:
                self.attacked_model = EOTModel(
                    self.attacked_model, key.eot, key.eot_samples, generator=self.hardening_generator
                )

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward pass, or ``None`` for fp32."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def label_indices(self, labels: Tensor | Sequence[int] | Sequence[str]) -> Tensor:
        """Class indices of ``labels`` (indices or class names), validated against the key.

        Shape:
            result: (N,) long.
        """
        if isinstance(labels, Tensor):
            index = labels.long().cpu()
        else:
            index = torch.tensor(
                [self.key.class_index(v) if isinstance(v, str) else int(v) for v in labels], dtype=torch.long
            )
        if index.ndim != 1:
            raise ValueError(f"labels must be one per image, got shape {tuple(index.shape)}")
        bad = (index < 0) | (index >= self.key.num_classes)
        if bad.any():
            raise ValueError(f"label index {int(index[bad][0])} is outside the key's {self.key.num_classes} classes")
        return index

    def targets_for(self, labels: Tensor) -> Tensor:
        """The key's target classes of each label.

        Shape:
            labels: (N,); result: (N, k).
        """
        table = torch.tensor(self.key.targets, dtype=torch.long)
        return table[labels.cpu()]

    def encrypt(
        self,
        x: Tensor,
        labels: Tensor | Sequence[int] | Sequence[str],
        *,
        mapping: InputMapping | None = None,
        bounds: tuple[Bound, Bound] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Tensor:
        """Encrypt images with their true labels.

        Args:
            x: images in native units (model inputs when ``mapping`` is None).
            labels: true class of each image (indices or names).
            mapping: native -> model-input mapping with one window per image; eps and step are
                scaled to native units through its ``eps_scale``.
            bounds: valid native range: floats or per-image (N,) tensors.
            generator: random generator for PGD's random start.
            progress: called after every PGD step with the number of images done so far (fractional:
                a call of n images advances by n / steps per step); for a progress display.

        Returns:
            Encrypted images, same shape, dtype and device as ``x``.

        Shape:
            x: (N, C, H, W); labels: (N,); result: (N, C, H, W).
        """
        return self.encrypt_with_details(
            x, labels, mapping=mapping, bounds=bounds, generator=generator, progress=progress
        ).encrypted

    def encrypt_with_details(
        self,
        x: Tensor,
        labels: Tensor | Sequence[int] | Sequence[str],
        *,
        mapping: InputMapping | None = None,
        bounds: tuple[Bound, Bound] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> EncryptionResult:
        """Like :meth:`encrypt`, also returning the perturbed copies and their targets.

        Shape:
            x: (N, C, H, W); result.copies: (N, k, C, H, W); result.targets: (N, k).
        """
        labels = self.label_indices(labels)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {labels.shape[0]} labels")
        if mapping is not None and len(mapping) != x.shape[0]:  # type: ignore[arg-type]
            raise ValueError(f"mapping holds {len(mapping)} windows for {x.shape[0]} images")  # type: ignore[arg-type]
        k = self.key.num_targets
        targets = self.targets_for(labels)
        per_call = max(1, self.batch_size // k)
        encrypted, copies = [], []
        for start in range(0, x.shape[0], per_call):
            index = torch.arange(start, min(start + per_call, x.shape[0]))
            real = index.shape[0]
            if self.compile and real < per_call < x.shape[0]:  # one shape for the compiled model: pad
                index = torch.cat([index, index[-1:].expand(per_call - real)])
            on_step = _step_progress(progress, start, real, self.key.pgd.steps)
            chunk_copies = self._perturb(x, index, targets, mapping, bounds, generator, on_step)[:real]
            copies.append(chunk_copies)
            encrypted.append(self._combine(chunk_copies, labels[index[:real]]))
        return EncryptionResult(
            encrypted=torch.cat(encrypted).to(device=x.device, dtype=x.dtype),
            copies=torch.cat(copies).to(device=x.device, dtype=x.dtype),
            targets=targets,
        )

    def encrypt_coherent(
        self,
        x: Tensor,
        labels: Tensor | Sequence[int] | Sequence[str],
        *,
        positions: Sequence[float] | Tensor,
        spacing: int,
        mapping: InputMapping | None = None,
        bounds: tuple[Bound, Bound] = (0.0, 1.0),
        progress: Callable[[float], None] | None = None,
    ) -> EncryptionResult:
        """Encrypt the slices of one volume with perturbations coherent through the plane (hardening).

        One PGD call over all slices x targets: each target's perturbation is a smooth field through the
        plane, knots every ``spacing`` slices, linear in between; see :mod:`medenc.core.coherent`.

        Shape:
            x: (N, C, H, W); labels: (N,); positions: (N,); result.encrypted: (N, C, H, W).
        """
        from medenc.core.coherent import encrypt_coherent

        encrypted, copies, targets = encrypt_coherent(
            self, x, labels, positions=positions, spacing=spacing, mapping=mapping, bounds=bounds, progress=progress
        )
        return EncryptionResult(encrypted=encrypted, copies=copies, targets=targets)

    def _perturb(
        self,
        x: Tensor,
        index: Tensor,
        targets: Tensor,
        mapping: InputMapping | None,
        bounds: tuple[Bound, Bound],
        generator: torch.Generator | None,
        on_step: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Run one batched PGD call over all k copies of the images at ``index``.

        Shape:
            result: (n, k, C, H, W) float32 on the PGD device.
        """
        k = self.key.num_targets
        repeat = index.repeat_interleave(k)  # image i's copies are contiguous
        target = targets[index].reshape(-1).to(self.device)
        settings = self.key.pgd
        batch, eps, step, transform, (low, high) = self.pgd_inputs(x, repeat, mapping, bounds)
        adversarial = targeted_pgd(
            self.attacked_model,
            batch,
            target,
            eps=eps,
            step=step,
            steps=settings.steps,
            norm=settings.norm,
            bounds=(low, high),
            use_best=settings.use_best and not self.key.eot,  # with EOT the loss is random: keep the last
            random_start=settings.random_start,
            input_transform=transform,
            autocast_dtype=self.autocast_dtype,
            generator=generator,
            compile=self.compile,
            on_step=on_step,
        )
        return adversarial.float().contiguous().view(index.shape[0], k, *x.shape[1:])

    def pgd_inputs(
        self, x: Tensor, repeat: Tensor, mapping: InputMapping | None, bounds: tuple[Bound, Bound]
    ) -> tuple[Tensor, Any, Any, Any, tuple[Bound, Bound]]:
        """The PGD batch of the images ``repeat`` picks (each image once per copy), on the PGD device.

        Returns:
            ``(batch, eps, step, input_transform, bounds)``: eps and step per sample in native units
            when ``mapping`` is given (its ``eps_scale``), else the key's floats.

        Shape:
            x: (N, C, H, W); repeat: (M,) indices into x; batch: (M, C, H, W) float32.
        """
        batch = x[repeat.to(x.device)].to(self.device, dtype=torch.float32)
        if self.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        settings = self.key.pgd
        eps: float | Tensor = settings.eps
        step: float | Tensor = settings.step
        transform = None
        if mapping is not None:
            selected = mapping.select(repeat)
            scale = selected.eps_scale(settings.norm).to(self.device)
            eps, step = settings.eps * scale, settings.step * scale
            transform = selected.to(self.device) if hasattr(selected, "to") else selected
        low, high = (_select_bound(b, repeat, x.shape[0], self.device) for b in bounds)
        return batch, eps, step, transform, (low, high)

    def _combine(self, copies: Tensor, labels: Tensor) -> Tensor:
        """Join each image's copies with its class's ratio / box.

        Shape:
            copies: (n, k, C, H, W); labels: (n,); result: (n, C, H, W).
        """
        ratios = torch.tensor(self.key.ratios, dtype=torch.float32)[labels].to(copies.device)
        if self.key.ratio_jitter > 0:
            from medenc.core.harden import jitter_ratios

            ratios = jitter_ratios(ratios, self.key.ratio_jitter, self.hardening_generator)
        boxes = None
        if self.key.boxes is not None:
            boxes = torch.tensor(self.key.boxes, dtype=torch.float32)[labels].to(copies.device)
        return combine(self.key.combiner, copies, ratio=ratios, lam=self.key.mixup_lambda, boxes=boxes)


def _step_progress(
    progress: Callable[[float], None] | None, start: int, count: int, steps: int
) -> Callable[[int], None] | None:
    """An ``on_step`` for :func:`targeted_pgd` that reports images done: ``start`` plus a share of ``count``."""
    if progress is None:
        return None
    return lambda done: progress(start + count * done / max(1, steps))


def _select_bound(bound: Bound, index: Tensor, n: int, device: torch.device) -> Bound:
    """A bound for the PGD batch: scalars pass through, per-image tensors are indexed."""
    if isinstance(bound, Tensor) and bound.ndim >= 1:
        if bound.shape[0] != n:
            raise ValueError(f"per-image bound must have {n} entries, got shape {tuple(bound.shape)}")
        return bound.to(device)[index.to(device)]
    return float(bound)


def _device_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` (channels-last on CUDA), in eval mode; ``model`` is untouched."""
    copied = copy.deepcopy(model).to(device).eval()
    if device.type == "cuda":
        copied = copied.to(memory_format=torch.channels_last)
    return copied
