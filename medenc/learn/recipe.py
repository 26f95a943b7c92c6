"""The one training recipe: every model medenc trains (base, victim, thief) is trained from a TrainRecipe.

Its defaults are the project's defaults; commands and configs override fields, nothing else restates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainRecipe:
    """How a classifier is trained by :func:`medenc.learn.train.fit`.

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per SGD step.
        lr: peak SGD learning rate (Nesterov momentum, warm-up then cosine decay).
        size: model input size (square) the images are mapped to.
        augment: random flips and crops (a careful thief's recipe).
        seed: seeds the initial weights, the data order and the augmentation.
        device: ``cpu``, ``cuda`` or ``None`` (CUDA if available).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    size: int = 128
    augment: bool = False
    seed: int = 0
    device: str | None = None

    def fit_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`medenc.learn.train.fit` this recipe sets."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "augment": self.augment,
            "seed": self.seed,
            "device": self.device,
        }


#: the recipe's defaults, for commands that print or document them
DEFAULT_RECIPE = TrainRecipe()
