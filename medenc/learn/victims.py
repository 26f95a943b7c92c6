"""Train a fresh classifier and score it: the one path every experiment's victims and thieves take.

``evaluate``, ``calibrate`` and ``security-eval`` all train their models through :func:`train_victim`
and measure them with :func:`score`, so a number in one report means the same as in another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from medenc.learn.recipe import TrainRecipe

Split = tuple[Tensor, Tensor]


def train_victim(
    arch: str,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    recipe: TrainRecipe,
    *,
    progress: Any = None,
    **fit_overrides: Any,
) -> nn.Module:
    """A fresh ``arch`` (weights seeded by ``recipe.seed``) trained on ``(x, y)``.

    Args:
        arch: architecture name (:data:`medenc.learn.models.ARCHITECTURES`).
        x: model inputs.
        y: labels.
        num_classes: classifier outputs.
        recipe: the training recipe.
        progress: a progress display for :func:`medenc.learn.train.fit`.
        fit_overrides: other :func:`medenc.learn.train.fit` options (e.g. ``epochs``, ``batch_hook``).

    Shape:
        x: (N, C, H, W); y: (N,).
    """
    from medenc.learn.models import build_model
    from medenc.learn.train import fit

    torch.manual_seed(recipe.seed)
    model = build_model(arch, in_channels=x.shape[1], num_classes=num_classes)
    fit(model, x, y, progress=progress, **{**recipe.fit_options(), **fit_overrides})
    return model


def score(
    model: nn.Module, tests: Mapping[str, Split], device: str | None = None
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Accuracy and predicted classes of ``model`` on each named test set.

    Shape:
        each test: x (N, C, H, W), y (N,); predictions: (N,) long.
    """
    from medenc.learn.train import accuracy, predict

    accuracies, predictions = {}, {}
    for name, (x, y) in tests.items():
        predictions[name] = predict(model, x, device=device).argmax(1)
        accuracies[name] = accuracy(predictions[name], y)
    return accuracies, predictions


def train_and_score(
    arch: str,
    train: Split,
    tests: Mapping[str, Split],
    num_classes: int,
    recipe: TrainRecipe,
    progress: Any = None,
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """:func:`train_victim` on ``train``, then :func:`score` on ``tests``."""
    model = train_victim(arch, *train, num_classes, recipe, progress=progress)
    return score(model, tests, recipe.device)


def confusion(pred: Tensor, truth: Tensor, k: int) -> list[list[int]]:
    """Confusion matrix as nested lists: rows = true class, columns = predicted class.

    Shape:
        pred, truth: (N,) class indices.
    """
    matrix = torch.zeros(k, k, dtype=torch.long)
    matrix.index_put_((truth.long(), pred.long()), torch.ones_like(truth, dtype=torch.long), accumulate=True)
    return matrix.tolist()


def per_class_accuracy(matrix: list[list[int]], classes: tuple[str, ...]) -> dict[str, float]:
    """Accuracy per true class from a :func:`confusion` matrix (NaN for a class with no samples)."""
    return {
        name: (row[i] / sum(row) if sum(row) else float("nan")) for i, (name, row) in enumerate(zip(classes, matrix))
    }
