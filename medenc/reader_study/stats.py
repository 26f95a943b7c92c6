"""Statistics of a reader study: the Fig. 6 concordance table, exact McNemar, the paired accuracy difference
(Tango's score interval) with a non-inferiority test, Cohen's kappa (Fleiss-Cohen-Everitt interval), and the
exact binomial test of a forced-choice detection rate.

Formulas are written out in ``docs/reader-study.md``. Everything here works on counts and lists of labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


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


def binomial_test_half(k: int, n: int) -> float:
    """Two-sided exact binomial test of ``k`` successes in ``n`` trials against p = 1/2.

    ``p = min(1, 2 * P(X <= min(k, n - k)))`` with ``X ~ Binomial(n, 1/2)``; ``p = 1`` when ``n == 0``.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2.0 * tail / 2**n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: under H0 the ``b + c`` discordant pairs split as Binomial(n, 1/2).

    Args:
        b: pairs correct on the clean image only.
        c: pairs correct on the encrypted image only.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    return binomial_test_half(b, b + c)


def _normal_sf(z: float) -> float:
    """Upper tail of the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def tango_statistic(b: int, c: int, n: int, delta: float) -> float:
    """Tango's (1998) score statistic of H0: (encrypted - original accuracy) = ``delta``, over ``n`` pairs.

    ``T = (c - b - n delta) / sqrt(n (2 q + delta (1 - delta)))`` with ``q`` the restricted maximum-likelihood
    estimate of P(correct on the original only) under H0: ``q = (sqrt(B^2 - 4 A C) - B) / (2 A)``,
    ``A = 2n``, ``B = -b - c + (2n - c + b) delta``, ``C = -b delta (1 - delta)``.

    Args:
        b: pairs correct on the clean image only.
        c: pairs correct on the encrypted image only.
        n: complete pairs.
        delta: the hypothesised difference, strictly between -1 and 1.
    """
    a_, b_, c_ = 2 * n, -b - c + (2 * n - c + b) * delta, -b * delta * (1 - delta)
    q = (math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
    variance = n * (2 * q + delta * (1 - delta))
    numerator = c - b - n * delta
    if variance <= 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def _solve(f, lo: float, hi: float) -> float:
    """A root of the decreasing function ``f`` on [lo, hi] (f(lo) > 0 > f(hi)), by bisection."""
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def paired_difference(b: int, c: int, n: int, *, margin: float = 0.05, z: float = Z95) -> dict:
    """Accuracy difference (encrypted minus clean) over ``n`` pairs, Tango's score interval, non-inferiority.

    The interval is the set of differences ``delta`` that Tango's score test does not reject,
    ``-z < T(delta) < z``; unlike the Wald interval it does not collapse when no pair is discordant. The
    non-inferiority test of ``H0: delta <= -margin`` against ``H1: delta > -margin`` is the one-sided score
    test at ``-margin``: ``p = 1 - Phi(T(-margin))``; non-inferiority is shown at one-sided level 2.5%
    exactly when the interval's lower end lies above ``-margin``.

    Args:
        b: pairs correct on the clean image only.
        c: pairs correct on the encrypted image only.
        n: complete pairs.
        margin: the non-inferiority margin, a proportion in [0, 1) (0.05 = 5 percentage points).
        z: the normal quantile of the two-sided interval (95%).
    """
    if not 0 <= margin < 1:
        raise ValueError(f"the margin must be in [0, 1), got {margin}")
    if n == 0:
        return {"estimate": None, "ci95": None, "pairs": 0, "method": "Tango score interval",
                "non_inferiority": None}
    if b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b, c and b + c <= n, got b={b}, c={c}, n={n}")
    estimate = (c - b) / n
    edge = 1 - 1e-12
    low = -1.0 if estimate <= -edge or tango_statistic(b, c, n, -edge) <= z else \
        _solve(lambda d: tango_statistic(b, c, n, d) - z, -edge, estimate)
    high = 1.0 if estimate >= edge or tango_statistic(b, c, n, edge) >= -z else \
        _solve(lambda d: tango_statistic(b, c, n, d) + z, estimate, edge)
    statistic = tango_statistic(b, c, n, -margin) if margin > 0 else tango_statistic(b, c, n, 0.0)
    p_value = _normal_sf(statistic)
    return {
        "estimate": estimate,
        "ci95": [low, high],
        "pairs": n,
        "method": "Tango score interval",
        "non_inferiority": {
            "margin": margin,
            "statistic": statistic,
            "p_value": p_value,
            "non_inferior": bool(low > -margin),
            "test": "one-sided score test of H0: difference <= -margin (alpha 0.025)",
        },
    }


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with its observed and chance agreement and its asymptotic 95% interval."""

    kappa: float | None
    observed: float | None
    expected: float | None
    n: int
    se: float | None
    ci95: tuple[float, float] | None

    def to_dict(self) -> dict:
        """Plain dict (None where undefined)."""
        return {"kappa": self.kappa, "observed_agreement": self.observed, "expected_agreement": self.expected,
                "n": self.n, "se": self.se, "ci95": list(self.ci95) if self.ci95 else None}


