"""Statistics with the right unit of analysis: proportions, cluster bootstrap, direction permutation tests,
clustered logistic models, judge calibration and label-share correction.

Why one module: steering experiments produce many generations that are *not* independent. Generations share
a question, a steering direction, a layer, and the vector they were steered with was extracted from a finite
set of facts or prompts. An interval that resamples generations (or only questions) treats shared variation
as if it averaged out, and comes out too narrow for the question actually asked ("does this *kind* of
direction do this on *new* questions?"). Every function here therefore says what its unit of analysis is,
and the result objects carry it (``units`` / ``unit``), so a report can name it.

Contents:

* :func:`wilson`, :func:`newcombe_diff`, :func:`fisher_exact` -- a proportion, a difference of two
  proportions, and an exact test; valid when the counted items are independent (else use the bootstrap or
  :func:`gee_logistic`).
* :func:`cluster_bootstrap` -- percentile (or BCa) intervals that resample the real units -- one cluster
  column, or several crossed ones (questions x directions x facts) resampled together.
* :func:`bootstrap_mean_ci` -- the plain row bootstrap the experiments used so far (rows = units).
* :func:`permutation_test_directions` -- a target direction against a set of control directions (the
  direction is the unit; with ``k`` controls the smallest p is ``1/(k+1)``).
* :func:`permutation_test_within` -- a two-condition test permuting the condition within each question.
* :func:`gee_logistic`, :func:`mixed_logistic` -- a condition effect on a binary outcome with question as
  the cluster (statsmodels GEE / Bayesian mixed GLM).
* :func:`ece`, :func:`reliability_curve` -- calibration of a judge's probabilities.
* :func:`corrected_shares` -- label shares corrected with a judge's held-out confusion matrix.
* :func:`cohen_kappa` -- agreement between two labelling passes.

Only numpy is imported at module import; scipy, statsmodels and scikit-learn are imported by the functions
that need them, so ``import persona_vectors.stats`` stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Union

import numpy as np

__all__ = [
    "BootstrapResult",
    "CorrectedShares",
    "DirectionPermutationResult",
    "FisherResult",
    "LogisticEffect",
    "Proportion",
    "ReliabilityCurve",
    "WithinPermutationResult",
    "bootstrap_mean_ci",
    "cluster_bootstrap",
    "cohen_kappa",
    "corrected_shares",
    "ece",
    "fisher_exact",
    "gee_logistic",
    "mixed_logistic",
    "newcombe_diff",
    "permutation_test_directions",
    "permutation_test_within",
    "reliability_curve",
    "wilson",
]

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


# ============================================================================================ bootstrap
def bootstrap_mean_ci(values: Any, rng: np.random.Generator, n_boot: int = 2000
                      ) -> tuple[Any, Any, Any]:
    """Mean over axis 0 with a percentile-bootstrap 95 % interval, resampling *rows*.

    Why it exists: the experiments' original interval (kept bit-identical, same random draws). It is correct
    only when each row is one independent unit (e.g. one row per question, already averaged over
    everything else). If rows share a cluster -- a steering direction, a fact used to build the vector --
    use :func:`cluster_bootstrap`.

    Unit of analysis: the row.

    Returns:
        ``(mean, lo, hi)``; arrays of shape ``values.shape[1:]`` for 2-D input.

    >>> m, lo, hi = bootstrap_mean_ci(np.arange(10.0), np.random.default_rng(0), 500)
    >>> bool(lo < m < hi)
    True
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0 or len(v) == 0:
        raise ValueError("bootstrap_mean_ci needs at least one row of values")
    m = v.mean(0)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    boots = v[idx].mean(1)
    return m, np.percentile(boots, 2.5, axis=0), np.percentile(boots, 97.5, axis=0)


@dataclass(frozen=True)
class BootstrapResult:
    """Result of :func:`cluster_bootstrap`.

    Attributes:
        estimate: the statistic on the full data (float, or an array for vector statistics).
        lo, hi: interval bounds at ``level``.
        n_boot: replicates used (replicates whose resample was empty are dropped; see ``n_dropped``).
        units: the resampled unit columns, e.g. ``("question_id", "direction_id")``; ``("row",)`` when rows
            were the units. Name these in the report.
        n_levels: number of distinct levels (clusters) of each unit column.
        level: confidence level.
        method: ``"percentile"`` or ``"bca"``.
        n_dropped: replicates with an empty resample (only possible for incomplete crossed designs).
        replicates: the bootstrap distribution, shape ``(n_boot, *estimate.shape)``.
    """

    estimate: Any
    lo: Any
    hi: Any
    n_boot: int
    units: tuple[str, ...]
    n_levels: dict[str, int]
    level: float
    method: str
    n_dropped: int = 0
    replicates: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    @property
    def se(self) -> Any:
        """Bootstrap standard error (SD of the replicates)."""
        s = np.std(self.replicates, axis=0, ddof=1)
        return float(s) if np.ndim(s) == 0 else s


Columns = dict[str, np.ndarray]


