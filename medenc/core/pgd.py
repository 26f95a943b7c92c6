"""Targeted projected gradient descent (PGD), the building block of Adversarial Data Encryption.

A pure function of its inputs: the targets, the bounds and the norm ball are arguments, the model's
train/eval mode and its parameters' ``requires_grad`` flags are restored afterwards, and nothing is
printed or set globally.

Speed (see ``benchmarks/RESULTS.md``): :func:`medenc.core.fast_model.attack_model` makes a frozen copy
of a classifier that gives the same logits faster; ``targeted_pgd(compile=...)`` runs the model through
``torch.compile``. The loop itself updates the perturbation in place and keeps
the ``use_best`` bookkeeping on the device, so it never waits on the host.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Scalar = float | Tensor

_TINY = 1e-12


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside the block; the model's mode and flags restored after.

    Used wherever a model is attacked or queried for input gradients, so that a caller's model leaves
    exactly as it came, also when the block raises.
    """
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), grad_flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


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


# ------------------------------------------------------------------------------------------------ the attack
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
    compile: bool | str = False,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Move each input toward its target class: ``argmin CE(f(x'), t)`` with ``||x' - x|| <= eps``.

    Each iteration takes a step along the per-sample normalised gradient (L2) or its sign (Linf),
    then projects onto the eps-ball around ``x`` and onto ``bounds``. The perturbation is kept in
    float32 even when the forward pass runs under autocast.

    Args:
        model: classifier returning logits; its parameters get no gradients. For speed pass the
            copy made by :func:`attack_model`.
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
        compile: run the model through ``torch.compile`` (``True``, or a mode such as
            ``"max-autotune"``); compiled code is reused by later calls with the same shapes.
        on_step: called with the number of steps done after each step (a progress display); it must
            not touch the tensors.

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
    forward: Callable[[Tensor], Tensor] = model
    if compile:
        forward = torch.compile(model, mode=None if compile is True else compile)

    with frozen(model):
        # the box constraint on the perturbation, computed once: low - x0 <= delta <= high - x0
        delta_low, delta_high = low - x0, high - x0
        delta = _random_start(x0, eps_t, norm, generator) if random_start else torch.zeros_like(x0)
        delta = torch.minimum(torch.maximum(delta, delta_low), delta_high)
        best = x0 + delta if use_best else None
        best_loss = torch.full((x0.shape[0],), math.inf, device=x0.device, dtype=work_dtype)
        autocast = (
            torch.autocast(device_type=x0.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        delta.requires_grad_(True)
        for i in range(steps + 1):
            last = i == steps
            if last and not use_best:
                break
            with autocast, torch.set_grad_enabled(not last):
                logits = forward(transform(x0 + delta))
            loss = F.cross_entropy(logits.to(work_dtype), target, reduction="none")
            if best is not None:
                with torch.no_grad():  # on the device: no host sync, no data-dependent shapes
                    better = loss < best_loss
                    best_loss = torch.where(better, loss, best_loss)
                    best = torch.where(better.view(-1, *[1] * (x0.ndim - 1)), x0 + delta, best)
            if last:
                break
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            with torch.no_grad():  # in place on delta; grad may be a compiled graph's buffer: read only
                if norm == "l2":
                    delta.addcmul_(grad, step_t / _flat_norm(grad, "l2").add_(_TINY), value=-1.0)
                    delta.mul_(torch.clamp(eps_t / _flat_norm(delta, "l2").add_(_TINY), max=1.0))
                else:
                    delta.addcmul_(grad.sign(), step_t, value=-1.0)
                    torch.minimum(torch.maximum(delta, -eps_t, out=delta), eps_t, out=delta)
                torch.minimum(torch.maximum(delta, delta_low, out=delta), delta_high, out=delta)
            if on_step is not None:
                on_step(i + 1)
        with torch.no_grad():
            result = best if best is not None else x0 + delta
            result = torch.minimum(torch.maximum(result, low), high)  # x0 + delta can round past a bound
    return result.detach().to(dtype=x.dtype)
