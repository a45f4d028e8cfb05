"""Bootstrap intervals that resample the real units of analysis.

:func:`cluster_bootstrap` gives percentile (or BCa) intervals resampling one cluster column or several crossed
ones together (questions x directions x facts, by multiway weights); :func:`bootstrap_mean_ci` is the plain
row bootstrap the experiments used so far.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._base import SeedLike, _check_level, _rng

__all__ = [
    "BootstrapResult",
    "bootstrap_mean_ci",
    "cluster_bootstrap",
]


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