def _as_columns(data: Any) -> tuple[Columns, int]:
    """Records (sequence of mappings), a mapping of equal-length columns, or a DataFrame -> numpy columns."""
    if hasattr(data, "columns") and hasattr(data, "to_numpy") and not isinstance(data, Mapping):
        cols = {str(c): np.asarray(data[c].to_numpy()) for c in data.columns}
    elif isinstance(data, Mapping):
        cols = {str(k): np.asarray(v) for k, v in data.items()}
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            raise ValueError("data is empty; pass at least one record")
        if not all(isinstance(r, Mapping) for r in data):
            raise ValueError("data as a sequence must be records (dicts); pass a dict of columns otherwise")
        keys = list(data[0].keys())
        for i, r in enumerate(data):
            if set(r.keys()) != set(keys):
                raise ValueError(f"record {i} has keys {sorted(r.keys())}, record 0 has {sorted(keys)}; "
                                 "give every record the same fields")
        cols = {str(k): np.asarray([r[k] for r in data]) for k in keys}
    else:
        raise ValueError(f"data of type {type(data).__name__}: pass records (list of dicts), a dict of "
                         "equal-length arrays, or a DataFrame")
    lengths = {k: len(v) if v.ndim else -1 for k, v in cols.items()}
    if not lengths:
        raise ValueError("data has no columns")
    if len(set(lengths.values())) != 1 or -1 in lengths.values():
        raise ValueError(f"columns must be arrays of equal length, got lengths {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("data has no rows")
    return cols, n


def _codes(col: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Integer codes 0..L-1 for the levels of a cluster column."""
    if col.ndim != 1:
        raise ValueError(f"cluster column {name!r} must be 1-D (one id per row), got shape {col.shape}")
    try:
        _, inv = np.unique(col, return_inverse=True)
    except TypeError:  # mixed/unorderable ids: map in order of appearance
        lut: dict[Any, int] = {}
        inv = np.fromiter((lut.setdefault(x, len(lut)) for x in col.tolist()), dtype=np.int64, count=len(col))
    inv = np.asarray(inv, dtype=np.int64).reshape(-1)
    return inv, int(inv.max()) + 1


def _multiway_weights(rng: np.random.Generator, codes: Sequence[tuple[np.ndarray, int]], n: int,
                      b: int) -> np.ndarray:
    """Row multiplicities for ``b`` replicates: product over factors of the draw count of the row's level."""
    w = np.ones((b, n), dtype=np.float64)
    for inv, L in codes:
        counts = rng.multinomial(L, np.full(L, 1.0 / L), size=b).astype(np.float64)  # (b, L)
        w *= counts[:, inv]
    return w


def _eval(statistic: Callable[..., Any], cols: Columns, weights: np.ndarray | None, weighted: bool) -> np.ndarray:
    if weighted:
        w = np.ones(len(next(iter(cols.values())))) if weights is None else weights
        out = statistic(cols, w)
    elif weights is None:
        out = statistic(cols)
    else:
        idx = np.repeat(np.arange(len(weights)), weights.astype(np.int64))
        out = statistic({k: v[idx] for k, v in cols.items()})
    return np.asarray(out, dtype=np.float64)


def cluster_bootstrap(
    data: Any,
    statistic: str | Callable[..., Any],
    clusters: str | Sequence[str],
    *,
    n_boot: int = 2000,
    seed: SeedLike = 0,
    level: float = 0.95,
    method: Literal["percentile", "bca"] = "percentile",
    weighted: bool = False,
    chunk: int = 256,
) -> BootstrapResult:
    """Bootstrap interval that resamples the real units -- whole clusters, and several crossed factors at once.

    Why: generations share questions, steering directions and the facts a vector was built from; a claim
    about new questions *and* new directions must let both vary. Resampling rows (or only questions)
    ignores the other sources and gives intervals that are too narrow (the coverage test in
    ``tests/test_stats.py`` measures this).

    Resampling scheme:

    * one cluster column: the classic cluster bootstrap -- draw ``L`` clusters with replacement out of the
      ``L`` observed and keep all rows of each drawn cluster (with multiplicity).
    * several columns (crossed factors, e.g. ``["question_id", "direction_id"]``): each factor's levels are
      drawn independently with replacement; a row is kept with multiplicity equal to the *product* of the
      draw counts of its levels (the "pigeonhole" / multiway bootstrap; Owen 2007, *Ann Appl Stat* 1:465;
      McCullagh 2000, *Bernoulli* 6:285). Its variance estimate is mildly conservative (it counts the
      interaction/residual term more than once), which we prefer to the alternative of ignoring a factor.
    * nested factors (facts within directions, generations within questions): pass only the *outermost*
      level; resampling the top level already carries the variance of everything below it, and adding the
      inner level as if it were crossed makes the interval more conservative.
    * ``clusters=[]``: rows are the units (the naive bootstrap; for comparison only).

    Unit of analysis: the levels of the ``clusters`` columns, jointly. The result's ``units`` names them.

    Args:
        data: records (a list of dicts), a dict of equal-length columns (numpy arrays / lists), or a pandas
            DataFrame (pandas is not required).
        statistic: either the name of a numeric column -- the (multiplicity-weighted) mean of that column,
            computed for all replicates at once with a matrix product (fast) -- or a callable. A callable
            receives the resampled data as a dict of numpy columns (rows repeated by multiplicity) and
            returns a float or a 1-D array; with ``weighted=True`` it instead receives
            ``(columns, weights)`` with the original rows and their multiplicities (faster, no copies).
        clusters: the unit column(s).
        n_boot: number of replicates.
        seed: int seed or a numpy Generator.
        level: confidence level.
        method: ``"percentile"``; or ``"bca"`` (bias-corrected and accelerated; acceleration from a
            leave-one-cluster-out jackknife, so it needs exactly one cluster column and costs one statistic
            evaluation per cluster).
        weighted: see ``statistic``.
        chunk: replicates generated per block (bounds memory at ``chunk * n_rows`` floats).

    Returns:
        :class:`BootstrapResult` (estimate, lo, hi, n_boot, units, ...).

    >>> recs = [{"q": q, "d": d, "y": float((q + d) % 3 == 0)} for q in range(12) for d in range(5)]
    >>> r = cluster_bootstrap(recs, "y", clusters=["q", "d"], n_boot=500, seed=0)
    >>> r.units, round(r.estimate, 3), r.lo < r.estimate < r.hi
    (('q', 'd'), 0.333, True)
    """
    cols, n = _as_columns(data)
    _check_level(level)
    if int(n_boot) < 2:
        raise ValueError(f"n_boot={n_boot}; use at least a few hundred replicates (e.g. 2000)")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method={method!r}; use 'percentile' or 'bca'")
    units = (clusters,) if isinstance(clusters, str) else tuple(clusters)
    for u in units:
        if u not in cols:
            raise ValueError(f"cluster column {u!r} is not in the data (columns: {sorted(cols)})")
    if len(set(units)) != len(units):
        raise ValueError(f"cluster columns repeat: {units}")
    codes = [_codes(cols[u], u) for u in units]
    n_levels = {u: L for u, (_, L) in zip(units, codes)}
    for u, L in n_levels.items():
        if L < 2:
            raise ValueError(f"cluster column {u!r} has a single level; a bootstrap over it says nothing "
                             "-- drop it from clusters or collect more than one")
    if method == "bca" and len(units) != 1:
        raise ValueError("method='bca' needs exactly one cluster column (jackknife over its levels); "
                         "use method='percentile' for crossed designs")

    rng = _rng(seed)
    if isinstance(statistic, str):
        if statistic not in cols:
            raise ValueError(f"statistic column {statistic!r} is not in the data (columns: {sorted(cols)})")
        try:
            v = np.asarray(cols[statistic], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"column {statistic!r} is not numeric; pass a callable statistic instead") from e
        if not np.all(np.isfinite(v)):
            raise ValueError(f"column {statistic!r} has NaN/inf values; drop or impute them first")
        v2 = v.reshape(n, -1)
        estimate = v2.mean(0)
        out_shape: tuple[int, ...] = v.shape[1:]

        def block(w: np.ndarray) -> np.ndarray:
            tot = w.sum(1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (w @ v2) / tot

        def jack(mask: np.ndarray) -> np.ndarray:
            return v2[mask].mean(0)
    else:
        if not callable(statistic):
            raise ValueError("statistic must be a column name or a callable")
        stat = statistic
        raw = _eval(stat, cols, None, weighted)
        if raw.ndim > 1:
            raise ValueError(f"statistic returned shape {raw.shape}; return a float or a 1-D array")
        out_shape = raw.shape
        estimate = raw.reshape(-1)

        def block(w: np.ndarray) -> np.ndarray:
            out = np.full((len(w), estimate.size), np.nan)
            for i, wi in enumerate(w):
                if wi.sum() > 0:
                    out[i] = np.atleast_1d(_eval(stat, cols, wi, weighted)).reshape(-1)
            return out

        def jack(mask: np.ndarray) -> np.ndarray:
            return np.atleast_1d(_eval(stat, {k: c[mask] for k, c in cols.items()}, None, weighted))

    reps: list[np.ndarray] = []
    if units:
        use_codes = codes
    else:
        use_codes = [(np.arange(n), n)]
    done = 0
    while done < n_boot:
        b = min(int(chunk), int(n_boot) - done)
        w = _multiway_weights(rng, use_codes, n, b)
        reps.append(np.asarray(block(w)).reshape(b, -1))
        done += b
    R = np.concatenate(reps, 0)
    ok = np.all(np.isfinite(R), axis=1)
    n_dropped = int((~ok).sum())
    R = R[ok]
    if len(R) < 2:
        raise ValueError("almost every bootstrap resample was empty; the crossed design is too sparse for a "
                         "multiway bootstrap -- resample the outermost factor only")
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    alpha = 1.0 - level
    if method == "percentile":
        lo = np.quantile(R, alpha / 2, axis=0)
        hi = np.quantile(R, 1 - alpha / 2, axis=0)
    else:
        from scipy.stats import norm

        inv, L = codes[0]
        theta = np.stack([jack(inv != j).reshape(-1) for j in range(L)])  # (L, d)
        d = theta.mean(0) - theta
        den = 6.0 * (d ** 2).sum(0) ** 1.5
        a = np.where(den > 0, (d ** 3).sum(0) / np.where(den > 0, den, 1.0), 0.0)
        prop = ((R < est).sum(0) + 0.5 * (R == est).sum(0)) / len(R)
        z0 = norm.ppf(np.clip(prop, 1.0 / (len(R) + 1), len(R) / (len(R) + 1)))
        lo, hi = np.empty_like(est), np.empty_like(est)
        for j, (pa, out) in enumerate(((alpha / 2, lo), (1 - alpha / 2, hi))):
            zq = norm.ppf(pa)
            adj = norm.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq)))
            for c in range(est.size):
                out[c] = np.quantile(R[:, c], float(np.clip(adj[c], 0.0, 1.0)))

    res_units = units or ("row",)
    res_levels = n_levels if units else {"row": n}
    if out_shape == ():
        return BootstrapResult(float(est[0]), float(lo[0]), float(hi[0]), len(R), res_units, res_levels,
                               float(level), method, n_dropped, R[:, 0])
    return BootstrapResult(est.reshape(out_shape), np.asarray(lo).reshape(out_shape),
                           np.asarray(hi).reshape(out_shape), len(R), res_units, res_levels, float(level), method,
                           n_dropped, R.reshape((len(R),) + tuple(out_shape)))


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


