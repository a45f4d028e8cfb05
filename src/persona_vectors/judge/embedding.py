"""The default, offline judge: a logistic regression on embeddings and text features.

:class:`EmbeddingJudge` is fitted on the shipped labelled sets (:meth:`EmbeddingJudge.default`, cached once
per process with the shipped calibration temperature, :func:`apply_temperature`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import Embedder, incoherence_features, self_reference_features
from .labels import JudgeResult, LABELS, VALIDATION_PATH, _empty_result, load_labelled, load_real_labelled

if TYPE_CHECKING:  # heavy imports stay lazy so `import persona_vectors.judge` is cheap
    from sklearn.linear_model import LogisticRegression

__all__ = [
    "EmbeddingJudge",
]


def _single_thread_blas() -> Any:
    """Context manager pinning BLAS to one thread for the tiny logistic-regression problem.

    Measured on a 2-core box: multi-threaded OpenBLAS made a 470 x 387 fit ~30x slower
    (thread hand-off dominates such small matrices, worse under CPU contention).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their logs divided by ``temperature`` and renormalised (rows sum to 1)."""
    logp = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


class EmbeddingJudge:
    """Offline judge: logistic regression on MiniLM embeddings + incoherence features.

    Follows scikit-learn conventions (``__init__`` only stores arguments, :meth:`fit`
    returns ``self``, learned attributes end in ``_``) so it reads and behaves like any
    estimator (it does not subclass ``BaseEstimator``, to keep scikit-learn a lazy
    import). Use :meth:`default` for the instance fitted on the shipped labelled set.

    Args:
        C: inverse L2 regularisation strength of the logistic regression.
        feature_weight: multiplier on the three :func:`incoherence_features` before they
            are appended to the (unit-norm) embedding; controls how much surface
            statistics can override semantics.
        class_weight: passed to ``LogisticRegression``; ``"balanced"`` keeps rarer labels
            from being swallowed if the labelled set is uneven.
        max_iter: solver iteration cap.
        embedder: an :class:`Embedder` to reuse; created on :meth:`fit` if ``None``.
        temperature: divides the log-probabilities before renormalising (1 = the classifier's own);
            :meth:`default` uses the value fitted on held-out real generations so its probabilities are
            calibrated where the judge is used.

    Attributes:
        embedder_: the embedder used at fit time (and for prediction).
        classifier_: the fitted ``LogisticRegression``.
        classes_: labels seen during fit, in the classifier's column order.
    """

    def __init__(
        self,
        C: float = 4.0,
        feature_weight: float = 1.0,
        class_weight: str | dict[str, float] | None = "balanced",
        max_iter: int = 5000,
        embedder: Embedder | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.C = C
        self.feature_weight = feature_weight
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.embedder = embedder
        self.temperature = temperature

    # -- internals shared with cross-validation (embeddings computed once, outside folds)
    def _design(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        feats = (np.stack([np.concatenate([incoherence_features(t), self_reference_features(t)]) for t in texts])
                 if len(texts) else np.zeros((0, 7)))
        return np.hstack([embeddings, self.feature_weight * feats]).astype(np.float64)

    def _fit_design(self, X: np.ndarray, labels: Sequence[str]) -> EmbeddingJudge:
        from sklearn.linear_model import LogisticRegression

        bad = sorted(set(labels) - set(LABELS))
        if bad:
            raise ValueError(f"unknown labels {bad}; expected a subset of {LABELS}")
        clf = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, solver="newton-cg"
        )
        with _single_thread_blas():
            clf.fit(X, np.asarray(labels))
        self.classifier_: LogisticRegression = clf
        self.classes_: np.ndarray = clf.classes_
        return self

    def _proba_design(self, X: np.ndarray) -> np.ndarray:
        """Probabilities in :data:`LABELS` order (0 for labels unseen at fit time)."""
        with _single_thread_blas():
            raw = self.classifier_.predict_proba(X)
        if self.temperature != 1.0:
            raw = apply_temperature(raw, self.temperature)
        out = np.zeros((X.shape[0], len(LABELS)), dtype=np.float64)
        for j, lab in enumerate(self.classes_):
            out[:, LABELS.index(str(lab))] = raw[:, j]
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise RuntimeError("EmbeddingJudge is not fitted; call fit() or use EmbeddingJudge.default()")

    # -- public API
    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> EmbeddingJudge:
        """Embed ``texts`` and fit the classifier on ``labels``.

        Returns:
            ``self``, so ``EmbeddingJudge().fit(X, y).classify(...)`` chains.
        """
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        self.embedder_: Embedder = self.embedder if self.embedder is not None else Embedder()
        emb = self.embedder_.encode(list(texts))
        return self._fit_design(self._design(emb, list(texts)), labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), len(LABELS))``, columns in :data:`LABELS` order.

        Empty/whitespace texts get probability 1 on ``incoherent`` without being embedded.
        """
        self._check_fitted()
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float64)
        live = [i for i, t in enumerate(texts) if t.strip()]
        out[[i for i, t in enumerate(texts) if not t.strip()], LABELS.index("incoherent")] = 1.0
        if live:
            live_texts = [texts[i] for i in live]
            emb = self.embedder_.encode(live_texts)
            out[live] = self._proba_design(self._design(emb, live_texts))
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Most probable label per text."""
        proba = self.predict_proba(texts)
        return [LABELS[int(k)] for k in proba.argmax(axis=1)]

    def classify(self, texts: Sequence[str]) -> list[JudgeResult]:
        """Judge texts (the :class:`Judge` protocol).

        Returns one :class:`JudgeResult` per text with full probability scores and
        ``source="embedding"``; empty/whitespace texts come back as ``incoherent`` with
        ``source="empty-input"`` and an explanatory note.
        """
        texts = [str(t) for t in texts]
        proba = self.predict_proba(texts)
        results: list[JudgeResult] = []
        for t, row in zip(texts, proba):
            if not t.strip():
                results.append(_empty_result())
                continue
            scores = {lab: float(p) for lab, p in zip(LABELS, row)}
            results.append(JudgeResult(LABELS[int(row.argmax())], scores, "embedding"))
        return results

    @classmethod
    def default(cls) -> EmbeddingJudge:
        """The shipped judge, built once per process: fitted on the hand-written set plus the labelled real
        generations (``data/judge_real/``), with the temperature fitted on their held-out predictions.

        Fitting embeds about 1,400 short texts (seconds on CPU), so experiment code should call this freely
        instead of re-fitting; the same object is returned on every call (treat it as read-only). Its
        accuracy on real held-out text is in ``docs/judge_validation.md``.
        """
        global _DEFAULT_JUDGE
        with _DEFAULT_LOCK:
            if _DEFAULT_JUDGE is None:
                texts, labels, emb = _shipped_embeddings()
                judge = cls(embedder=Embedder(), temperature=_shipped_temperature())
                judge.embedder_ = judge.embedder  # type: ignore[assignment]
                judge._fit_design(judge._design(emb, texts), labels)
                _DEFAULT_JUDGE = judge
            return _DEFAULT_JUDGE


_DEFAULT_JUDGE: EmbeddingJudge | None = None


_DEFAULT_LOCK = threading.Lock()


_SHIPPED: tuple[list[str], list[str], np.ndarray] | None = None


_SHIPPED_LOCK = threading.Lock()


def _shipped_temperature() -> float:
    """The calibration temperature fitted by ``experiments/judge_validation_report.py`` (1.0 if absent)."""
    try:
        return float(json.loads(VALIDATION_PATH.read_text())["calibration"]["temperature"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0


def _shipped_embeddings() -> tuple[list[str], list[str], np.ndarray]:
    """Training texts of the shipped judge (hand-written set + labelled real generations), their labels and
    embeddings, computed once per process (shared by :meth:`EmbeddingJudge.default` and callers that refit)."""
    global _SHIPPED
    hand_texts, hand_labels, hand_emb = _hand_written_embeddings()
    with _SHIPPED_LOCK:
        if _SHIPPED is None:
            rt, rl = load_real_labelled()
            emb = np.vstack([hand_emb, Embedder().encode(rt)]) if rt else hand_emb
            _SHIPPED = (hand_texts + rt, hand_labels + rl, emb)
        return _SHIPPED


_HAND: tuple[list[str], list[str], np.ndarray] | None = None


_HAND_LOCK = threading.Lock()


def _hand_written_embeddings() -> tuple[list[str], list[str], np.ndarray]:
    """The hand-written labelled set and its embeddings, computed once per process."""
    global _HAND
    with _HAND_LOCK:
        if _HAND is None:
            texts, labels = load_labelled()
            _HAND = (texts, labels, Embedder().encode(texts))
        return _HAND
