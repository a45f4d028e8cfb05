"""Judge what the judge is sure of, read the rest: confidence triage for the archetype judge.

No offline judge reaches issue 13's accuracy target (0.85) on real steered text: the shipped judges score
0.70–0.73 on fresh blind-labelled generations, while two blind readers agree on 0.95–0.98. But the frozen judge is
calibrated (expected calibration error 0.035–0.05 there), so its top-label probability says *which* texts it gets
right. Triage uses that: a text whose top probability is at least a threshold keeps the judge's label; every other
text goes to a blind reader (``to_read``), and :meth:`Triage.merge` joins the two. The threshold is not a free knob:
:func:`choose_threshold` takes the smallest grid value whose covered texts reach the target accuracy *with
confidence* (the Wilson 95 % lower bound, not the point estimate) on blind-labelled text the judge never saw, and
the shipped policy (``data/judge_real/triage.json``) was fitted that way on the 720 texts of the two fresh tests
and then tested, pre-registered, on 360 new texts (``docs/judge_triage.md``): the judge kept 47.5 % of them at
accuracy 0.871 [0.813, 0.913], and judge + a second reader on the rest agreed with the reference reader on 0.892.

A policy belongs to the judge it was calibrated on: :func:`triage` refuses another judge without an explicit
threshold, because another judge's probabilities mean something else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .labels import LABELS, wilson_interval

__all__ = ["TRIAGE_PATH", "TriagePolicy", "Triage", "choose_threshold", "triage"]

TRIAGE_PATH: Path = Path(__file__).resolve().parents[1] / "data" / "judge_real" / "triage.json"
"""The shipped policy: threshold, target, the calibration figures and the judge file it belongs to."""

THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.3 + 0.025 * k, 3) for k in range(27))
"""Candidate thresholds, 0.300 to 0.950 in steps of 0.025."""

MIN_COVERED = 30
"""A threshold must leave at least this many calibration texts covered (a bound on fewer means little)."""


def choose_threshold(proba: np.ndarray, labels: Sequence[str], *, target: float = 0.85,
                     grid: Sequence[float] = THRESHOLD_GRID) -> dict[str, Any]:
    """The smallest threshold on ``grid`` at which the judge's accuracy on the texts it keeps (top probability ≥
    threshold) has a Wilson 95 % lower bound of at least ``target``, on labelled text the judge was not fitted on.

    Args:
        proba: the judge's probabilities, shape ``(n, len(LABELS))``, columns in :data:`LABELS` order.
        labels: the readers' labels for the same texts.
        target: the accuracy the covered texts must reach (lower confidence bound).
        grid: thresholds to try, in any order.

    Returns:
        ``{"threshold", "target", "n", "covered", "coverage", "accuracy", "accuracy_ci95", "curve"}``; ``curve``
        holds every grid point's coverage and covered accuracy, so a report can show the whole trade-off.

    Raises:
        ValueError: shapes disagree, a label is unknown, or no threshold reaches the target with at least
            :data:`MIN_COVERED` texts covered (lower the target or label more text).
    """
    proba = np.asarray(proba, dtype=float)
    y = list(labels)
    if proba.ndim != 2 or proba.shape != (len(y), len(LABELS)):
        raise ValueError(f"proba must have shape (len(labels), {len(LABELS)}) = ({len(y)}, {len(LABELS)}); "
                         f"got {proba.shape}")
    bad = sorted(set(y) - set(LABELS))
    if bad:
        raise ValueError(f"unknown labels {bad}: labels must be among {', '.join(LABELS)}")
    conf = proba.max(axis=1)
    right = np.array([LABELS[int(k)] == lab for k, lab in zip(proba.argmax(axis=1), y)])
    curve, chosen = [], None
    for t in sorted(float(g) for g in grid):
        keep = conf >= t
        n_keep = int(keep.sum())
        k = int(right[keep].sum())
        lo, hi = wilson_interval(k, n_keep) if n_keep else (0.0, 1.0)
        point = {"threshold": t, "covered": n_keep, "coverage": n_keep / len(y) if y else 0.0,
                 "accuracy": k / n_keep if n_keep else None, "accuracy_ci95": [lo, hi]}
        curve.append(point)
        if chosen is None and n_keep >= MIN_COVERED and lo >= target:
            chosen = point
    if chosen is None:
        raise ValueError(f"no threshold on the grid reaches a covered accuracy with a 95 % lower bound of {target} "
                         f"on these {len(y)} texts (with at least {MIN_COVERED} covered): lower the target or "
                         "calibrate on more labelled text")
    return {**chosen, "target": target, "n": len(y), "curve": curve}


@dataclass(frozen=True)
class TriagePolicy:
    """A confidence threshold and where it came from.

    Attributes:
        threshold: texts whose top judge probability is at least this keep the judge's label.
        target: the covered accuracy the threshold was chosen to reach (Wilson 95 % lower bound).
        judge_training_sha256: the training data of the judge the threshold belongs to
            (:func:`~persona_vectors.judge.embedding.shipped_training_sha256` when it was calibrated; ``None``: a
            policy for a judge of your own, not tied to the shipped one).
        judge_temperature: that judge's calibration temperature.
        calibration: the :func:`choose_threshold` result it was fitted with, and on what text.
    """

    threshold: float
    target: float = 0.85
    judge_training_sha256: str | None = None
    judge_temperature: float | None = None
    calibration: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def default(cls) -> TriagePolicy:
        """The shipped policy for the default judge (``data/judge_real/triage.json``)."""
        try:
            raw = json.loads(TRIAGE_PATH.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"the shipped triage policy {TRIAGE_PATH} is not readable ({err}): rebuild it "
                                    "with `python experiments/judge_triage.py calibrate`") from err
        return cls(threshold=float(raw["threshold"]), target=float(raw["target"]),
                   judge_training_sha256=raw.get("judge_training_sha256"),
                   judge_temperature=raw.get("judge_temperature"), calibration=raw.get("calibration", {}))

    def matches(self, judge: Any) -> bool:
        """Whether ``judge`` is the judge this policy was calibrated on: for the shipped policy, the library's
        default judge (``EmbeddingJudge.default()``), still fitted on the same training data with the same
        temperature; a policy with no ``judge_training_sha256`` matches any judge."""
        from .embedding import EmbeddingJudge, _shipped_temperature, shipped_training_sha256

        if self.judge_training_sha256 is None:
            return True
        return (judge is EmbeddingJudge.default() and self.judge_training_sha256 == shipped_training_sha256()
                and self.judge_temperature == _shipped_temperature(False))


@dataclass
class Triage:
    """The judge's labels for the texts it is sure of, ``None`` for the ones a reader must label.

    Attributes:
        labels: per text, the judge's label when kept, else ``None``.
        judge_labels: per text, the judge's top label (kept or not; for comparison only).
        confidence: per text, the judge's top probability.
        threshold: the threshold applied.
        proba: the judge's probabilities, shape ``(n, len(LABELS))``, columns in :data:`LABELS` order.
    """

    labels: list[str | None]
    judge_labels: list[str]
    confidence: np.ndarray
    threshold: float
    proba: np.ndarray

    @property
    def to_read(self) -> list[int]:
        """Indices of the texts a reader must label."""
        return [i for i, lab in enumerate(self.labels) if lab is None]

    @property
    def coverage(self) -> float:
        """Share of texts the judge labelled."""
        return 1.0 - len(self.to_read) / len(self.labels) if self.labels else 0.0

    def merge(self, readings: Mapping[int, str] | Sequence[str | None]) -> list[str]:
        """Every text's label: the judge's where kept, the reader's (``readings``, by text index) elsewhere.

        Raises:
            ValueError: a text in :attr:`to_read` has no reading, or a reading is not one of :data:`LABELS`.
        """
        got = dict(readings) if isinstance(readings, Mapping) else dict(enumerate(readings))
        missing = [i for i in self.to_read if got.get(i) is None]
        if missing:
            raise ValueError(f"{len(missing)} text(s) the judge left to a reader have no reading (indices "
                             f"{missing[:10]}{' ...' if len(missing) > 10 else ''}): label every text in to_read")
        bad = sorted({str(got[i]) for i in self.to_read if got[i] not in LABELS})
        if bad:
            raise ValueError(f"readings {bad} are not judge labels: use one of {', '.join(LABELS)}")
        return [lab if lab is not None else str(got[i]) for i, lab in enumerate(self.labels)]

    def sources(self) -> list[str]:
        """Per text, who labels it: ``"judge"`` or ``"reader"``."""
        return ["judge" if lab is not None else "reader" for lab in self.labels]


def triage(texts: Sequence[str], judge: Any = None, *, threshold: float | None = None,
           policy: TriagePolicy | None = None) -> Triage:
    """Split ``texts`` into those the judge labels and those a reader must read.

    Args:
        texts: the generations to label.
        judge: any judge with ``predict_proba``; default: :func:`~persona_vectors.judge.default_judge`.
        threshold: keep the judge's label when its top probability is at least this. Default: the shipped
            policy's threshold, which is only valid for the shipped default judge.
        policy: a :class:`TriagePolicy` to use instead of the shipped one.

    Raises:
        ValueError: ``judge`` is not the judge the policy was calibrated on and no ``threshold`` was given
            (calibrate one on your own labelled text with :func:`choose_threshold`), or ``threshold`` is
            outside (0, 1].
    """
    from .default import default_judge

    if isinstance(texts, str):
        raise TypeError("triage() takes a sequence of texts, not a single string")
    judge = default_judge() if judge is None else judge
    if threshold is None:
        policy = policy or TriagePolicy.default()
        if not policy.matches(judge):
            raise ValueError("the triage policy was calibrated on the shipped default judge, not this one: pass "
                             "threshold= (choose it with choose_threshold() on blind-labelled text this judge did "
                             "not see) or use the default judge")
        threshold = policy.threshold
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    texts = [str(t) for t in texts]
    proba = np.asarray(judge.predict_proba(texts), dtype=float) if texts else np.zeros((0, len(LABELS)))
    conf = proba.max(axis=1) if len(texts) else np.zeros(0)
    top = [LABELS[int(k)] for k in proba.argmax(axis=1)] if len(texts) else []
    kept = [lab if c >= threshold else None for lab, c in zip(top, conf)]
    return Triage(labels=kept, judge_labels=top, confidence=conf, threshold=float(threshold), proba=proba)