def cohen_kappa(first: Sequence[str], second: Sequence[str], categories: Sequence[str]) -> Kappa:
    """Cohen's kappa between two ratings of the same items, with the Fleiss-Cohen-Everitt (1969) interval.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of equal ratings and
    ``p_e = sum_k r_k s_k`` (``r``, ``s`` the two ratings' marginal shares). Its large-sample variance is
    ``[sum_i p_ii (1 - (r_i + s_i)(1 - kappa))^2 + (1 - kappa)^2 sum_{i != j} p_ij (s_i + r_j)^2
    - (kappa - p_e (1 - kappa))^2] / (n (1 - p_e)^2)``, the one statsmodels' ``cohens_kappa`` uses; the 95%
    interval is ``kappa +- 1.96 se``, clipped to [-1, 1]. It has zero width when ``p_o`` is 0 or 1 (the
    variance estimate is 0 there). Undefined (None) with no items or when ``p_e == 1``.
    """
    if len(first) != len(second):
        raise ValueError("first and second must have the same length")
    n = len(first)
    if n == 0:
        return Kappa(None, None, None, 0, None, None)
    index = {k: i for i, k in enumerate(categories)}
    size = len(categories)
    table = [[0.0] * size for _ in range(size)]
    for a, b in zip(first, second, strict=True):
        table[index[a]][index[b]] += 1 / n
    rows = [sum(table[i]) for i in range(size)]
    cols = [sum(table[i][j] for i in range(size)) for j in range(size)]
    p_o = sum(table[i][i] for i in range(size))
    p_e = sum(r * s for r, s in zip(rows, cols, strict=True))
    if math.isclose(p_e, 1.0):
        return Kappa(None, p_o, p_e, n, None, None)
    kappa = (p_o - p_e) / (1 - p_e)
    term_a = sum(table[i][i] * (1 - (rows[i] + cols[i]) * (1 - kappa)) ** 2 for i in range(size))
    term_b = (1 - kappa) ** 2 * sum(table[i][j] * (cols[i] + rows[j]) ** 2
                                    for i in range(size) for j in range(size) if i != j)
    term_c = (kappa - p_e * (1 - kappa)) ** 2
    se = math.sqrt(max(term_a + term_b - term_c, 0.0) / (n * (1 - p_e) ** 2))
    return Kappa(kappa, p_o, p_e, n, se, (max(-1.0, kappa - Z95 * se), min(1.0, kappa + Z95 * se)))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) confidence interval of a proportion ``k / n``; None when ``n == 0``."""
    if n == 0:
        return None
    from scipy.stats import beta

    alpha = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def detection_rate(detected: int, trials: int) -> dict:
    """A forced-choice detection rate with its exact interval and the exact binomial test against 50%.

    Args:
        detected: trials where the reader marked the changed image.
        trials: answered trials.
    """
    ci = clopper_pearson(detected, trials)
    return {
        "detected": detected,
        "trials": trials,
        "rate": detected / trials if trials else None,
        "ci95": list(ci) if ci else None,
        "p_value": binomial_test_half(detected, trials),
        "test": "exact two-sided binomial test against 50% (chance)",
    }


def confusion_matrix(
    truth: Sequence[str], predicted: Sequence[str], categories: Sequence[str]
) -> list[list[int]]:
    """Counts ``m[i][j]`` of items with true ``categories[i]`` diagnosed as ``categories[j]``."""
    position = {k: i for i, k in enumerate(categories)}
    matrix = [[0] * len(categories) for _ in categories]
    for t, p in zip(truth, predicted, strict=True):
        matrix[position[t]][position[p]] += 1
    return matrix