# ============================================================================================ clustered logistic
@dataclass(frozen=True)
class LogisticEffect:
    """A condition effect on the log-odds of a binary outcome, from a clustered model.

    Attributes:
        term: the design column reported.
        coef, lo, hi: log-odds ratio and its interval at ``level``.
        p_value: two-sided p for ``coef = 0``.
        odds_ratio, or_lo, or_hi: ``exp`` of the above.
        n_obs, n_groups: rows and clusters.
        level: confidence level.
        method: model and covariance (e.g. ``"GEE exchangeable, robust"``).
        unit: the cluster the model treats as the unit (the ``groups`` name).
        params: every coefficient by name.
        extra: model-specific numbers (e.g. the working correlation, the random-intercept SD).
    """

    term: str
    coef: float
    lo: float
    hi: float
    p_value: float
    odds_ratio: float
    or_lo: float
    or_hi: float
    n_obs: int
    n_groups: int
    level: float
    method: str
    unit: str
    params: dict[str, float]
    extra: dict[str, float] = field(default_factory=dict)


def _design(y: Any, X: Any, groups: Any, names: Sequence[str] | None, add_intercept: bool,
            term: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], str]:
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    if isinstance(X, Mapping):
        nm = [str(k) for k in X]
        M = np.column_stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in X.values()])
    else:
        M = np.asarray(X, dtype=np.float64)
        if M.ndim == 1:
            M = M[:, None]
        nm = list(names) if names is not None else [f"x{i}" for i in range(M.shape[1])]
        if len(nm) != M.shape[1]:
            raise ValueError(f"{len(nm)} names for {M.shape[1]} design columns; give one name per column")
    g = np.asarray(groups).reshape(-1)
    if not (len(yy) == len(M) == len(g)):
        raise ValueError(f"y, X and groups must have the same number of rows, got {len(yy)}, {len(M)}, {len(g)}")
    if len(yy) == 0:
        raise ValueError("no observations")
    if not np.all(np.isin(yy, (0.0, 1.0))):
        raise ValueError("y must be binary (0/1 or bool); threshold or recode it first")
    if yy.min() == yy.max():
        raise ValueError(f"y is constant ({int(yy[0])}); a logistic model needs both outcomes")
    if not np.all(np.isfinite(M)):
        raise ValueError("X contains NaN/inf; drop or impute those rows")
    if add_intercept:
        if "const" in nm:
            raise ValueError("a design column is named 'const'; rename it or pass add_intercept=False")
        M = np.column_stack([np.ones(len(M)), M])
        nm = ["const", *nm]
    term = term if term is not None else (nm[1] if add_intercept and len(nm) > 1 else nm[0])
    if term not in nm:
        raise ValueError(f"term {term!r} is not a design column (columns: {nm})")
    if np.linalg.matrix_rank(M) < M.shape[1]:
        raise ValueError(f"design columns {nm} are collinear (a constant or duplicated column?); drop one")
    return yy, M, g, nm, term


