"""Targeted projected gradient descent (PGD), the building block of Adversarial Data Encryption.

A pure function of its inputs: the targets, the bounds and the norm ball are arguments, the model's
train/eval mode and its parameters' ``requires_grad`` flags are restored afterwards, and nothing is
printed or set globally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

Scalar = float | Tensor

_TINY = 1e-12


def _per_sample(value: Scalar, x: Tensor) -> Tensor:
    """``value`` as a tensor broadcastable against ``x`` along the batch dimension.

    Shape:
        value: scalar or (N,); result: (N, 1, ..., 1) or scalar, on ``x``'s device in float32.
    """
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.ndim == 0:
        return value
    if value.shape != (x.shape[0],):
        raise ValueError(f"per-sample value must have shape ({x.shape[0]},), got {tuple(value.shape)}")
    return value.view(-1, *[1] * (x.ndim - 1))


def _bound(value: Scalar, x: Tensor) -> Tensor:
    """A bound as a float32 tensor broadcastable to ``x`` (scalar, (N,) per sample, or x's shape)."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.ndim == 1 and value.shape[0] == x.shape[0] and x.ndim > 1:
        return value.view(-1, *[1] * (x.ndim - 1))
    return value


def _flat_norm(t: Tensor, norm: str) -> Tensor:
    """Per-sample norm of ``t``.

    Shape:
        t: (N, *); result: (N, 1, ..., 1).
    """
    flat = t.reshape(t.shape[0], -1)
    values = flat.norm(p=2, dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    return values.view(-1, *[1] * (t.ndim - 1))


def project(delta: Tensor, eps: Tensor, norm: str) -> Tensor:
    """Project perturbations onto the per-sample eps-ball.

    Args:
        delta: perturbations.
        eps: radius, scalar or broadcastable per sample.
        norm: ``"l2"`` or ``"linf"``.

    Returns:
        The projected perturbations.

    Shape:
        delta: (N, *); eps: () or (N, 1, ..., 1); result: like delta.
    """
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    scale = torch.clamp(eps / (_flat_norm(delta, "l2") + _TINY), max=1.0)
    return delta * scale


def _random_start(x: Tensor, eps: Tensor, norm: str, generator: torch.Generator | None) -> Tensor:
    noise = torch.empty_like(x)
    if norm == "linf":
        noise.uniform_(-1.0, 1.0, generator=generator)
        return noise * eps
    # uniform in the L2 ball: direction uniform on the sphere, radius ~ U^(1/d)
    noise.normal_(generator=generator)
    direction = noise / (_flat_norm(noise, "l2") + _TINY)
    dims = x[0].numel()
    radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype).pow(1.0 / dims)
    return direction * radius.view(-1, *[1] * (x.ndim - 1)) * eps


def targeted_pgd(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    eps: Scalar,
    step: Scalar,
    steps: int,
    norm: str = "l2",
    bounds: tuple[Scalar, Scalar] = (0.0, 1.0),
    use_best: bool = True,
    random_start: bool = False,
    input_transform: Callable[[Tensor], Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Move each input toward its target class: ``argmin CE(f(x'), t)`` with ``||x' - x|| <= eps``.

    Each iteration takes a step along the per-sample normalised gradient (L2) or its sign (Linf),
    then projects onto the eps-ball around ``x`` and onto ``bounds``. The perturbation is kept in
    float32 even when the forward pass runs under autocast.

    Args:
        model: classifier returning logits; its parameters get no gradients.
        x: inputs in the units ``eps`` is measured in (model inputs, or native pixels if
            ``input_transform`` maps them to model inputs).
        target: target class index per sample.
        eps: ball radius, a float or one value per sample.
        step: step length, a float or one value per sample.
        steps: number of iterations (0 returns ``x`` clipped to the bounds).
        norm: ``"l2"`` or ``"linf"``.
        bounds: ``(low, high)`` of valid inputs: floats, per-sample tensors, or tensors like ``x``.
        use_best: return, per sample, the iterate with the lowest loss seen (evaluated before each
            step and after the last), instead of the last iterate.
        random_start: start from a uniformly random point of the ball.
        input_transform: differentiable map applied to the input before the model.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the model under autocast (CUDA or CPU).
        generator: random generator for ``random_start``.

    Returns:
        The adversarial inputs, same shape, dtype and device as ``x``.

    Shape:
        x: (N, C, *spatial); target: (N,); result: (N, C, *spatial).
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if target.shape != (x.shape[0],):
        raise ValueError(f"target must have shape ({x.shape[0]},), got {tuple(target.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")

    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x0 = x.detach().to(work_dtype)
    target = target.to(device=x.device, dtype=torch.long)
    eps_t, step_t = _per_sample(eps, x0), _per_sample(step, x0)
    low, high = _bound(bounds[0], x0), _bound(bounds[1], x0)
    transform = input_transform or (lambda t: t)

    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        delta = _random_start(x0, eps_t, norm, generator) if random_start else torch.zeros_like(x0)
        delta = torch.clamp(x0 + delta, low, high) - x0
        best = x0 + delta
        best_loss = torch.full((x0.shape[0],), float("inf"), device=x0.device)
        autocast = (
            torch.autocast(device_type=x0.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        for i in range(steps + 1):
            last = i == steps
            if last and not use_best:
                break
            delta.requires_grad_(not last)
            with autocast, torch.set_grad_enabled(not last):
                logits = model(transform(x0 + delta))
            loss = nn.functional.cross_entropy(logits.to(work_dtype), target, reduction="none")
            if use_best:
                with torch.no_grad():
                    better = loss.detach() < best_loss
                    best_loss = torch.where(better, loss.detach().float(), best_loss)
                    mask = better.view(-1, *[1] * (x0.ndim - 1))
                    best = torch.where(mask, x0 + delta.detach(), best)
            if last:
                break
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            with torch.no_grad():
                if norm == "l2":
                    update = grad / (_flat_norm(grad, "l2") + _TINY)
                else:
                    update = grad.sign()
                delta = delta.detach() - step_t * update
                delta = project(delta, eps_t, norm)
                delta = torch.clamp(x0 + delta, low, high) - x0
        result = best if use_best else x0 + delta.detach()
    finally:
        for p, flag in zip(model.parameters(), grad_flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return result.detach().to(dtype=x.dtype)
