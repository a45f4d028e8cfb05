"""The value types of the shipped data: schema version, categories and splits, :class:`DataError`, frozen records.

:class:`AssistantPrompt`, :class:`Role`, :class:`Question`, :class:`Fact` and :class:`FactSet` are frozen
dataclasses holding tuples, so the loaders' caches cannot be corrupted by callers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = [
    "AssistantPrompt",
    "Conversation",
    "DataError",
    "Fact",
    "FactSet",
    "QUESTION_SPLITS",
    "QUESTION_TOPICS",
    "Question",
    "ROLE_CATEGORIES",
    "Role",
    "SCHEMA_VERSION",
]


#: The only data schema this version of the library reads.
SCHEMA_VERSION: int = 1


#: Allowed role categories, in canonical order.
ROLE_CATEGORIES: tuple[str, ...] = (
    "supernatural",
    "historical_figure",
    "object_concept",
    "cosmic_nature",
    "profession",
    "animal",
    "fictional_character",
    "ai_robot",
    "nationality_culture",
)


#: Allowed question topics.
QUESTION_TOPICS: tuple[str, ...] = (
    "identity",
    "surroundings",
    "feelings",
    "wants",
    "memories",
    "interlocutor",
    "existential",
)


#: The two question splits, always disjoint.
QUESTION_SPLITS: tuple[str, ...] = ("extraction", "evaluation")


#: Minimum number of distinct system prompts per role.
MIN_ROLE_PROMPTS: int = 3


_CHAT_ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


_NAME_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")


#: A filesystem path accepted by the ``path=`` arguments.
PathLike = Union[str, os.PathLike]


#: One chat conversation: ``[{"role": "user", "content": "..."}, ...]``.
Conversation = list[dict[str, str]]


class DataError(ValueError):
    """A data file (shipped or user-supplied) is missing, malformed or inconsistent.

    The message is always a single line of the form
    ``"<file>: <what is wrong>; <how to fix it>"``.
    """

    def __init__(self, message: str) -> None:
        """Create the error, collapsing any whitespace/newlines to one line."""
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class AssistantPrompt:
    """A neutral "default assistant" condition.

    Attributes:
        id: Unique identifier, e.g. ``"ai_assistant"``.
        system: The system message text, or ``None`` for no explicit system
            message.
        use_model_default: Only meaningful when ``system`` is ``None``.
            ``False`` means "no system message at all": callers should render
            the chat template with the model's built-in default system prompt
            *suppressed*.  ``True`` means "let the chat template insert its
            own default system prompt" (e.g. SmolLM2's "You are a helpful AI
            assistant named SmolLM...").  A prompt with a non-null ``system``
            must have ``use_model_default`` false.
    """

    id: str
    system: Optional[str]
    use_model_default: bool = False

    @property
    def system_arg(self) -> Optional[str]:
        """The ``system=`` argument that realises this condition — the one place the rule is written.

        ``use_model_default`` → ``None`` (the chat template inserts its own default system prompt);
        ``system is None`` otherwise → ``""`` (an explicitly empty system message, which suppresses the
        template default); else the prompt text.
        """
        if self.use_model_default:
            return None
        return "" if self.system is None else self.system


@dataclass(frozen=True)
class Role:
    """A persona archetype.

    Attributes:
        name: Unique snake_case identifier (``"ghost"``, ``"adolf_hitler"``).
        display: Short noun phrase for reports (``"a ghost"``).
        category: One of :data:`ROLE_CATEGORIES`.
        prompts: At least three distinct second-person system prompts.
        aliases: Short names usable as identity read-out candidates.
    """

    name: str
    display: str
    category: str
    prompts: tuple[str, ...]
    aliases: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the role as it appears in ``roles.json``."""
        return {
            "name": self.name,
            "display": self.display,
            "category": self.category,
            "prompts": list(self.prompts),
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class Question:
    """An open-ended question asked of a persona.

    Attributes:
        id: Unique identifier (``"ex_001"`` / ``"ev_001"``).
        text: The question.
        topic: One of :data:`QUESTION_TOPICS`.
    """

    id: str
    text: str
    topic: str


@dataclass(frozen=True)
class Fact:
    """One first-person biographical question/answer pair.

    Attributes:
        id: Identifier, unique within its fact set.
        question: Question put to the model.
        answer: First-person answer carrying the identity signal.
        neutral_answer: Matched generic answer to the same question with no
            identity signal (a control).
        cultural: Whether the fact is culture-specific (birthplace, food,
            music, ...); only cultural facts may be swapped by variants.
    """

    id: str
    question: str
    answer: str
    neutral_answer: str
    cultural: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the fact as it appears in a fact-set file."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "neutral_answer": self.neutral_answer,
            "cultural": self.cultural,
        }


@dataclass(frozen=True)
class FactSet:
    """A named set of first-person facts that together point at one identity.

    Attributes:
        name: Identifier; equals the file stem for shipped sets.
        identity: Who the facts describe (``"Adolf Hitler"``); variants keep
            the identity of their base.
        variant: ``"baseline"`` or a variant label (``"russian"``, ``"moon"``).
        base: Name of the base set for variants, else ``None``.
        swapped_ids: Ids of the facts whose answers differ from ``base``.
        facts: The facts, in file order.
    """

    name: str
    identity: str
    variant: str
    base: Optional[str]
    swapped_ids: tuple[str, ...]
    facts: tuple[Fact, ...]

    @property
    def cultural_ids(self) -> tuple[str, ...]:
        """Ids of the facts marked ``cultural``, in file order."""
        return tuple(f.id for f in self.facts if f.cultural)

    def fact(self, fact_id: str) -> Fact:
        """Return the fact with id ``fact_id`` (``KeyError`` if absent)."""
        for f in self.facts:
            if f.id == fact_id:
                return f
        raise KeyError(fact_id)

    def __len__(self) -> int:
        """Number of facts."""
        return len(self.facts)

    def to_dict(self) -> dict[str, Any]:
        """Return the set as a file-shaped dict (including ``schema_version``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "identity": self.identity,
            "variant": self.variant,
            "base": self.base,
            "swapped_ids": list(self.swapped_ids),
            "facts": [f.to_dict() for f in self.facts],
        }

    def dataset_hash(self) -> str:
        """SHA-256 hex digest of the canonical JSON of :meth:`to_dict`.

        Canonical means sorted keys, no insignificant whitespace and UTF-8
        without ASCII escaping, so the hash is stable across platforms and
        ignores file formatting.
        """
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