def gee_logistic(
    y: Any,
    X: Any,
    groups: Any,
    *,
    term: str | None = None,
    names: Sequence[str] | None = None,
    add_intercept: bool = True,
    cov_struct: Literal["exchangeable", "independence"] = "exchangeable",
    cov_type: Literal["robust", "bias_reduced", "naive"] = "robust",
    level: float = 0.95,
    unit: str = "question",
) -> LogisticEffect:
    """Condition effect on a binary outcome (e.g. "judged supernatural") with clustered generations: GEE.

    Why: generations of one question are correlated; a plain logistic regression (or Fisher test) treats
    them as independent and gives p-values that are too small. A GEE with an exchangeable working
    correlation within each cluster and the sandwich covariance gives a population-averaged log-odds ratio
    whose standard error is valid however the within-cluster correlation really looks, as long as there
    are enough clusters (rule of thumb >= 30-40; with fewer use ``cov_type="bias_reduced"``, the
    Mancl-DeRouen correction). Fitted by ``statsmodels`` (``GEE`` with ``Binomial`` family).

    Unit of analysis: the cluster given by ``groups`` (default name ``"question"``); clusters are
    independent, rows within a cluster may be correlated. For crossed random factors (question *and*
    direction), cluster on the factor with more levels and treat the other as fixed, or use
    :func:`cluster_bootstrap`.

    Args:
        y: binary outcome per row.
        X: design without intercept -- a 1-D condition column, a 2-D array, or a mapping ``{name: column}``.
        groups: cluster id per row.
        term: the column to report (default: the first design column).
        names: column names when ``X`` is an array.
        add_intercept: prepend a ``const`` column.
        cov_struct: working correlation.
        cov_type: ``"robust"`` (sandwich), ``"bias_reduced"`` (few clusters) or ``"naive"``.
        level: confidence level.
        unit: the name of the cluster unit, carried into the result.

    >>> rng = np.random.default_rng(0); q = np.repeat(np.arange(40), 10); x = np.tile([0, 1], 200)
    >>> eta = -0.5 + 1.0 * x + rng.normal(0, 1, 40)[q]
    >>> y = (rng.random(400) < 1 / (1 + np.exp(-eta))).astype(int)
    >>> r = gee_logistic(y, {"steered": x}, q)
    >>> r.term, r.lo < 0.8 < r.hi
    ('steered', True)
    """
    import statsmodels.api as sm

    _check_level(level)
    yy, M, g, nm, term = _design(y, X, groups, names, add_intercept, term)
    inv, n_groups = _codes(g, "groups")
    if n_groups < 2:
        raise ValueError("a single cluster; GEE needs many (>= 30 for the robust covariance)")
    cs = {"exchangeable": sm.cov_struct.Exchangeable, "independence": sm.cov_struct.Independence}
    if cov_struct not in cs:
        raise ValueError(f"cov_struct={cov_struct!r}; use 'exchangeable' or 'independence'")
    if cov_type not in ("robust", "bias_reduced", "naive"):
        raise ValueError(f"cov_type={cov_type!r}; use 'robust', 'bias_reduced' or 'naive'")
    order = np.argsort(inv, kind="stable")
    model = sm.GEE(yy[order], M[order], groups=inv[order], family=sm.families.Binomial(),
                   cov_struct=cs[cov_struct]())
    res = model.fit(cov_type=cov_type)
    j = nm.index(term)
    coef = float(res.params[j])
    se = float(res.bse[j])
    z = _z(level)
    from scipy.stats import norm

    p = float(2 * norm.sf(abs(coef / se))) if se > 0 else float("nan")
    lo, hi = coef - z * se, coef + z * se
    extra: dict[str, float] = {"se": se}
    if cov_struct == "exchangeable":
        extra["working_correlation"] = float(np.asarray(res.model.cov_struct.dep_params).reshape(-1)[0])
    return LogisticEffect(term, coef, lo, hi, p, math.exp(coef), math.exp(lo), math.exp(hi), len(yy), n_groups,
                          float(level), f"GEE {cov_struct}, {cov_type}", unit,
                          {n: float(v) for n, v in zip(nm, res.params)}, extra)


