"""Aggregators: turn two recordings (persona, baseline) into one direction per site.

Each aggregator is a small callable ``(pos: Recording, neg: Recording, site: Site) -> Tensor[d_model]``.
All return directions in residual-stream units with the positive side on the persona:

- :func:`mean_diff` — difference of means (token-weighted): the Persona Vectors / CAA estimator.
- :func:`pca` — first principal component of paired per-conversation differences (repeng style), sign
  fixed so the mean paired difference projects positively, scaled to that mean projection.
- :func:`logistic` — a scikit-learn logistic-regression probe on per-conversation means; its unit normal,
  scaled to the mean-difference projection onto it (so the vector has a comparable size).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .record import Recording
from .sites import Site

Aggregator = Callable[[Recording, Recording, Site], torch.Tensor]


def mean_diff(pos: Recording, neg: Recording, site: Site) -> torch.Tensor:
    """Mean activation of the persona recording minus that of the baseline recording."""
    return pos.mean(site) - neg.mean(site)


def pca(pos: Recording, neg: Recording, site: Site) -> torch.Tensor:
    """First principal direction of paired differences ``pos_i - neg_i`` (needs equal counts, kept samples).

    Differences are not centred (as in repeng's ``pca_diff``), so the first component follows the shared
    offset; the sign is chosen so the mean difference projects positively and the length is that projection.
    """
    a, b = pos.per_sample(site), neg.per_sample(site)
    if a.shape != b.shape:
        raise ValueError(
            f"pca needs paired samples: persona has {a.shape[0]} conversations, baseline {b.shape[0]}; "
            "record the same questions under both conditions"
        )
    diffs = (a - b).double()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    u = vh[0]
    proj = float(diffs.mean(0) @ u)
    if proj < 0:
        u, proj = -u, -proj
    return (u * proj).float()


def logistic(pos: Recording, neg: Recording, site: Site, C: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Direction of an L2 logistic-regression probe separating persona from baseline samples.

    Strongly regularized by default (``C=0.01``): with a few hundred samples in hundreds of dimensions the
    classes are usually separable, and a weakly regularized probe then chases noise directions.
    """
    from sklearn.linear_model import LogisticRegression

    a, b = pos.per_sample(site).double().numpy(), neg.per_sample(site).double().numpy()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("logistic needs at least 2 samples per class (record with keep_samples=True)")
    x = np.concatenate([a, b])
    y = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    clf = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(x - x.mean(0), y)
    w = clf.coef_[0]
    u = torch.from_numpy(w / np.linalg.norm(w))
    proj = float((torch.from_numpy(a.mean(0) - b.mean(0)) @ u))
    return (u * abs(proj)).float()


AGGREGATORS: dict[str, Aggregator] = {"mean_diff": mean_diff, "pca": pca, "probe": logistic, "logistic": logistic}


def get_aggregator(name: str) -> Aggregator:
    """Look up an aggregator by name (``mean_diff``, ``pca``, ``probe``/``logistic``)."""
    try:
        return AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}: choose one of {sorted(AGGREGATORS)}") from None


def needs_samples(name: str) -> bool:
    """Whether an aggregator needs per-conversation samples (so recording must keep them)."""
    return name != "mean_diff"
