"""The archetype labels and what every judge returns: the label set, results, the protocol, the labelled data.

:data:`LABELS` with one-line definitions, :class:`JudgeResult` and the :class:`Judge` protocol both judges
implement, the shipped labelled sets (:func:`load_labelled`: hand-written; :func:`load_real_labelled`: real
steered generations with a careful reader's labels) and label shares with Wilson intervals
(:func:`label_shares`, :func:`wilson_interval`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "LABELS",
    "LABEL_DESCRIPTIONS",
    "LABELLED_PATH",
    "Judge",
    "JudgeResult",
    "label_shares",
    "load_labelled",
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


LABELLED_PATH: Path = Path(__file__).resolve().parent.parent / "data" / "judge_labelled.jsonl"


"""The shipped, hand-written labelled set the :class:`EmbeddingJudge` is fitted on."""


"""The fix printed whenever the embedding model package cannot be found."""


_EMPTY_NOTE = "empty or whitespace-only text; not sent to a classifier"


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


REAL_LABELS_PATH: Path = Path(__file__).resolve().parent.parent / "data" / "judge_real" / "labels.jsonl"


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
    from ..stats import wilson

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
