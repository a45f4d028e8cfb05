"""The default, offline judge: a logistic regression on embeddings and text features.

:class:`EmbeddingJudge` is fitted on the shipped labelled sets (:meth:`EmbeddingJudge.default`, cached once
per process with the shipped calibration temperature, :func:`apply_temperature`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import Embedder, incoherence_features, self_reference_features
from .reader import Reader
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
        reader: ``True`` (or a :class:`~persona_vectors.judge.reader.Reader`) adds the reader's view: the
            embedded instruct model's last-token states when asked who wrote the text (the "reader" variant,
            validated beside the default in ``docs/judge_validation.md``; it loads a private, unsteered copy of
            the embedded model and costs one forward pass per text).
        reader_weight: multiplier on the reader's (centred, per-layer unit-norm) states.

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
        reader: bool | Reader = False,
        reader_weight: float = 1.0,
    ) -> None:
        self.C = C
        self.feature_weight = feature_weight
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.embedder = embedder
        self.temperature = temperature
        self.reader = reader
        self.reader_weight = reader_weight

    # -- internals shared with cross-validation (embeddings computed once, outside folds)
    def _reader(self) -> Reader | None:
        if self.reader is False or self.reader is None:
            return None
        if self.reader is True:
            self.reader = Reader()
        return self.reader

    def _design(self, embeddings: np.ndarray, texts: Sequence[str], states: np.ndarray | None = None) -> np.ndarray:
        """Design matrix: embedding, weighted text features and (reader variant) the reader's raw states, which
        :meth:`_reader_transform` centres and normalises with the training fold's mean."""
        feats = (np.stack([np.concatenate([incoherence_features(t), self_reference_features(t)]) for t in texts])
                 if len(texts) else np.zeros((0, 7)))
        parts = [embeddings, self.feature_weight * feats]
        reader = self._reader()
        if reader is not None:
            if states is None:
                states = reader.encode(list(texts))
            parts.append(states)
        return np.hstack(parts).astype(np.float64)

    def _reader_transform(self, X: np.ndarray) -> np.ndarray:
        """Centre the reader block on the training mean and scale each layer's part to norm 1/sqrt(layers)."""
        if self._reader() is None:
            return X
        head, states = X[:, :self.n_head_], X[:, self.n_head_:]
        blocks = (states - self.reader_mean_).reshape(len(X), self.reader_blocks_, -1)
        blocks = blocks / np.linalg.norm(blocks, axis=2, keepdims=True).clip(1e-6)
        scaled = blocks.reshape(len(X), -1) * (self.reader_weight / np.sqrt(self.reader_blocks_))
        return np.hstack([head, scaled])

    def _fit_design(self, X: np.ndarray, labels: Sequence[str]) -> EmbeddingJudge:
        from sklearn.linear_model import LogisticRegression

        bad = sorted(set(labels) - set(LABELS))
        if bad:
            raise ValueError(f"unknown labels {bad}; expected a subset of {LABELS}")
        clf = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, solver="newton-cg"
        )
        reader = self._reader()
        if reader is not None:
            self.reader_blocks_: int = len(reader.layers)
            self.n_head_: int = X.shape[1] - reader.width
            self.reader_mean_: np.ndarray = X[:, self.n_head_:].mean(axis=0)
            X = self._reader_transform(X)
        with _single_thread_blas():
            clf.fit(X, np.asarray(labels))
        self.classifier_: LogisticRegression = clf
        self.classes_: np.ndarray = clf.classes_
        return self

    def _proba_design(self, X: np.ndarray) -> np.ndarray:
        """Probabilities in :data:`LABELS` order (0 for labels unseen at fit time)."""
        X = self._reader_transform(X)
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
            results.append(JudgeResult(LABELS[int(row.argmax())], scores,
                                       "embedding+reader" if self._reader() is not None else "embedding"))
        return results

    def save(self, path: str | os.PathLike[str], **meta: Any) -> Path:
        """Write the fitted judge (classifier, reader centring, temperature, settings) to one ``.npz`` file,
        atomically; ``meta`` (JSON-serialisable) is stored beside it. The embedder and reader models are not
        stored — they are fixed assets — but the reader's fingerprint is, so :meth:`load` refuses states from
        another reader model."""
        from .._infra.files import atomic_file

        self._check_fitted()
        clf = self.classifier_
        header = {"version": 1, "C": self.C, "feature_weight": self.feature_weight, "temperature": self.temperature,
                  "reader_weight": self.reader_weight, "classes": [str(c) for c in clf.classes_],
                  "reader": None, "meta": meta}
        arrays = {"coef": clf.coef_, "intercept": clf.intercept_}
        reader = self._reader()
        if reader is not None:
            header["reader"] = {"fingerprint": reader.fingerprint(), "blocks": self.reader_blocks_,
                                "n_head": self.n_head_}
            arrays["reader_mean"] = self.reader_mean_
        target = Path(path)
        with atomic_file(target) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, header=np.array(json.dumps(header)), **arrays)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, reader: Reader | None = None,
             embedder: Embedder | None = None) -> EmbeddingJudge:
        """A judge written by :meth:`save`, ready to classify (no refit).

        Raises:
            ValueError: the file is not a saved judge, or it was fitted on another reader model's states
                (refit it, or pass the reader it was fitted with).
        """
        from sklearn.linear_model import LogisticRegression

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k] for k in z.files if k != "header"}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path} is not a judge saved by EmbeddingJudge.save ({err}); refit and save it") from None
        if header.get("version") != 1:
            raise ValueError(f"{path} has judge file version {header.get('version')!r}; this library reads version 1")
        rinfo = header["reader"]
        judge = cls(C=header["C"], feature_weight=header["feature_weight"], temperature=header["temperature"],
                    reader=(reader or Reader()) if rinfo else False, reader_weight=header["reader_weight"],
                    embedder=embedder)
        if rinfo:
            fp = judge._reader().fingerprint()
            if fp != rinfo["fingerprint"]:
                raise ValueError(f"{path} was fitted on reader states {rinfo['fingerprint']}, but this reader gives "
                                 f"{fp} (another model, layers or reader version): refit the judge")
            judge.reader_blocks_, judge.n_head_ = int(rinfo["blocks"]), int(rinfo["n_head"])
            judge.reader_mean_ = arrays["reader_mean"]
        clf = LogisticRegression(C=judge.C, class_weight=judge.class_weight, max_iter=judge.max_iter)
        clf.classes_ = np.array(header["classes"])
        clf.coef_, clf.intercept_ = arrays["coef"], arrays["intercept"]
        judge.classifier_, judge.classes_ = clf, clf.classes_
        judge.embedder_ = judge.embedder if judge.embedder is not None else Embedder()
        judge.meta_ = header.get("meta", {})
        return judge

    @classmethod
    def default(cls, reader: bool = False) -> EmbeddingJudge:
        """The shipped judge, built once per process: fitted on the hand-written set plus the labelled real
        generations (``data/judge_real/``), with the temperature fitted on their held-out predictions.

        Fitting embeds about 1,900 short texts (seconds on CPU), so experiment code should call this freely
        instead of re-fitting; the same object is returned on every call (treat it as read-only). Its
        accuracy on real held-out text is in ``docs/judge_validation.md``.

        Args:
            reader: the "reader" variant (:mod:`persona_vectors.judge.reader`): adds the embedded instruct
                model's view of who wrote each text. More accurate on real steered text (see the validation
                report), one forward pass of a 135M model per judged text.

        Both variants load their shipped fitted file (``data/judge_real/embedding_judge.npz``,
        ``data/judge_real/reader_judge.npz``, written by ``experiments/judge_validation_report.py``) when it was
        fitted on exactly the shipped training data with the shipped temperature (and, for the reader, the same
        reader model); otherwise they are fitted here, which embeds the ~1,900 training texts once (about a
        minute on one CPU core; minutes more for the reader's forward passes).
        """
        with _DEFAULT_LOCK:
            if reader not in _DEFAULT_JUDGES:
                shipped = _shipped_fitted_judge(cls, reader)
                if shipped is not None:
                    _DEFAULT_JUDGES[reader] = shipped
            if reader not in _DEFAULT_JUDGES:
                texts, labels, emb = _shipped_embeddings()
                judge = cls(embedder=Embedder(), temperature=_shipped_temperature(reader), reader=reader)
                judge.embedder_ = judge.embedder  # type: ignore[assignment]
                states = judge._reader().encode(texts, progress=True) if reader else None
                judge._fit_design(judge._design(emb, texts, states), labels)
                _DEFAULT_JUDGES[reader] = judge
            return _DEFAULT_JUDGES[reader]


