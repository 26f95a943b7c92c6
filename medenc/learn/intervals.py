"""Mean and 95% interval of an accuracy over training seeds, and the protection verdict built on them.

A cell of an evaluation (one thief's recipe x one architecture) is trained with several seeds. Its interval
is a **Student-t interval over the seeds** (mean +- t(0.975, n - 1) x sd / sqrt(n), clipped to 0..1): it
measures how much the thief's result moves with his training seed, on the fixed test set. With one seed
there is no spread to measure, so the interval is the **Wilson score interval** of the accuracy over the
test slices (the test set's sampling error), and says so. A cell whose interval reaches the clean
baseline's (its upper end at or above the baseline's lower end) is "not protected": the thief may do as
well as with the originals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: two-sided confidence of every interval medenc reports
CONFIDENCE = 0.95


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Student-t interval of the mean of ``values`` (at least two), clipped to 0..1.

    Returns:
        ``mean``, ``low``, ``high``, ``sd`` (sample standard deviation), ``n``, ``values``, ``method``.
    """
    from scipy.stats import t

    n = len(values)
    if n < 2:
        raise ValueError("a t-interval needs at least two values")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {
        "mean": mean,
        "low": max(0.0, mean - half),
        "high": min(1.0, mean + half),
        "sd": sd,
        "n": n,
        "values": list(values),
        "method": f"t over {n} seeds",
    }


def wilson_interval(accuracy: float, n_test: int, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Wilson score interval of one accuracy measured on ``n_test`` slices (the one-seed fallback)."""
    from scipy.stats import norm

    if n_test < 1:
        raise ValueError("a Wilson interval needs at least one test slice")
    z = float(norm.ppf(0.5 + confidence / 2))
    centre = (accuracy + z * z / (2 * n_test)) / (1 + z * z / n_test)
    half = z / (1 + z * z / n_test) * math.sqrt(accuracy * (1 - accuracy) / n_test + z * z / (4 * n_test * n_test))
    return {
        "mean": accuracy,
        "low": max(0.0, centre - half),
        "high": min(1.0, centre + half),
        "sd": None,
        "n": 1,
        "values": [accuracy],
        "method": f"Wilson over {n_test} test slices (1 seed)",
    }


def summarize(values: Sequence[float], n_test: int) -> dict[str, Any]:
    """The interval of a cell: t over the seeds, or Wilson over the test slices for a single seed."""
    if not values:
        raise ValueError("no values to summarize")
    return t_interval(values) if len(values) >= 2 else wilson_interval(values[0], n_test)


def not_protected(cell: Mapping[str, Any], clean: Mapping[str, Any]) -> bool:
    """Whether a thief's interval reaches the clean baseline's (overlaps it or lies above it)."""
    return float(cell["high"]) >= float(clean["low"])


def interval_text(summary: Mapping[str, Any] | None, digits: int = 1) -> str:
    """``"37.3% [31.0-43.6]"`` (mean and interval in percent); ``"-"`` for None."""
    if summary is None:
        return "-"
    scale = 100.0
    return (
        f"{summary['mean'] * scale:.{digits}f}% "
        f"[{summary['low'] * scale:.{digits}f}-{summary['high'] * scale:.{digits}f}]"
    )
