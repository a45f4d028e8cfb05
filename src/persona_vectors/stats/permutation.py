"""Permutation tests: a target direction against control directions, and two conditions within questions.

:func:`permutation_test_directions` treats the direction as the unit (with ``k`` controls the smallest p is
``1/(k+1)``); :func:`permutation_test_within` permutes the condition within each question; :func:`sign_flip_test`
flips the signs of paired differences (one per unit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._base import Alternative, SeedLike, _check_alternative, _rng
from .bootstrap import _codes

__all__ = [
    "DirectionPermutationResult",
    "SignFlipResult",
    "WithinPermutationResult",
    "permutation_test_directions",
    "permutation_test_within",
    "sign_flip_test",
]


# ============================================================================================ permutation tests
@dataclass(frozen=True)
class DirectionPermutationResult:
    """Result of :func:`permutation_test_directions`.

    Attributes:
        statistic: the target direction's statistic.
        control_statistics: one statistic per control direction.
        p_value: rank-based p with the +1 correction, ``(1 + #controls at least as extreme) / (k + 1)``.
        min_p: the smallest p this test can give, ``1 / (k + 1)``; report it next to ``p_value``.
        rank: the target's rank among all ``k + 1`` directions (1 = most extreme in the tested direction).
        n_controls: ``k``.
        control_mean, control_sd: the control distribution's mean and SD (ddof=1; NaN for one control).
        z: ``(statistic - control_mean) / control_sd`` -- a descriptive effect size, not a test.
        alternative: the tested side.
        unit: always ``"direction"``.
    """

    statistic: float
    control_statistics: np.ndarray
    p_value: float
    min_p: float
    rank: int
    n_controls: int
    control_mean: float
    control_sd: float
    z: float
    alternative: str
    unit: str = "direction"


def permutation_test_directions(
    target_values: Any,
    control_values_by_direction: Any,
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    alternative: Alternative = "greater",
) -> DirectionPermutationResult:
    """Is the target direction's effect outside the distribution of effects of control directions?

    Why: a steering direction is one draw; whether "the anti-assistant direction makes the model
    supernatural" is special can only be judged against what other directions of the same norm do. Under the
    null that the target is exchangeable with the controls, its rank among the ``k + 1`` directions is
    uniform, so ``p = (1 + #{controls with a statistic >= target's}) / (k + 1)`` (for ``"greater"``; ties
    count against the target). Note the floor: **with k controls the smallest achievable p is 1/(k+1)** --
    with 5 random directions it is 1/6 ~ 0.167, so no result can reach p < 0.05 until there are >= 19
    controls. The result reports ``min_p`` so a report can say so.

    Unit of analysis: the direction. Each direction's values (e.g. per-question shares) are reduced to one
    number by ``statistic`` first; the questions only make that number more precise. Compute every
    direction's values on the same questions (and the same α / layer), or the comparison is confounded.

    Args:
        target_values: the target direction's values (any shape ``statistic`` accepts), or a scalar.
        control_values_by_direction: one entry per control direction -- a mapping ``{direction_id: values}``,
            a sequence of arrays, or a 2-D array ``(k, n_values)``.
        statistic: reduces one direction's values to a number (default: mean).
        alternative: ``"greater"`` (target larger), ``"less"``, or ``"two-sided"`` (``min(1, 2 * min(p_greater,
            p_less))``).

    >>> r = permutation_test_directions([0.9, 0.8], [[0.1, 0.2], [0.0, 0.1], [0.3, 0.2], [0.1, 0.1], [0.2, 0.0]])
    >>> round(r.p_value, 4), round(r.min_p, 4)
    (0.1667, 0.1667)
    """
    _check_alternative(alternative)
    if isinstance(control_values_by_direction, Mapping):
        controls = list(control_values_by_direction.values())
    elif isinstance(control_values_by_direction, np.ndarray):
        controls = list(control_values_by_direction) if control_values_by_direction.ndim > 1 else \
            [np.asarray(x) for x in control_values_by_direction]
    else:
        controls = list(control_values_by_direction)
    k = len(controls)
    if k == 0:
        raise ValueError("no control directions; pass at least one (>= 19 for a test that can reach p < 0.05)")
    t = float(statistic(np.asarray(target_values, dtype=np.float64)))
    c = np.array([float(statistic(np.asarray(x, dtype=np.float64))) for x in controls])
    if not math.isfinite(t) or not np.all(np.isfinite(c)):
        raise ValueError("a direction's statistic is NaN/inf (empty values?); give every direction data")
    p_g = (1 + int((c >= t).sum())) / (k + 1)
    p_l = (1 + int((c <= t).sum())) / (k + 1)
    if alternative == "greater":
        p, rank = p_g, 1 + int((c > t).sum())
    elif alternative == "less":
        p, rank = p_l, 1 + int((c < t).sum())
    else:
        p = min(1.0, 2 * min(p_g, p_l))
        rank = 1 + int((np.abs(c - c.mean()) > abs(t - c.mean())).sum())
    mu = float(c.mean())
    sd = float(c.std(ddof=1)) if k > 1 else float("nan")
    z = (t - mu) / sd if k > 1 and sd > 0 else float("nan")
    min_p = 1.0 / (k + 1) if alternative != "two-sided" else min(1.0, 2.0 / (k + 1))
    return DirectionPermutationResult(t, c, float(p), float(min_p), rank, k, mu, sd, float(z), alternative)


@dataclass(frozen=True)
class WithinPermutationResult:
    """Result of :func:`permutation_test_within`: difference of means (condition B - A) and its p-value."""

    difference: float
    p_value: float
    n_perm: int
    n_strata: int
    min_p: float
    alternative: str
    unit: str


def permutation_test_within(
    values: Any,
    condition: Any,
    strata: Any,
    *,
    n_perm: int = 5000,
    seed: SeedLike = 0,
    alternative: Alternative = "two-sided",
    unit: str = "generation within question",
) -> WithinPermutationResult:
    """Two-condition permutation test that shuffles the condition *within* each stratum (question).

    Why: when each question was answered under both conditions (e.g. steered vs unsteered, two α values),
    question difficulty is shared by both arms; permuting labels only within a question keeps that
    structure, so the test is not fooled by unequal question mixes across arms. Statistic: mean(values of
    condition B) - mean(values of condition A), where A is the smaller of the two condition labels in
    sort order (a boolean ``condition`` gives ``True - False``). p = (1 + #{permutations at least as
    extreme}) / (n_perm + 1).

    Unit of analysis: the generation, exchangeable within its question under the null "the condition has no
    effect on any generation". It is the right test when the condition is assigned per generation with
    fixed settings. It is *not* the test of "is this steering direction special": a direction is a draw
    from a population of directions, and that question needs :func:`permutation_test_directions`.

    >>> q = np.repeat(np.arange(20), 4); c = np.tile([0, 0, 1, 1], 20)
    >>> y = (c == 1).astype(float) + 0.1 * (np.arange(80) % 3)
    >>> permutation_test_within(y, c, q, n_perm=999).p_value
    0.001
    """
    _check_alternative(alternative)
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    cond = np.asarray(condition).reshape(-1)
    s = np.asarray(strata).reshape(-1)
    if not (len(y) == len(cond) == len(s)) or len(y) == 0:
        raise ValueError(f"values, condition and strata must be non-empty and of equal length, got "
                         f"{len(y)}, {len(cond)}, {len(s)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("values contain NaN/inf; drop those generations first")
    levels = np.unique(cond)
    if len(levels) != 2:
        raise ValueError(f"condition must have exactly two levels, got {levels.tolist()}")
    if int(n_perm) < 1:
        raise ValueError(f"n_perm={n_perm}; use e.g. 5000")
    b = (cond == levels[1]).astype(np.float64)
    inv, n_strata = _codes(s, "strata")
    order = np.argsort(inv, kind="stable")
    y, b, inv = y[order], b[order], inv[order]
    nb, na = b.sum(), len(b) - b.sum()

    def diff(lab: np.ndarray) -> np.ndarray:
        return (lab @ y) / nb - ((1 - lab) @ y) / na

    t = float(diff(b))
    rng = _rng(seed)
    ge = le = ab = 0
    done = 0
    tol = 1e-12 * max(1.0, abs(t))
    while done < n_perm:
        m = min(1000, int(n_perm) - done)
        keys = inv[None, :] + rng.random((m, len(y)))
        perm = np.argsort(keys, axis=1)  # rows stay inside their stratum block
        d = diff(b[perm]).reshape(-1)
        ge += int((d >= t - tol).sum())
        le += int((d <= t + tol).sum())
        ab += int((np.abs(d) >= abs(t) - tol).sum())
        done += m
    cnt = {"greater": ge, "less": le, "two-sided": ab}[alternative]
    return WithinPermutationResult(t, (1 + cnt) / (n_perm + 1), int(n_perm), n_strata, 1.0 / (n_perm + 1),
                                   alternative, unit)


@dataclass(frozen=True)
class SignFlipResult:
    """Result of :func:`sign_flip_test`.

    Attributes:
        mean: the observed mean of the paired differences.
        p_value: share of sign assignments whose mean is at least as extreme (the observed one included).
        exact: True when all ``2**n`` assignments were enumerated, else ``n_perm`` random ones (+1 correction).
        n: number of units (paired differences).
        min_p: the smallest p this test can give (``2**-n`` exact, ``1/(n_perm+1)`` random).
        alternative: the tested side.
        unit: what one difference is (e.g. ``"scientist"``).
    """

    mean: float
    p_value: float
    exact: bool
    n: int
    min_p: float
    alternative: str
    unit: str


def sign_flip_test(differences: Any, *, n_perm: int = 20000, exact_max_n: int = 16, seed: SeedLike = 0,
                   alternative: Alternative = "greater", unit: str = "unit") -> SignFlipResult:
    """Paired permutation test of a mean difference: under the null each unit's difference is as likely
    negative as positive, so its sign is flipped at random (all ``2**n`` assignments when ``n <= exact_max_n``).

    Use it when the unit of analysis carries one paired difference (a scientist's bits with real vs shuffled
    evidence; one finetune's difference from its control).

    Raises:
        ValueError: no differences, or a non-finite one.
    """
    _check_alternative(alternative)
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if d.size == 0:
        raise ValueError("sign_flip_test needs at least one paired difference")
    if not np.isfinite(d).all():
        raise ValueError("sign_flip_test got a non-finite difference: drop or fix that unit first")
    n = d.size
    obs = float(d.mean())
    if n <= exact_max_n:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        means = (signs * d).mean(axis=1)
        exact, extra, min_p = True, 0, 2.0 ** -n
    else:
        signs = _rng(seed).choice([-1.0, 1.0], size=(n_perm, n))
        means = (signs * d).mean(axis=1)
        exact, extra, min_p = False, 1, 1.0 / (n_perm + 1)
    tol = 1e-12 * max(1.0, abs(obs))
    if alternative == "greater":
        hits = np.sum(means >= obs - tol)
    elif alternative == "less":
        hits = np.sum(means <= obs + tol)
    else:
        hits = np.sum(np.abs(means) >= abs(obs) - tol)
    p = float((hits + extra) / (len(means) + extra))
    return SignFlipResult(obs, min(1.0, p), exact, n, min_p, alternative, unit)
