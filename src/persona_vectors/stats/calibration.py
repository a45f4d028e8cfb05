"""How far a judge's labels can be trusted: calibration, confusion-corrected shares and agreement.

:func:`reliability_curve` and :func:`ece` measure the calibration of a judge's probabilities,
:func:`corrected_shares` corrects observed label shares with the judge's held-out confusion matrix, and
:func:`cohen_kappa` measures agreement between two labelling passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .proportions import wilson

__all__ = [
    "CorrectedShares",
    "ReliabilityCurve",
    "cohen_kappa",
    "corrected_shares",
    "ece",
    "reliability_curve",
]


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
