"""Argument types and checks every statistical room shares: test alternatives, seeds, confidence levels."""

from __future__ import annotations

from typing import Literal, Union

import numpy as np

Alternative = Literal["two-sided", "greater", "less"]


_ALTERNATIVES = ("two-sided", "greater", "less")


SeedLike = Union[int, np.random.Generator, None]


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r}; use one of {_ALTERNATIVES}")


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level={level}; use a confidence level strictly between 0 and 1, e.g. 0.95")


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))