def mixed_logistic(
    y: Any,
    X: Any,
    groups: Any,
    *,
    term: str | None = None,
    names: Sequence[str] | None = None,
    add_intercept: bool = True,
    level: float = 0.95,
    unit: str = "question",
) -> LogisticEffect:
    """Condition effect from a logistic model with a random intercept per cluster (subject-specific).

    Why: the GEE gives a population-averaged effect; a random-intercept model gives the effect *within* a
    question, and estimates how much questions differ (the random-intercept SD, in ``extra``). Fitted by
    ``statsmodels.genmod.bayes_mixed_glm.BinomialBayesMixedGLM`` with variational Bayes (``fit_vb``); the
    interval is ``posterior mean +- z * posterior SD`` and the p-value its normal approximation -- an
    approximation (variational posteriors are known to be somewhat too narrow), so prefer
    :func:`gee_logistic` for the headline test and use this as a check.

    Unit of analysis: the cluster given by ``groups``; clusters independent, a shared random intercept
    within each.

    >>> rng = np.random.default_rng(1); q = np.repeat(np.arange(30), 8); x = np.tile([0, 1], 120)
    >>> y = (rng.random(240) < 1 / (1 + np.exp(-(-0.5 + 1.5 * x + rng.normal(0, 1, 30)[q])))).astype(int)
    >>> mixed_logistic(y, x, q, names=["steered"]).coef > 0
    True
    """
    from scipy.stats import norm
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    _check_level(level)
    yy, M, g, nm, term = _design(y, X, groups, names, add_intercept, term)
    inv, n_groups = _codes(g, "groups")
    if n_groups < 2:
        raise ValueError("a single cluster; a random intercept needs several")
    Z = np.zeros((len(yy), n_groups))
    Z[np.arange(len(yy)), inv] = 1.0
    model = BinomialBayesMixedGLM(yy, M, Z, np.zeros(n_groups, dtype=int), fep_names=nm, vcp_names=["group_sd"])
    res = model.fit_vb()
    j = nm.index(term)
    coef, sd = float(res.fe_mean[j]), float(res.fe_sd[j])
    z = _z(level)
    lo, hi = coef - z * sd, coef + z * sd
    p = float(2 * norm.sf(abs(coef / sd))) if sd > 0 else float("nan")
    extra = {"posterior_sd": sd, "random_intercept_sd": float(np.exp(res.vcp_mean[0]))}
    return LogisticEffect(term, coef, lo, hi, p, math.exp(coef), math.exp(lo), math.exp(hi), len(yy), n_groups,
                          float(level), "Bayesian mixed GLM (random intercept), variational", unit,
                          {n: float(v) for n, v in zip(nm, res.fe_mean)}, extra)


