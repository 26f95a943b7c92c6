"""Training, prediction and model checkpoints.

:func:`fit` trains any classifier of :mod:`medenc.learn.models` with SGD (Nesterov momentum, weight decay,
linear warm-up then cosine decay of the learning rate). On CUDA it uses bf16 autocast and channels_last;
on the CPU it is seeded and deterministic. ``augment=True`` is the data thief's standard augmentation
(random horizontal flip, random crop after zero padding), used by the security evaluation.

Checkpoints (:class:`ModelInfo`, :func:`save_checkpoint`, :func:`load_checkpoint`) live in
:mod:`medenc.learn.checkpoint` and are re-exported here.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from medenc.core.encrypt import resolve_device
from medenc.errors import InputError
from medenc.learn.checkpoint import CHECKPOINT_FORMAT, ModelInfo, load_checkpoint, save_checkpoint
from medenc.learn.recipe import DEFAULT_RECIPE

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.mapping import Preprocess

__all__ = [
    "CHECKPOINT_FORMAT",
    "ModelInfo",
    "accuracy",
    "augment_batch",
    "fit",
    "load_checkpoint",
    "predict",
    "prepare_inputs",
    "recalibrate_batchnorm",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]


# ------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators (call before ``build_model``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def prepare_inputs(x: Tensor | Sequence[Tensor], preprocess: Preprocess | None, *, chunk: int = 256) -> Tensor:
    """Map raw slices to model input with ``preprocess`` (or pass model inputs through as float32).

    Args:
        x: a batch, or a sequence of single images ``(C, H, W)`` that may differ in size.
        preprocess: the model-input mapping; None means ``x`` already is model input.
        chunk: images mapped at a time.

    Shape:
        x: (N, C, H, W) or N x (C, H_i, W_i); result: (N, C, *preprocess.size).
    """
    if preprocess is None:
        return x.float() if isinstance(x, Tensor) else torch.stack([t.float() for t in x])
    if not isinstance(x, Tensor):
        return torch.cat([preprocess.to_model(t[None].float()) for t in x])
    return torch.cat([preprocess.to_model(x[i : i + chunk].float()) for i in range(0, x.shape[0], chunk)])


def augment_batch(x: Tensor, generator: torch.Generator, *, pad: int | None = None) -> Tensor:
    """Random horizontal flip (p=0.5) and random crop of the zero-padded image, per sample.

    The random draws come from ``generator`` (a CPU generator), so results do not depend on the device.

    Args:
        x: model-input batch.
        generator: CPU random generator.
        pad: padding on each side; default 1/8 of the smaller side (4 px at 32x32, the CIFAR recipe).

    Shape:
        x: (N, C, H, W); result: same.
    """
    n, _, h, w = x.shape
    pad = max(1, round(min(h, w) / 8)) if pad is None else int(pad)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if pad == 0:
        return x
    from medenc.core.harden import random_shift

    return random_shift(x, generator, pad).contiguous()


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    x_train: Tensor | Sequence[Tensor],
    y_train: Tensor | Sequence[int],
    *,
    epochs: int = DEFAULT_RECIPE.epochs,
    batch_size: int = DEFAULT_RECIPE.batch_size,
    lr: float = DEFAULT_RECIPE.lr,
    device: str | torch.device | None = None,
    seed: int = 0,
    augment: bool | Callable[[Tensor, torch.Generator], Tensor] = False,
    preprocess: Preprocess | None = None,
    progress: Any = None,
    weight_decay: float = 5e-4,
    val: tuple[Tensor, Tensor] | None = None,
    recalibrate_bn: bool = True,
    batch_hook: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    keep_best: bool = False,
    mix: Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]] | None = None,
    watch: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    watch_bn_samples: int = 128,
) -> list[dict[str, float]]:
    """Train ``model`` in place by minimising cross-entropy.

    Args:
        model: a classifier (see :func:`medenc.learn.models.build_model`).
        x_train: raw slices if ``preprocess`` is given (mapped once before training), else model inputs.
        y_train: class indices.
        epochs: passes over the training set.
        batch_size: samples per step (the last, smaller batch is kept unless it has one sample).
        lr: peak learning rate of SGD (Nesterov momentum 0.9): linear warm-up over 10% of the steps, then
            cosine decay to zero.
        device: ``"auto"``/None (CUDA if available), ``"cpu"``, ``"cuda"``, ...
        seed: seeds the shuffling, augmentation and torch's global generator (dropout).
        augment: random flip + padded random crop (the data thief's standard recipe), or a callable
            ``augment(batch, generator) -> batch`` (e.g. flips only).
        preprocess: the model-input mapping for raw ``x_train`` (and ``val``).
        progress: a ``rich.progress.Progress`` (or anything with ``add_task``/``update``) to report to.
        weight_decay: L2 weight decay of weight matrices and kernels (not of biases or norm weights).
        val: optional ``(x, y)`` evaluated after every epoch (same input kind as ``x_train``).
        recalibrate_bn: finish with :func:`recalibrate_batchnorm` on the (unaugmented) training inputs.
        batch_hook: ``batch_hook(model, batch, labels) -> batch`` called on every (augmented) batch
            before the step, e.g. to replace it by adversarial examples (adversarial training).
        keep_best: early stopping: at the end restore the weights of the epoch with the best
            ``val_accuracy`` (the earliest on ties); needs ``val``.
        mix: ``mix(batch, labels, generator) -> (batch, targets)`` called on every batch after the
            augmentation, returning class-probability targets ``(N, K)`` (MixUp, CutMix); the loss is the
            cross-entropy against them.
        watch: named test sets ``{name: (x, y)}`` (model inputs) scored after every epoch, recorded as
            ``<name>_accuracy``: the learning curve behind an oracle early stop. Before each score the
            batch-norm statistics are recomputed for that epoch's weights (on ``watch_bn_samples``
            training inputs spread over the set; on all of them after the last epoch, as at the end of
            training, so without ``keep_best`` the last record is the returned model's accuracy). This
            changes no weight and draws no random number: training is the same with or without it.
        watch_bn_samples: training inputs used for those intermediate batch-norm statistics.

    Returns:
        One record per epoch: ``epoch``, ``loss``, ``train_accuracy`` (on the batches as trained),
        ``lr``, ``seconds`` and, with ``val``, ``val_accuracy``, with ``watch``, ``<name>_accuracy``
        (``seconds`` excludes that scoring). The model is left in eval mode on ``device``.

    Raises:
        InputError: empty data, mismatched lengths, labels out of range or bad hyper-parameters.

    Shape:
        x_train: (N, C, H, W); y_train: (N,).
    """
    y = torch.as_tensor(y_train, dtype=torch.long).reshape(-1)
    n = y.shape[0]
    if n == 0:
        raise InputError("no training samples")
    if len(x_train) != n:
        raise InputError(f"{len(x_train)} training images but {n} labels")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise InputError(f"need epochs >= 1, batch size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    if keep_best and val is None:
        raise InputError("early stopping (keep_best) needs a validation set")
    dev = resolve_device(device)
    x = prepare_inputs(x_train, preprocess)
    num_classes = _num_outputs(model, x[:1])
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise InputError(f"labels must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    val_data = None if val is None else (prepare_inputs(val[0], preprocess), torch.as_tensor(val[1]).long())
    watched = {name: (tx.float(), torch.as_tensor(ty).long()) for name, (tx, ty) in (watch or {}).items()}
    bn_probe = x[torch.linspace(0, n - 1, min(n, max(2, watch_bn_samples))).round().long()] if watched else None

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    memory = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    model.to(dev, memory_format=memory)
    x, y = x.to(dev), y.to(dev)
    params_decay = [p for p in model.parameters() if p.ndim > 1]
    params_plain = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [
            {"params": params_decay, "weight_decay": weight_decay},
            {"params": params_plain, "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, round(0.1 * total))
    task = progress.add_task("training", total=total) if progress is not None else None

    history: list[dict[str, float]] = []
    best_state: dict[str, Tensor] | None = None
    step = 0
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # fixed input size: let cuDNN pick fast kernels
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            started = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(dev)
            loss_sum = torch.zeros((), device=dev)  # summed on the device: no host sync per step
            correct = torch.zeros((), dtype=torch.long, device=dev)
            seen = 0
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                if index.numel() < 2 and n > 1:  # batch norm needs two samples
                    step += 1
                    continue
                xb, yb = x[index], y[index]
                if callable(augment):
                    xb = augment(xb, generator)
                elif augment:
                    xb = augment_batch(xb, generator)
                target = yb
                if mix is not None:
                    xb, target = mix(xb, yb, generator)
                if batch_hook is not None:
                    xb = batch_hook(model, xb, yb)
                    model.train()
                for group in optimizer.param_groups:
                    group["lr"] = lr * _lr_factor(step, total, warmup)
                with _autocast(dev):
                    logits = model(xb.contiguous(memory_format=memory))
                loss = functional.cross_entropy(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += loss.detach() * yb.numel()
                correct += (logits.detach().argmax(1) == yb).sum()
                seen += yb.numel()
                if task is not None:
                    text = None if step % 20 else f"epoch {epoch}/{epochs} loss {float(loss_sum) / seen:.3f}"
                    progress.update(task, advance=1, description=text)
            record = {
                "epoch": epoch,
                "loss": float(loss_sum) / max(1, seen),
                "train_accuracy": int(correct) / max(1, seen),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - started,
            }
            if val_data is not None:
                logits = predict(model, val_data[0], batch_size=max(batch_size, 64), device=dev)
                record["val_accuracy"] = accuracy(logits, val_data[1])
                if keep_best and record["val_accuracy"] > max((h["val_accuracy"] for h in history), default=-1.0):
                    best_state = copy.deepcopy(model.state_dict())
            if watched:
                probe = x if epoch == epochs else bn_probe
                recalibrate_batchnorm(model, probe, batch_size=batch_size)  # type: ignore[arg-type]
                for name, (tx, ty) in watched.items():
                    scores = predict(model, tx, batch_size=max(batch_size, 64), device=dev)
                    record[f"{name}_accuracy"] = accuracy(scores, ty)
            history.append(record)
            if task is not None:
                progress.update(task, description=f"epoch {epoch}/{epochs} loss {record['loss']:.3f}")
        if best_state is not None:
            model.load_state_dict(best_state)
        if recalibrate_bn and not (watched and best_state is None):  # (watch already did it after the last epoch)
            recalibrate_batchnorm(model, x, batch_size=batch_size)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    model.eval()
    return history


def recalibrate_batchnorm(model: nn.Module, x: Tensor, *, batch_size: int = 64) -> None:
    """Recompute every batch-norm layer's running mean and variance for the model's final weights.

    The running averages kept during training mix statistics of earlier weights; after a short training
    they can be far enough off to ruin eval-mode predictions. One pass over ``x`` in train mode with a
    cumulative average (``momentum=None``) replaces them with exact statistics. Weights do not change.

    Shape:
        x: (N, C, H, W) model inputs (on any device; moved batch by batch).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return
    dev = next(model.parameters()).device
    memory = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    momenta = [m.momentum for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad(), _autocast(dev):
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size]
                if xb.shape[0] > 1:
                    model(xb.to(dev).contiguous(memory_format=memory))
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


def _num_outputs(model: nn.Module, probe: Tensor) -> int:
    fc = getattr(model, "fc", None) or getattr(model, "classifier", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            return int(model(probe.to(device)).shape[-1])
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------- predict
def predict(
    model: nn.Module,
    x: Tensor | Sequence[Tensor],
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    preprocess: Preprocess | None = None,
    probs: bool = False,
) -> Tensor:
    """Class scores of a trained model, computed in eval mode without gradients.

    Args:
        model: the classifier; moved to ``device`` and left there, its train/eval mode restored.
        x: model inputs, or raw slices when ``preprocess`` is given.
        batch_size: samples per forward pass.
        device: as in :func:`fit`; None uses the model's current device.
        preprocess: the model-input mapping for raw ``x``.
        probs: return softmax probabilities instead of logits.

    Returns:
        float32 CPU tensor.

    Shape:
        x: (N, C, H, W); result: (N, K).
    """
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    inputs = prepare_inputs(x, preprocess)
    memory = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    was_training = model.training
    model.to(dev, memory_format=memory)
    model.eval()
    outputs = []
    try:
        with torch.inference_mode(), _autocast(dev):
            for start in range(0, inputs.shape[0], batch_size):
                xb = inputs[start : start + batch_size].to(dev).contiguous(memory_format=memory)
                outputs.append(model(xb).float().cpu())
    finally:
        model.train(was_training)
    logits = torch.cat(outputs) if outputs else torch.zeros(0, 0)
    return logits.softmax(dim=1) if probs else logits


def accuracy(scores: Tensor, y: Tensor | Sequence[int]) -> float:
    """Fraction of samples whose arg-max class (or given class) equals the label.

    Shape:
        scores: (N, K) logits/probabilities or (N,) predicted classes; y: (N,).
    """
    y = torch.as_tensor(y).long().reshape(-1).cpu()
    pred = scores.argmax(dim=1) if scores.ndim == 2 else scores.long()
    if pred.shape[0] != y.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions but {y.shape[0]} labels")
    return float((pred.cpu() == y).float().mean()) if y.numel() else float("nan")
