"""Perturbations that are coherent through the plane: adjacent slices of a volume, optimised jointly.

Independent PGD on each slice of a volume gives each slice its own perturbation; a thief who averages
a slice with its neighbours (the anatomy changes slowly from slice to slice) partly cancels them. Here
the perturbations of the slices are one smooth field through the plane: control perturbations sit at
every ``spacing``-th slice (the knots) and each slice's perturbation is the linear interpolation of the
two knots around it. All controls are optimised together, each step minimising the summed loss of every
slice, so a mean or median over a few adjacent slices leaves the perturbation of a linear segment as it
is. Each control stays in the eps-ball of every slice it reaches, so by convexity every slice's
perturbation stays within its own eps.

Pure torch: :func:`interpolation_weights`, :func:`coherent_pgd`, and :func:`encrypt_coherent` for an
:class:`medenc.core.encrypt.Encryptor` (its method ``encrypt_coherent``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medenc.core.pgd import _TINY, _bound, _flat_norm, frozen, project

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.encrypt import Encryptor


def interpolation_weights(positions: Sequence[float] | Tensor, spacing: int) -> Tensor:
    """Linear interpolation from knots every ``spacing`` slices (from the first position on) to each position.

    Args:
        positions: slice positions (e.g. canonical axial indices), ascending.
        spacing: slices from one knot to the next; 1 gives one knot per slice (independent slices).

    Returns:
        Weights, non-negative, each row summing to 1; knots no position reaches are dropped.

    Shape:
        positions: (N,); result: (N, P) float32.
    """
    pos = torch.as_tensor(positions, dtype=torch.float64).flatten()
    if spacing < 1:
        raise ValueError(f"spacing must be >= 1, got {spacing}")
    if pos.numel() == 0 or bool((pos[1:] < pos[:-1]).any()):
        raise ValueError("positions must be a non-empty ascending sequence")
    offset = (pos - pos[0]) / spacing
    left = torch.floor(offset).long()
    frac = offset - left
    knots = int(left.max()) + 2
    weights = torch.zeros(pos.numel(), knots, dtype=torch.float64)
    rows = torch.arange(pos.numel())
    weights[rows, left] = 1.0 - frac
    weights[rows, left + 1] += frac
    return weights[:, weights.sum(0) > 0].float()


def coherent_pgd(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    weights: Tensor,
    *,
    eps: float | Tensor,
    step: float | Tensor,
    steps: int,
    norm: str = "l2",
    bounds: tuple[float | Tensor, float | Tensor] = (0.0, 1.0),
    use_best: bool = True,
    input_transform: Callable[[Tensor], Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Targeted PGD whose perturbations are mixtures of shared controls: ``delta = weights @ controls``.

    Each step moves every control along its normalised gradient of the summed cross-entropy of all
    samples toward their targets (L2) or its sign (Linf), then projects it onto the smallest eps of the
    samples it reaches; the perturbed samples are clipped to ``bounds``.

    Args:
        model: classifier returning logits (its mode and parameters' flags are restored afterwards).
        x: inputs in the units of ``eps`` (or native pixels with ``input_transform``).
        target: target class per sample.
        weights: mixing weights, non-negative, rows summing to 1 (e.g. :func:`interpolation_weights`).
        eps: ball radius, a float or one per sample.
        step: step length, a float or one per sample.
        steps: iterations.
        norm: ``"l2"`` or ``"linf"``.
        bounds: valid inputs: floats, per-sample tensors or tensors like ``x``.
        use_best: return the iterate with the lowest summed loss instead of the last one.
        input_transform: differentiable map applied before the model.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the model under autocast.
        on_step: called with the number of steps done after each step.

    Returns:
        The adversarial inputs, same shape, dtype and device as ``x``.

    Shape:
        x: (N, C, H, W); target: (N,); weights: (N, P); result: like x.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    n = x.shape[0]
    if weights.ndim != 2 or weights.shape[0] != n or target.shape != (n,):
        raise ValueError(
            f"weights must be ({n}, P) and target ({n},), got {tuple(weights.shape)} and {tuple(target.shape)}"
        )
    if bool((weights < 0).any()) or bool(((weights.sum(1) - 1).abs() > 1e-5).any()):
        raise ValueError("weights must be non-negative with rows summing to 1")
    x0 = x.detach().float()
    mix = weights.to(device=x0.device, dtype=x0.dtype)
    reach = mix > 0
    eps_c = _per_control(eps, reach, x0)
    step_c = _per_control(step, reach, x0)
    low, high = _bound(bounds[0], x0), _bound(bounds[1], x0)
    transform = input_transform or (lambda t: t)
    target = target.to(device=x0.device, dtype=torch.long)
    controls = torch.zeros((mix.shape[1], *x0.shape[1:]), device=x0.device, dtype=x0.dtype, requires_grad=True)
    autocast = (
        torch.autocast(device_type=x0.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    best, best_loss = x0.clone(), torch.tensor(math.inf, device=x0.device)
    with frozen(model):
        for i in range(steps + 1):
            last = i == steps
            with torch.set_grad_enabled(not last):
                delta = (mix @ controls.flatten(1)).view_as(x0)
                perturbed = torch.minimum(torch.maximum(x0 + delta, low), high)
                with autocast:
                    logits = model(transform(perturbed))
                loss = F.cross_entropy(logits.float(), target, reduction="sum")
            with torch.no_grad():
                better = loss.detach() < best_loss if use_best else torch.tensor(last, device=x0.device)
                best_loss = torch.where(better, loss.detach(), best_loss)
                best = torch.where(better, perturbed.detach(), best)
            if last:
                break
            (grad,) = torch.autograd.grad(loss, controls)
            with torch.no_grad():
                if norm == "l2":
                    controls.sub_(grad * step_c / _flat_norm(grad, "l2").add(_TINY))
                else:
                    controls.sub_(grad.sign() * step_c)
                controls.copy_(project(controls, eps_c, norm))
            if on_step is not None:
                on_step(i + 1)
    return best.to(dtype=x.dtype)


def _per_control(value: float | Tensor, reach: Tensor, x0: Tensor) -> Tensor:
    """The smallest per-sample value among the samples each control reaches.

    Shape:
        reach: (N, P); result: (P, 1, ..., 1).
    """
    per_sample = torch.as_tensor(value, dtype=x0.dtype, device=x0.device).expand(reach.shape[0])
    smallest = torch.where(reach, per_sample[:, None], torch.full_like(reach, math.inf, dtype=x0.dtype)).amin(0)
    return smallest.view(-1, *[1] * (x0.ndim - 1))


def encrypt_coherent(
    encryptor: Encryptor,
    x: Tensor,
    labels: Tensor | Sequence[int] | Sequence[str],
    *,
    positions: Sequence[float] | Tensor,
    spacing: int,
    mapping: Any = None,
    bounds: tuple[float | Tensor, float | Tensor] = (0.0, 1.0),
    progress: Callable[[float], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Encrypt the slices of one volume with perturbations coherent through the plane, in one PGD call.

    Each of the key's k targets gets its own smooth field (knots every ``spacing`` slices); the copies
    are then combined per slice as usual. All slices must carry the same label (one study).

    Args:
        encryptor: the :class:`medenc.core.encrypt.Encryptor` (model, key, device, precision).
        x: the slices, in native units with ``mapping`` (model inputs without).
        labels: the true class of each slice (all the same).
        positions: each slice's position through the plane (e.g. its axial index), ascending.
        spacing: slices between knots (1: independent slices, one joint call).
        mapping: native -> model-input mapping with one window per slice.
        bounds: valid native range: floats or per-slice tensors.
        progress: called with the number of slices done (fractional) after each PGD step.

    Returns:
        ``(encrypted, copies, targets)``, as :class:`medenc.core.encrypt.EncryptionResult` holds them.

    Shape:
        x: (N, C, H, W); labels: (N,); encrypted: (N, C, H, W); copies: (N, k, C, H, W); targets: (N, k).
    """
    labels = encryptor.label_indices(labels)
    n, k = x.shape[0], encryptor.key.num_targets
    if labels.shape[0] != n or bool((labels != labels[0]).any()):
        raise ValueError("coherent encryption takes the slices of one study: one label for all of them")
    targets = encryptor.targets_for(labels)
    repeat = torch.arange(n).repeat_interleave(k)  # slice i's copies are contiguous
    mix = torch.kron(interpolation_weights(positions, spacing), torch.eye(k))  # copy j of each slice: own field
    if mix.shape[0] != n * k:
        raise ValueError(f"{len(positions)} positions for {n} slices")
    settings = encryptor.key.pgd
    batch, eps, step, transform, (low, high) = encryptor.pgd_inputs(x, repeat, mapping, bounds)
    adversarial = coherent_pgd(
        encryptor.attacked_model,
        batch,
        targets.reshape(-1).to(encryptor.device),
        mix.to(encryptor.device),
        eps=eps,
        step=step,
        steps=settings.steps,
        norm=settings.norm,
        bounds=(low, high),
        use_best=settings.use_best and not encryptor.key.eot,
        input_transform=transform,
        autocast_dtype=encryptor.autocast_dtype,
        on_step=None if progress is None else (lambda done: progress(n * done / max(1, settings.steps))),
    )
    copies = adversarial.float().view(n, k, *x.shape[1:])
    encrypted = encryptor._combine(copies, labels)
    return encrypted.to(device=x.device, dtype=x.dtype), copies.to(device=x.device, dtype=x.dtype), targets
