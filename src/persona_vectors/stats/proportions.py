"""Proportions of independent counts: Wilson intervals, Newcombe differences, Fisher's and McNemar's exact
tests.

Valid when the counted items are independent; for generations that share questions or directions use the
cluster bootstrap (:mod:`~persona_vectors.stats.bootstrap`) or a clustered model
(:mod:`~persona_vectors.stats.clustered`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ._base import Alternative, _check_alternative

__all__ = [
    "FisherResult",
    "Proportion",
    "fisher_exact",
    "mcnemar_exact",
    "newcombe_diff",
    "wilson",
]


# ============================================================================================ proportions
class Proportion(NamedTuple):
    """A share (or a difference of shares) with its interval; a plain tuple ``(estimate, lo, hi)``."""

    estimate: float
    lo: float
    hi: float


def _check_counts(k: float, n: float, what: str = "") -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n{what}, got k={k}, n={n}")


def wilson(k: float, n: float, z: float = 1.96) -> Proportion:
    """Share ``k / n`` with its Wilson score interval.

    Why Wilson: steering sweeps judge few generations per setting and shares near 0 or 1 are common; the
    normal (Wald) interval then collapses to a point or leaves [0, 1], Wilson keeps close to nominal
    coverage and stays inside [0, 1] (Newcombe 1998, *Stat Med* 17:857, method 3).

    Unit of analysis: the ``n`` items are independent Bernoulli trials with one common probability. When
    items share questions or steering directions, this interval is too narrow for a claim about new
    questions/directions; use :func:`cluster_bootstrap` or :func:`gee_logistic`.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials; ``n == 0`` gives ``(0.0, 0.0, 1.0)`` (no information).
        z: normal quantile (1.96 for 95 %).

    Returns:
        ``Proportion(estimate, lo, hi)`` (a tuple); ``lo`` is exactly 0 when ``k == 0`` and ``hi`` exactly 1
        when ``k == n``.

    >>> tuple(round(x, 4) for x in wilson(81, 263))   # Newcombe (1998) example
    (0.308, 0.2553, 0.3662)
    """
    _check_counts(k, n)
    if n == 0:
        return Proportion(0.0, 0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(p, low, high)


def newcombe_diff(k1: float, n1: float, k2: float, n2: float, z: float = 1.96) -> Proportion:
    """Difference of proportions ``k1/n1 - k2/n2`` with Newcombe's hybrid score interval.

    Why: the Wald interval for a difference has poor coverage with small counts or shares near 0/1;
    Newcombe's method 10 combines the two Wilson intervals and keeps near-nominal coverage
    (Newcombe 1998, *Stat Med* 17:873). For ``56/70 - 48/80`` it gives ``[0.0524, 0.3339]``.

    Unit of analysis: two independent binomial samples of independent items (e.g. generations of one
    steering condition vs another with *different* items). Paired designs (same questions in both arms) or
    clustered items need :func:`cluster_bootstrap` / :func:`gee_logistic`.

    Returns:
        ``Proportion(difference, lo, hi)``, clipped to ``[-1, 1]``.

    >>> tuple(round(x, 4) for x in newcombe_diff(56, 70, 48, 80))
    (0.2, 0.0524, 0.3339)
    """
    _check_counts(k1, n1, " for the first sample")
    _check_counts(k2, n2, " for the second sample")
    p1, l1, u1 = wilson(k1, n1, z)
    p2, l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Proportion(d, max(-1.0, lo), min(1.0, hi))


class FisherResult(NamedTuple):
    """Fisher exact test on a 2x2 table: the sample odds ratio and the p-value."""

    odds_ratio: float
    p_value: float


def fisher_exact(k1: int, n1: int, k2: int, n2: int, alternative: Alternative = "two-sided") -> FisherResult:
    """Fisher's exact test of ``p1 = p2`` for ``k1/n1`` vs ``k2/n2`` (``scipy.stats.fisher_exact``).

    Why: exact at any sample size, so it is the safe test for a handful of "supernatural" answers out of a
    few dozen. ``alternative="greater"`` tests ``p1 > p2``.

    Unit of analysis: independent items in two independent groups (the same caveat as :func:`wilson`:
    generations that share questions/directions are not independent, and the p-value is then too small).

    >>> round(fisher_exact(9, 10, 3, 10, alternative="greater").p_value, 4)
    0.0099
    """
    from scipy.stats import fisher_exact as _fisher

    _check_alternative(alternative)
    _check_counts(k1, n1, " for the first sample")
    _check_counts(k2, n2, " for the second sample")
    res = _fisher([[k1, n1 - k1], [k2, n2 - k2]], alternative=alternative)
    return FisherResult(float(res[0]), float(res[1]))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar test of paired correctness: ``b`` items only the first method gets right, ``c`` only
    the second; the p-value of ``b`` in ``Binomial(b + c, 1/2)`` (``scipy.stats.binomtest``), 1.0 with no
    discordant item.

    Unit of analysis: the paired item (e.g. one text judged by two judges); items must be independent.

    >>> round(mcnemar_exact(10, 2), 4)
    0.0386
    """
    from scipy.stats import binomtest

    _check_counts(b, b + c, " (b)")
    _check_counts(c, b + c, " (c)")
    return float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
