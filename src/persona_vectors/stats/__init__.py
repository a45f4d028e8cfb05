"""Statistics with the right unit of analysis: proportions, cluster bootstrap, direction permutation tests,
clustered logistic models, judge calibration and label-share correction.

Why one package: steering experiments produce many generations that are *not* independent. Generations share
a question, a steering direction, a layer, and the vector they were steered with was extracted from a finite
set of facts or prompts. An interval that resamples generations (or only questions) treats shared variation
as if it averaged out, and comes out too narrow for the question actually asked ("does this *kind* of
direction do this on *new* questions?"). Every function here therefore says what its unit of analysis is,
and the result objects carry it (``units`` / ``unit``), so a report can name it.

Contents:

* :func:`wilson`, :func:`newcombe_diff`, :func:`fisher_exact`, :func:`mcnemar_exact` -- a proportion, a
  difference of two proportions, and exact tests for two groups and for paired items; valid when the counted
  items are independent (else use the bootstrap or :func:`gee_logistic`).
* :func:`cluster_bootstrap` -- percentile (or BCa) intervals that resample the real units -- one cluster
  column, or several crossed ones (questions x directions x facts) resampled together.
* :func:`bootstrap_mean_ci` -- the plain row bootstrap the experiments used so far (rows = units).
* :func:`permutation_test_directions` -- a target direction against a set of control directions (the
  direction is the unit; with ``k`` controls the smallest p is ``1/(k+1)``).
* :func:`permutation_test_within` -- a two-condition test permuting the condition within each question.
* :func:`sign_flip_test` -- a paired test flipping the signs of one difference per unit (exact for n <= 16).
* :func:`gee_logistic`, :func:`mixed_logistic` -- a condition effect on a binary outcome with question as
  the cluster (statsmodels GEE / Bayesian mixed GLM).
* :func:`ece`, :func:`reliability_curve` -- calibration of a judge's probabilities.
* :func:`corrected_shares` -- label shares corrected with a judge's held-out confusion matrix.
* :func:`cohen_kappa` -- agreement between two labelling passes.

Only numpy is imported at module import; scipy, statsmodels and scikit-learn are imported by the functions
that need them, so ``import persona_vectors.stats`` stays cheap.
"""

from __future__ import annotations

from ._base import (
    Alternative,
    SeedLike,
)
from .proportions import (
    FisherResult,
    Proportion,
    fisher_exact,
    mcnemar_exact,
    newcombe_diff,
    wilson,
)
from .bootstrap import (
    BootstrapResult,
    Columns,
    _multiway_weights,
    bootstrap_mean_ci,
    cluster_bootstrap,
)
from .permutation import (
    DirectionPermutationResult,
    SignFlipResult,
    WithinPermutationResult,
    permutation_test_directions,
    permutation_test_within,
    sign_flip_test,
)
from .clustered import (
    LogisticEffect,
    gee_logistic,
    mixed_logistic,
)
from .calibration import (
    CorrectedShares,
    ReliabilityCurve,
    cohen_kappa,
    corrected_shares,
    ece,
    reliability_curve,
)

__all__ = [
    "BootstrapResult",
    "CorrectedShares",
    "DirectionPermutationResult",
    "FisherResult",
    "LogisticEffect",
    "Proportion",
    "ReliabilityCurve",
    "SignFlipResult",
    "WithinPermutationResult",
    "bootstrap_mean_ci",
    "cluster_bootstrap",
    "cohen_kappa",
    "corrected_shares",
    "ece",
    "fisher_exact",
    "mcnemar_exact",
    "gee_logistic",
    "mixed_logistic",
    "newcombe_diff",
    "permutation_test_directions",
    "permutation_test_within",
    "reliability_curve",
    "sign_flip_test",
    "wilson",
]
