"""Small, dependency-free statistics for trend alerts: proportions and counts."""

from __future__ import annotations

import math


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """Pooled two-proportion z statistic of ``x1/n1`` (recent) against ``x2/n2`` (baseline).

    Positive when the recent proportion is higher.  0.0 when either sample is empty or the
    pooled proportion is 0 or 1 (no variance, nothing to test).
    """
    if n1 <= 0 or n2 <= 0:
        return 0.0
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:
        return 0.0
    return (x1 / n1 - x2 / n2) / math.sqrt(variance)


def wilson_interval(x: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``x/n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def poisson_z(observed: int, expected: float) -> float:
    """How far a count lies above its expected Poisson mean, in standard deviations
    (the expectation is floored at 1 so that an empty baseline does not divide by zero)."""
    expected = max(expected, 1.0)
    return (observed - expected) / math.sqrt(expected)
