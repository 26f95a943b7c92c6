"""What a key fixes besides its secret correspondence: the combiners, the PGD settings, hardening options.

:class:`PGDSettings` and the tables here are plain settings, re-exported by :mod:`medenc.core.key`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medenc.errors import KeyFileError

#: Number of target classes each combiner needs per source class.
COMBINER_TARGETS: dict[str, int] = {
    "basic": 1,
    "hconcat": 2,
    "mixup": 2,
    "mixup_concat": 4,
    "cutmix": 2,
    "hconcat_mirror": 2,
}

#: Random transformations the encryption can be made robust to (expectation over transformations,
#: :mod:`medenc.core.harden`), in the order they are applied.
EOT_TRANSFORMS = ("flip", "crop", "jpeg", "blur")

#: Optional hardening fields of a key and their defaults (omitted from the key file when at default, so
#: keys without hardening keep their fingerprint and load in older versions).
HARDENING_DEFAULTS: dict[str, Any] = {"eot": (), "eot_samples": 1, "ratio_jitter": 0.0}

NORMS = ("l2", "linf")


@dataclass(frozen=True)
class PGDSettings:
    """Settings of the targeted PGD attack, on the model-input scale.

    Attributes:
        norm: ``"l2"`` or ``"linf"``.
        eps: radius of the perturbation ball.
        step: step length per iteration (L2: of the normalised gradient; Linf: of its sign).
        steps: number of iterations.
        use_best: return the lowest-loss iterate per sample (as the authors' code did) instead of the last.
        random_start: start from a random point in the ball instead of the input itself.
    """

    norm: str = "l2"
    eps: float = 2.0
    step: float = 0.1
    steps: int = 100
    use_best: bool = True
    random_start: bool = False

    def validate(self, source: str | Path | None = None) -> None:
        """Raise :class:`KeyFileError` if a setting is out of range."""
        if self.norm not in NORMS:
            raise KeyFileError(f"unknown PGD norm {self.norm!r}; expected one of {', '.join(NORMS)}", source)
        for name in ("eps", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise KeyFileError(f"PGD {name} must be a finite number, got {value!r}", source)
            if value <= 0:
                raise KeyFileError(f"PGD {name} must be > 0, got {value}", source)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise KeyFileError(f"PGD steps must be an integer >= 1, got {self.steps!r}", source)
        for name in ("use_best", "random_start"):
            if not isinstance(getattr(self, name), bool):
                raise KeyFileError(f"PGD {name} must be true or false, got {getattr(self, name)!r}", source)
