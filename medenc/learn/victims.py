"""Train a fresh classifier and score it: the one path every experiment's victims and thieves take.

``evaluate``, ``calibrate`` and ``security-eval`` all train their models through :func:`train_victim`
and measure them with :func:`score`, so a number in one report means the same as in another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from medenc.learn.recipe import TrainRecipe

Split = tuple[Tensor, Tensor]


@dataclass
class VictimResult:
    """One trained victim: final accuracies, learning curves and predictions.

    Attributes:
        seed: the training seed.
        final: accuracy of the final model on each test set.
        curves: accuracy after every epoch on the watched test sets (see ``watch`` of
            :func:`medenc.learn.train.fit`); a recipe with two phases (fine-tuning) has both, in order.
        predictions: the final model's predicted classes on each test set.
        model: the trained model (not serialised).
    """

    seed: int
    final: dict[str, float]
    curves: dict[str, list[float]] = field(default_factory=dict)
    predictions: dict[str, Tensor] = field(default_factory=dict)
    model: nn.Module | None = None

    def peak(self, name: str) -> float:
        """Best accuracy on ``name`` over the epochs and the final model: an oracle early stop (>= final)."""
        return max([*self.curves.get(name, []), *([self.final[name]] if name in self.final else [])])

    def peak_epoch(self, name: str) -> int:
        """1-based epoch of :meth:`peak` (the first on ties); the number of epochs + 1 when only the final
        model reaches it (e.g. after early stopping restored earlier weights)."""
        curve = self.curves.get(name, [])
        best = self.peak(name)
        return next((i + 1 for i, v in enumerate(curve) if v == best), len(curve) + 1)

    def record(self) -> dict[str, Any]:
        """JSON-able summary: seed, final and peak accuracies, peak epochs and curves."""
        return {
            "seed": self.seed,
            "final": dict(self.final),
            "peak": {name: self.peak(name) for name in self.curves},
            "peak_epoch": {name: self.peak_epoch(name) for name in self.curves},
            "curves": {name: list(curve) for name, curve in self.curves.items()},
        }


def train_victim(
    arch: str,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    recipe: TrainRecipe,
    *,
    progress: Any = None,
    **fit_overrides: Any,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """A fresh ``arch`` (weights seeded by ``recipe.seed``) trained on ``(x, y)``, and its epoch records.

    Args:
        arch: architecture name (:data:`medenc.learn.models.ARCHITECTURES`).
        x: model inputs.
        y: labels.
        num_classes: classifier outputs.
        recipe: the training recipe.
        progress: a progress display for :func:`medenc.learn.train.fit`.
        fit_overrides: other :func:`medenc.learn.train.fit` options (e.g. ``epochs``, ``batch_hook``, ``watch``).

    Shape:
        x: (N, C, H, W); y: (N,).
    """
    from medenc.learn.models import build_model
    from medenc.learn.train import fit

    torch.manual_seed(recipe.seed)
    model = build_model(arch, in_channels=x.shape[1], num_classes=num_classes)
    history = fit(model, x, y, progress=progress, **{**recipe.fit_options(), **fit_overrides})
    return model, history


def curves_of(history: list[dict[str, float]], names: Sequence[str]) -> dict[str, list[float]]:
    """The per-epoch accuracies of the watched test sets ``names`` from :func:`medenc.learn.train.fit`'s records."""
    return {name: [h[f"{name}_accuracy"] for h in history] for name in names}


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
    *,
    watch: Sequence[str] | None = None,
    keep_model: bool = False,
    **fit_overrides: Any,
) -> VictimResult:
    """:func:`train_victim` on ``train``, scoring ``watch`` (default: every test set) after every epoch,
    then :func:`score` on ``tests``.

    Args:
        arch: architecture name.
        train: training inputs and labels.
        tests: named test sets.
        num_classes: classifier outputs.
        recipe: the training recipe (its seed is the result's seed).
        progress: a progress display.
        watch: names of ``tests`` scored after every epoch (their peak is an oracle early stop).
        keep_model: keep the trained model in the result.
        fit_overrides: other :func:`medenc.learn.train.fit` options.
    """
    names = list(tests) if watch is None else list(watch)
    model, history = train_victim(
        arch, *train, num_classes, recipe, progress=progress, watch={n: tests[n] for n in names}, **fit_overrides
    )
    final, predictions = score(model, tests, recipe.device)
    return VictimResult(recipe.seed, final, curves_of(history, names), predictions, model if keep_model else None)


def seed_recipes(recipe: TrainRecipe, seeds: int) -> list[TrainRecipe]:
    """``seeds`` copies of ``recipe`` with seeds ``recipe.seed``, ``recipe.seed + 1``, ..."""
    if seeds < 1:
        from medenc.errors import InputError

        raise InputError(f"--seeds must be >= 1, got {seeds}")
    return [replace(recipe, seed=recipe.seed + i) for i in range(seeds)]


def summarize_runs(runs: Sequence[VictimResult], n_test: Mapping[str, int]) -> dict[str, Any]:
    """A cell over seeds: mean final accuracy per test set (the plain keys), and ``stats`` with the final and
    peak intervals (:func:`medenc.learn.intervals.summarize`) and ``runs`` with every seed's record.

    Args:
        runs: one result per seed (same test sets).
        n_test: test slices per test set (for the one-seed interval).
    """
    from medenc.learn.intervals import summarize

    if not runs:
        raise ValueError("no runs to summarize")
    cell: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for name in runs[0].final:
        finals = [r.final[name] for r in runs]
        cell[name] = sum(finals) / len(finals)
        stats[name] = {"final": summarize(finals, n_test[name])}
        if name in runs[0].curves:
            stats[name]["peak"] = summarize([r.peak(name) for r in runs], n_test[name])
    return {**cell, "stats": stats, "runs": [r.record() for r in runs]}


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
