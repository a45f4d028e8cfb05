"""Offline archetype judge: who does a (possibly steered) model say it is?

Steering experiments need a cheap, reproducible read-out of the persona a model
adopts in free text ("I'm a ghost.", "As an AI language model ...", "the the the").
This module turns such self-descriptions into one of eight coarse archetypes
(:data:`LABELS`) so that label shares can be compared across steering strengths.

Interchangeable judges implement the :class:`Judge` protocol:

* :class:`EmbeddingJudge` -- the default for new runs (:func:`default_judge`, chosen by the pre-registered
  fresh-text test ``docs/judge_fresh_test2.md``: as accurate as the fine-tuned judge on new real text, better
  calibrated). Fully offline: sentence embeddings from the packaged all-MiniLM-L6-v2 plus cheap incoherence and
  self-reference features, fed to a logistic regression, shipped fitted. Its accuracy is measured, not assumed:
  :func:`cross_validate_judge` (and ``python -m persona_vectors.judge --cv``) on the hand-written set,
  ``docs/judge_validation.md`` and the two fresh-text tests on real text. ``EmbeddingJudge(reader=True)`` adds a
  second view of each text (:class:`Reader`: a private, unsteered copy of the embedded instruct model asked who
  wrote it); one forward pass per text.
* :class:`FinetunedJudge` -- LoRA adapters on the same MiniLM plus a linear head, shipped fitted. It won the
  corpus's crossed grouped CV (``docs/judge_finetuned.md``: 0.769 vs 0.718) and was the default from 2026-12-01,
  but on fresh text it was no more accurate and worse calibrated (``docs/judge_fresh_test.md``,
  ``docs/judge_fresh_test2.md``).
* :class:`LLMJudge` -- an optional, stronger judge that asks any OpenAI-compatible
  chat-completions endpoint, with retries, a concurrency limit and an on-disk cache
  so that re-running an analysis costs nothing.

:func:`label_shares` / :func:`wilson_interval` turn a list of labels into shares
with 95 % Wilson intervals, because steering sweeps typically judge only a few
dozen generations per setting and raw percentages would overstate precision.
"""

from __future__ import annotations

from .labels import (
    Judge,
    JudgeResult,
    LABELLED_PATH,
    LABELS,
    LABEL_DESCRIPTIONS,
    REAL_CORPUS_PATH,
    REAL_LABELS_PATH,
    VALIDATION_PATH,
    label_shares,
    load_labelled,
    load_real_labelled,
    wilson_interval,
)
from .features import (
    Embedder,
    JudgeModelMissingError,
    MISSING_MODEL_HINT,
    MODEL_PACKAGE,
    _model_dir,
    incoherence_features,
    self_reference_features,
)
from .embedding import (
    EmbeddingJudge,
    _hand_written_embeddings,
    _shipped_embeddings,
    _shipped_temperature,
    apply_temperature,
)
from .reader import Reader
from .finetuned import FinetuneSettings, FinetunedJudge
from .default import DEFAULT_JUDGE_HISTORY, default_judge
from .triage import Triage, TriagePolicy, choose_threshold, triage
from .crossval import (
    cross_validate_judge,
    format_cv_markdown,
    main,
)
from .llm import (
    LLMJudge,
    LLMJudgeError,
    LLM_SYSTEM_PROMPT,
    _default_cache_path,
    parse_label,
)

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
    "Reader",
    "FinetunedJudge",
    "FinetuneSettings",
    "LLMJudge",
    "LLMJudgeError",
    "cross_validate_judge",
    "DEFAULT_JUDGE_HISTORY",
    "default_judge",
    "Triage",
    "TriagePolicy",
    "choose_threshold",
    "triage",
    "format_cv_markdown",
    "incoherence_features",
    "label_shares",
    "load_labelled",
    "parse_label",
    "wilson_interval",
]