# ============================================================================================ calibration
@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration data for a reliability plot (x = ``confidence``, y = ``accuracy``).

    Attributes:
        bin_lo, bin_hi: bin edges.
        confidence: mean predicted probability in the bin (NaN for an empty bin).
        accuracy: observed frequency of the event (binary) or of a correct top label (multi-class).
        count: items in the bin.
        acc_lo, acc_hi: 95 % Wilson interval of ``accuracy`` (independent items).
        ece: the expected calibration error these bins give.
        kind: ``"binary"`` or ``"top-label"``.
    """

    bin_lo: np.ndarray
    bin_hi: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    acc_lo: np.ndarray
    acc_hi: np.ndarray
    ece: float
    kind: str

    def as_records(self) -> list[dict[str, float]]:
        """One dict per non-empty bin (for JSON / plotting)."""
        return [{"bin_lo": float(a), "bin_hi": float(b), "confidence": float(c), "accuracy": float(d),
                 "count": int(e), "acc_lo": float(f), "acc_hi": float(g)}
                for a, b, c, d, e, f, g in zip(self.bin_lo, self.bin_hi, self.confidence, self.accuracy,
                                               self.count, self.acc_lo, self.acc_hi) if e > 0]


def _conf_correct(probs: Any, labels: Any, classes: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray, str]:
    P = np.asarray(probs, dtype=np.float64)
    lab = np.asarray(labels).reshape(-1)
    if P.ndim not in (1, 2) or len(P) == 0:
        raise ValueError(f"probs must be a non-empty 1-D array (binary P(y=1)) or 2-D (n, n_classes), got "
                         f"shape {P.shape}")
    if len(P) != len(lab):
        raise ValueError(f"{len(P)} probability rows for {len(lab)} labels; give one label per row")
    if not np.all(np.isfinite(P)) or P.min() < 0 or P.max() > 1:
        raise ValueError("probs must be finite and in [0, 1]")
    if P.ndim == 1:
        if not np.all(np.isin(lab.astype(np.float64) if lab.dtype != object else lab, (0, 1))):
            raise ValueError("binary labels must be 0/1 (or bool); for multi-class pass 2-D probs")
        return P, lab.astype(np.float64), "binary"
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        if len(classes) != P.shape[1]:
            raise ValueError(f"{len(classes)} classes for {P.shape[1]} probability columns")
        bad = sorted({str(x) for x in lab.tolist() if x not in index})
        if bad:
            raise ValueError(f"labels {bad} are not in classes {list(classes)}")
        li = np.array([index[x] for x in lab.tolist()])
    else:
        try:
            li = lab.astype(np.int64)
        except (TypeError, ValueError) as e:
            raise ValueError("multi-class labels must be column indices, or pass classes=[...] for names") from e
        if li.min() < 0 or li.max() >= P.shape[1]:
            raise ValueError(f"label indices must lie in 0..{P.shape[1] - 1}")
    if not np.allclose(P.sum(1), 1.0, atol=1e-3):
        raise ValueError("each row of probs must sum to 1 (softmax/predict_proba output)")
    return P.max(1), (P.argmax(1) == li).astype(np.float64), "top-label"


def reliability_curve(probs: Any, labels: Any, n_bins: int = 10, *, classes: Sequence[Any] | None = None,
                      strategy: Literal["uniform", "quantile"] = "uniform") -> ReliabilityCurve:
    """Binned predicted probability vs observed frequency -- the data behind a reliability diagram.

    Binary input (1-D ``probs`` = P(y=1), labels 0/1): bins of P(y=1) against the frequency of y=1.
    Multi-class input (2-D ``probs``): top-label calibration -- bins of the max probability against the
    frequency with which the argmax is the true label.

    Unit of analysis: the item (generation); the per-bin Wilson intervals assume independent items.

    Args:
        probs: ``(n,)`` or ``(n, n_classes)`` probabilities.
        labels: 0/1 (binary), class indices, or names with ``classes``.
        n_bins: number of bins.
        classes: names of the probability columns, when ``labels`` are names.
        strategy: ``"uniform"`` (equal-width bins on [0, 1]) or ``"quantile"`` (equal-count bins).

    >>> c = reliability_curve([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], n_bins=2)
    >>> c.count.tolist(), round(c.ece, 3)
    ([2, 2], 0.15)
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins={n_bins}; use e.g. 10")
    conf, correct, kind = _conf_correct(probs, labels, classes)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    elif strategy == "quantile":
        edges = np.quantile(conf, np.linspace(0.0, 1.0, int(n_bins) + 1))
        edges[0], edges[-1] = 0.0, 1.0
        edges = np.unique(edges)
    else:
        raise ValueError(f"strategy={strategy!r}; use 'uniform' or 'quantile'")
    nb = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, nb - 1)
    count = np.bincount(idx, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mconf = np.bincount(idx, weights=conf, minlength=nb) / count
        acc = np.bincount(idx, weights=correct, minlength=nb) / count
    k = np.bincount(idx, weights=correct, minlength=nb)
    ci = np.array([wilson(int(round(kk)), int(nn))[1:] for kk, nn in zip(k, count)])
    nz = count > 0
    e = float(np.sum(count[nz] / count.sum() * np.abs(acc[nz] - mconf[nz])))
    return ReliabilityCurve(edges[:-1], edges[1:], mconf, acc, count, ci[:, 0], ci[:, 1], e, kind)


def ece(probs: Any, labels: Any, n_bins: int = 10, *, classes: Sequence[Any] | None = None) -> float:
    """Expected calibration error: ``sum_b (n_b / n) * |accuracy_b - confidence_b|`` over equal-width bins.

    Why: a judge's probabilities are used as expected counts (:func:`corrected_shares`); that is only
    honest if "0.7" means right 70 % of the time. 0 = perfectly calibrated (up to binning noise, which is
    of order ``sqrt(n_bins / n)``), larger = miscalibrated. See :func:`reliability_curve` for the two input
    forms (binary P(y=1), or multi-class top-label).

    Unit of analysis: the item; evaluate on held-out items, grouped so that no question/direction is in
    both the judge's training set and the evaluation set.

    >>> round(ece([0.9, 0.9, 0.9, 0.9], [1, 1, 1, 0]), 3)
    0.15
    """
    return reliability_curve(probs, labels, n_bins, classes=classes).ece


# ============================================================================================ label shares
@dataclass(frozen=True)
class CorrectedShares:
    """Result of :func:`corrected_shares`.

    Attributes:
        shares: corrected true-label shares (non-negative, sum to 1), indexed like the confusion matrix.
        observed: observed (predicted-label) shares that went in.
        counts: ``shares * n`` -- corrected expected counts.
        n: number of items (sum of the observed counts / probability rows).
        labels: label names, when given.
        residual: ``|C^T shares - observed|_2`` -- large values mean the observed shares are not reachable
            with this judge (e.g. the judge's errors on this text differ from those on its held-out set).
    """

    shares: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    n: float
    labels: tuple[str, ...] | None
    residual: float

    def as_dict(self) -> dict[str, float]:
        """``{label: share}`` (labels are the column indices when no names were given)."""
        names = self.labels if self.labels is not None else tuple(str(i) for i in range(len(self.shares)))
        return {str(k): float(v) for k, v in zip(names, self.shares)}


def corrected_shares(observed: Any, confusion: Any, *, labels: Sequence[str] | None = None) -> CorrectedShares:
    """Correct observed label shares for a judge's known mistakes, using its held-out confusion matrix.

    Why: if the judge calls 30 % of truly-AI answers "supernatural", the raw supernatural share mixes real
    supernatural answers with misread AI ones. With ``C[i, j] = P(judge says j | true label i)`` (rows of the
    held-out confusion matrix, normalised), the observed predicted-label distribution is ``o = C^T t`` for the
    true distribution ``t``. We solve ``min |C^T t - o|^2`` subject to ``t >= 0, sum t = 1`` (NNLS with a
    heavily weighted sum-to-one row, then renormalised), so the answer is a distribution even when sampling
    noise puts ``o`` outside what ``C`` can produce (the plain inverse can give negative shares).

    Unit of analysis: the item; the correction assumes the judge's confusion on these items equals its
    confusion on the held-out set (same kind of text). It gives a point estimate; for an interval wrap it in
    :func:`cluster_bootstrap` with the real units, e.g.
    ``cluster_bootstrap(recs, lambda d: corrected_shares(d["probs"], C).shares, ["question_id"])``.
    That interval does not include the uncertainty of ``C`` itself (estimated from finitely many held-out
    items).

    Args:
        observed: predicted-label counts ``(K,)``; or per-item probabilities ``(n, K)`` (summed to expected
            counts); or a sequence of predicted label names (needs ``labels``).
        confusion: ``(K, K)`` held-out confusion matrix, rows = true label, columns = predicted (the
            ``sklearn.metrics.confusion_matrix`` layout); counts or row-normalised.
        labels: the label names in the matrix's order.

    >>> C = np.array([[90, 10], [20, 80]])          # true x predicted counts on held-out items
    >>> t = np.array([0.3, 0.7]); o = (C / C.sum(1, keepdims=True)).T @ t
    >>> np.round(corrected_shares(o, C).shares, 6).tolist()
    [0.3, 0.7]
    """
    from scipy.optimize import nnls

    Cm = np.asarray(confusion, dtype=np.float64)
    if Cm.ndim != 2 or Cm.shape[0] != Cm.shape[1] or Cm.shape[0] == 0:
        raise ValueError(f"confusion must be a square (K, K) matrix (rows = true, columns = predicted), got "
                         f"shape {Cm.shape}")
    K = Cm.shape[0]
    names = tuple(str(x) for x in labels) if labels is not None else None
    if names is not None and len(names) != K:
        raise ValueError(f"{len(names)} labels for a {K}x{K} confusion matrix; give one name per row")
    if not np.all(np.isfinite(Cm)) or Cm.min() < 0:
        raise ValueError("confusion must be finite and non-negative")
    rows = Cm.sum(1)
    if np.any(rows <= 0):
        empty = [names[i] if names else i for i in np.flatnonzero(rows <= 0)]
        raise ValueError(f"no held-out items with true label {empty}; its error rates are unknown -- add "
                         "held-out items of that label, or drop it from the label set")
    C = Cm / rows[:, None]

    obs: Any = observed
    if isinstance(obs, Sequence) and not isinstance(obs, (str, bytes)) and len(obs) and \
            all(isinstance(x, str) for x in obs):
        if names is None:
            raise ValueError("observed is a list of label names; pass labels=[...] in the matrix's order")
        index = {x: i for i, x in enumerate(names)}
        bad = sorted(set(obs) - set(index))
        if bad:
            raise ValueError(f"observed labels {bad} are not in labels {list(names)}")
        o = np.bincount([index[x] for x in obs], minlength=K).astype(np.float64)
    else:
        o = np.asarray(obs, dtype=np.float64)
        if o.ndim == 2:
            if o.shape[1] != K:
                raise ValueError(f"observed probabilities have {o.shape[1]} columns, the confusion matrix {K}")
            o = o.sum(0)
        if o.ndim != 1 or len(o) != K:
            raise ValueError(f"observed must be {K} counts, (n, {K}) probabilities or label names; got shape "
                             f"{np.shape(observed)}")
    if not np.all(np.isfinite(o)) or o.min() < 0 or o.sum() <= 0:
        raise ValueError("observed counts must be finite, non-negative and not all zero")
    n = float(o.sum())
    o = o / n
    lam = 1e3
    A = np.vstack([C.T, lam * np.ones((1, K))])
    b = np.concatenate([o, [lam]])
    t, _ = nnls(A, b)
    t = t / t.sum()
    resid = float(np.linalg.norm(C.T @ t - o))
    return CorrectedShares(t, o, t * n, n, names, resid)


# ============================================================================================ agreement
def cohen_kappa(labels_a: Sequence[Any], labels_b: Sequence[Any], *, labels: Sequence[Any] | None = None,
                weights: Literal["linear", "quadratic"] | None = None) -> float:
    """Cohen's kappa between two labelling passes over the same items (``sklearn.metrics.cohen_kappa_score``).

    Why: raw agreement is inflated when one label dominates; kappa subtracts the agreement two raters with
    the same label frequencies would reach by chance (1 = perfect, 0 = chance level). Use it for the
    second, independent labelling pass of the judge corpus.

    Unit of analysis: the item, labelled once by each rater, independently. NaN when both raters use one
    single label for everything (chance agreement is then 1 and kappa is undefined).

    >>> cohen_kappa(["ai", "ai", "human", "human"], ["ai", "ai", "human", "ai"])
    0.5
    """
    from sklearn.metrics import cohen_kappa_score

    a, b = list(labels_a), list(labels_b)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} labels; both raters must label the same items in the same order")
    if not a:
        raise ValueError("no labels; kappa needs at least one item labelled by both raters")
    if labels is not None:
        bad = sorted({str(x) for x in a + b} - {str(x) for x in labels})
        if bad:
            raise ValueError(f"labels {bad} are not in the label set {list(labels)}")
    if len(set(a) | set(b)) == 1:
        return float("nan")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(cohen_kappa_score(a, b, labels=labels, weights=weights))
