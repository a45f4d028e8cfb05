"""Clustered models of a binary outcome: a condition effect with question as the cluster.

:func:`gee_logistic` (statsmodels GEE, exchangeable working correlation) and :func:`mixed_logistic`
(Bayesian mixed GLM) return a :class:`LogisticEffect` (odds ratio, interval, p, the cluster unit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._base import _check_level, _z
from .bootstrap import _codes

__all__ = [
    "LogisticEffect",
    "gee_logistic",
    "mixed_logistic",
]


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
