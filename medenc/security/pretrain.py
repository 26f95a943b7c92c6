"""The thief who fine-tunes from a self-supervised start: SimCLR pretraining on the shared images.

He has the encrypted set and a few labelled originals. Instead of training a classifier on the encrypted
labels (which carry the planted correspondence), he pretrains a network **without labels** on the
encrypted images with SimCLR (Chen et al. 2020: two random views of each image, the NT-Xent contrastive
loss pulls a pair together against the rest of the batch), then replaces its last layer by a fresh
classifier head and fine-tunes everything on his labelled originals. No hub weights are needed, and the
labels, the part of the shared set that encodes the key, are never used.

The encoder is the architecture itself with a ``dim``-wide last linear layer as the (linear) projection
head; the fine-tuning replaces that layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["nt_xent", "replace_head", "simclr_pretrain", "ssl_view"]


def replace_head(model: nn.Module, num_outputs: int) -> nn.Linear:
    """Replace the last ``nn.Linear`` of ``model`` by a fresh one with ``num_outputs`` outputs (returned)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no linear layer to replace")
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    head = nn.Linear(old.in_features, num_outputs).to(old.weight.device)
    setattr(parent, attr, head)
    return head


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's normalised-temperature cross-entropy of two views' embeddings (row i of each is a pair).

    Shape:
        z1, z2: (N, D); result: scalar.
    """
    z = functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    similarity = z @ z.t() / temperature
    similarity.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return functional.cross_entropy(similarity, partner)


def ssl_view(x: Tensor, generator: torch.Generator) -> Tensor:
    """One random view for SimCLR: random geometry (crop-like scaling, rotation, flip) and intensity.

    Shape:
        x: (N, C, H, W); result: same.
    """
    from medenc.security.augment import random_affine, random_intensity

    return random_intensity(random_affine(x.float(), generator), generator).contiguous()


def simclr_pretrain(
    arch: str,
    x: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    device: str | None = None,
    dim: int = 128,
    temperature: float = 0.5,
    progress: Any = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """A fresh ``arch`` pretrained with SimCLR on the images ``x`` (no labels).

    SGD (Nesterov momentum 0.9, weight decay 5e-4 on kernels), linear warm-up over 10% of the steps, then
    cosine decay; seeded like :func:`medenc.learn.train.fit`.

    Returns:
        The encoder (last linear layer = ``dim``-wide projection) in eval mode, and one record per epoch
        (``epoch``, ``loss``, ``seconds``).

    Shape:
        x: (N, C, H, W).
    """
    import time

    from medenc.core.encrypt import resolve_device
    from medenc.learn.models import build_model

    dev = resolve_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(arch, in_channels=x.shape[1], num_classes=dim).to(dev)
    decay = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": plain, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    n = x.shape[0]
    batch_size = min(batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # full batches only: the loss needs every row's partner
    total, warmup = epochs * steps_per_epoch, max(1, round(0.1 * epochs * steps_per_epoch))
    task = progress.add_task("SimCLR pretraining", total=total) if progress is not None else None
    history, step = [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        started, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(n, generator=generator)
        for b in range(steps_per_epoch):
            xb = x[order[b * batch_size : (b + 1) * batch_size]]
            views = torch.cat([ssl_view(xb, generator), ssl_view(xb, generator)]).to(dev)
            factor = (
                (step + 1) / warmup
                if step < warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            )
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            z = model(views)
            loss = nt_xent(z[: xb.shape[0]], z[xb.shape[0] :], temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            loss_sum += value
            step += 1
            if task is not None:
                progress.update(task, advance=1, description=f"SimCLR epoch {epoch}/{epochs} loss {value:.3f}")
        history.append({"epoch": epoch, "loss": loss_sum / steps_per_epoch, "seconds": time.perf_counter() - started})
    model.eval()
    return model, history
