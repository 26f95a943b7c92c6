"""Drawing a key's secrets: the class correspondence, CutMix boxes; class-list checks.

Used by :class:`medenc.core.key.EncryptionKey` (``generate`` and ``validate``); pure Python.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from medenc.errors import KeyFileError


def check_class_count(classes: tuple[str, ...], k: int, combiner: str, source: str | Path | None) -> None:
    if len(classes) < 2:
        raise KeyFileError(f"a key needs at least 2 classes, got {len(classes)}", source)
    if len(set(classes)) != len(classes):
        raise KeyFileError(f"class names must be unique, got {list(classes)}", source)
    if any(not c for c in classes):
        raise KeyFileError("class names must not be empty", source)
    if len(classes) < k + 1:
        raise KeyFileError(
            f"combiner {combiner!r} needs {k} targets per class other than the class itself, "
            f"so at least {k + 1} classes; got {len(classes)}",
            source,
        )


def draw_correspondence(num_classes: int, k: int, rng: random.Random) -> tuple[tuple[int, ...], ...]:
    """k column-wise derangements whose entries in each row are distinct (rejection sampling)."""
    for _ in range(10_000):
        columns: list[list[int]] = []
        for _col in range(k):
            for _try in range(1_000):
                perm = list(range(num_classes))
                rng.shuffle(perm)
                if all(perm[c] != c and all(col[c] != perm[c] for col in columns) for c in range(num_classes)):
                    columns.append(perm)
                    break
            else:
                break
        if len(columns) == k:
            return tuple(tuple(col[c] for col in columns) for c in range(num_classes))
    raise RuntimeError("could not draw a correspondence")  # unreachable for k <= num_classes - 1


def draw_box(rng: random.Random, area: float) -> tuple[float, float, float, float]:
    """A box covering ``1 - area`` of the image (the second copy's share), placed at random."""
    side = math.sqrt(1.0 - area)
    top = round(rng.uniform(0.0, 1.0 - side), 4)
    left = round(rng.uniform(0.0, 1.0 - side), 4)
    side = round(min(side, 1.0 - top, 1.0 - left), 4)
    return (top, left, side, side)