_DEFAULT_JUDGES: dict[bool, EmbeddingJudge] = {}


_DEFAULT_LOCK = threading.Lock()


READER_JUDGE_PATH: Path = VALIDATION_PATH.with_name("reader_judge.npz")
"""The shipped, fitted reader-variant judge (written by ``experiments/judge_validation_report.py``)."""


EMBEDDING_JUDGE_PATH: Path = VALIDATION_PATH.with_name("embedding_judge.npz")
"""The shipped, fitted frozen-embedding judge (written by ``experiments/judge_validation_report.py``)."""


def shipped_judge_path(reader: bool) -> Path:
    """Where the shipped fitted judge of one variant lives (:data:`READER_JUDGE_PATH` or
    :data:`EMBEDDING_JUDGE_PATH`)."""
    return READER_JUDGE_PATH if reader else EMBEDDING_JUDGE_PATH


def shipped_training_sha256() -> str:
    """sha256 of the shipped judge's training texts and labels (hand-written + labelled real generations): a
    saved judge is current only if it was fitted on exactly these."""
    import hashlib

    ht, hl = load_labelled()
    rt, rl = load_real_labelled()
    h = hashlib.sha256()
    for t, lab in zip(ht + rt, hl + rl):
        h.update(json.dumps([t, lab]).encode("utf-8"))
    return h.hexdigest()


def _shipped_fitted_judge(cls: type[EmbeddingJudge], reader: bool) -> EmbeddingJudge | None:
    """The shipped fitted judge of one variant if it is current -- fitted on the shipped training data, with the
    shipped temperature, and (reader variant) on this reader's states -- else ``None`` (the caller refits)."""
    path = shipped_judge_path(reader)
    if not path.is_file():
        return None
    try:
        judge = cls.load(path)
    except ValueError as err:
        import warnings

        warnings.warn(f"the shipped judge {path.name} is not usable here ({err}); fitting it instead", stacklevel=3)
        return None
    if (judge.meta_.get("training_sha256") != shipped_training_sha256()
            or judge.temperature != _shipped_temperature(reader) or (judge._reader() is not None) != reader):
        return None
    return judge


_SHIPPED: tuple[list[str], list[str], np.ndarray] | None = None


_SHIPPED_LOCK = threading.Lock()


def _shipped_temperature(reader: bool = False) -> float:
    """The calibration temperature fitted by ``experiments/judge_validation_report.py`` (1.0 if absent)."""
    try:
        cal = json.loads(VALIDATION_PATH.read_text())["calibration"]
        return float(cal["reader"]["temperature"] if reader else cal["temperature"])
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
