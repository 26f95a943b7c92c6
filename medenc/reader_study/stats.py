"""Statistics of a paired two-session reading: the Fig. 6 concordance table, exact McNemar, Cohen's kappa.

Formulas are written out in ``docs/reader-study.md``. Everything here is plain Python on lists of labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Concordance:
    """The paper's Fig. 6 split of paired diagnoses (one pair = one case read in both sessions).

    ``different_both_wrong`` (two different wrong diagnoses) is a fifth cell the paper's figure leaves out.
    """

    same_correct: int
    same_wrong: int
    original_only_correct: int
    encrypted_only_correct: int
    different_both_wrong: int

    @property
    def pairs(self) -> int:
        """Number of complete pairs."""
        return sum(asdict(self).values())

    def to_dict(self) -> dict[str, int]:
        """Plain dict, with ``pairs``."""
        return {**asdict(self), "pairs": self.pairs}


def concordance(truth: Sequence[str], first: Sequence[str], second: Sequence[str]) -> Concordance:
    """Split paired diagnoses into the Fig. 6 cells.

    Args:
        truth: true label per case.
        first: diagnosis on the clean image (session 1).
        second: diagnosis on the encrypted image (session 2).
    """
    if not len(truth) == len(first) == len(second):
        raise ValueError("truth, first and second must have the same length")
    cells = [0, 0, 0, 0, 0]
    for t, a, b in zip(truth, first, second, strict=True):
        if a == b:
            cells[0 if a == t else 1] += 1
        elif a == t:
            cells[2] += 1
        elif b == t:
            cells[3] += 1
        else:
            cells[4] += 1
    return Concordance(*cells)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: under H0 the ``b + c`` discordant pairs split as Binomial(n, 1/2).

    ``p = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``; ``p = 1`` when ``b + c == 0``.

    Args:
        b: pairs correct on the clean image only.
        c: pairs correct on the encrypted image only.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2**n)


def paired_difference(b: int, c: int, n: int) -> dict:
    """Accuracy difference (encrypted minus clean) over ``n`` complete pairs, with a Wald 95% interval.

    ``d = (c - b) / n``, ``se = sqrt(b + c - (c - b)^2 / n) / n`` (approximate; poor for small n).

    Args:
        b: pairs correct on the clean image only.
        c: pairs correct on the encrypted image only.
        n: complete pairs.
    """
    if n == 0:
        return {"estimate": None, "ci95": None, "pairs": 0}
    d = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    return {"estimate": d, "ci95": [max(-1.0, d - 1.96 * se), min(1.0, d + 1.96 * se)], "pairs": n}


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with its observed and chance agreement and an approximate 95% interval."""

    kappa: float | None
    observed: float | None
    expected: float | None
    n: int
    ci95: tuple[float, float] | None

    def to_dict(self) -> dict:
        """Plain dict (None where undefined)."""
        return {"kappa": self.kappa, "observed_agreement": self.observed, "expected_agreement": self.expected,
                "n": self.n, "ci95": list(self.ci95) if self.ci95 else None}


def cohen_kappa(first: Sequence[str], second: Sequence[str], categories: Sequence[str]) -> Kappa:
    """Cohen's kappa between two ratings of the same items.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of equal ratings and
    ``p_e = sum_k p1_k * p2_k`` (marginal shares). Undefined (None) with no items or when ``p_e == 1``.
    The interval uses the simple large-sample standard error ``sqrt(p_o (1 - p_o) / (n (1 - p_e)^2))``.
    """
    if len(first) != len(second):
        raise ValueError("first and second must have the same length")
    n = len(first)
    if n == 0:
        return Kappa(None, None, None, 0, None)
    p_o = sum(a == b for a, b in zip(first, second, strict=True)) / n
    p_e = sum((first.count(k) / n) * (second.count(k) / n) for k in categories)
    if math.isclose(p_e, 1.0):
        return Kappa(None, p_o, p_e, n, None)
    kappa = (p_o - p_e) / (1 - p_e)
    se = math.sqrt(p_o * (1 - p_o) / (n * (1 - p_e) ** 2))
    return Kappa(kappa, p_o, p_e, n, (max(-1.0, kappa - 1.96 * se), min(1.0, kappa + 1.96 * se)))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) confidence interval of a proportion ``k / n``; None when ``n == 0``."""
    if n == 0:
        return None
    from scipy.stats import beta

    alpha = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def confusion_matrix(
    truth: Sequence[str], predicted: Sequence[str], categories: Sequence[str]
) -> list[list[int]]:
    """Counts ``m[i][j]`` of items with true ``categories[i]`` diagnosed as ``categories[j]``."""
    position = {k: i for i, k in enumerate(categories)}
    matrix = [[0] * len(categories) for _ in categories]
    for t, p in zip(truth, predicted, strict=True):
        matrix[position[t]][position[p]] += 1
    return matrix
