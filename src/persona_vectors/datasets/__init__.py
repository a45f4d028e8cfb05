"""Persona data shipped with :mod:`persona_vectors`, with validated loaders.

Everything in ``persona_vectors/data`` is plain JSON / JSONL that carries a
top-level ``"schema_version": 1``.  This module is the only supported way to
read it: every loader validates the file on first use and raises
:class:`DataError` (a :class:`ValueError`) with a one-line message that names
the offending file and says how to fix it.  Parsed results of packaged files
are cached with :func:`functools.lru_cache`; loaders hand out fresh lists (and
fresh dicts for conversations/metadata), and all record types are frozen
dataclasses holding tuples, so callers cannot corrupt the cache.

Shipped data
------------
``assistant_prompts.json``
    Neutral "be the assistant" conditions (see :class:`AssistantPrompt`).
``roles.json``
    ~140 persona archetypes in nine categories (see :data:`ROLE_CATEGORIES`),
    each with at least three second-person system prompts and a few short
    aliases that can be used as identity read-out candidates.
``questions.json``
    Open-ended questions in two disjoint splits: ``extraction`` (used to build
    persona directions) and ``evaluation`` (held out), each tagged with one of
    :data:`QUESTION_TOPICS`.
``facts/*.json``
    First-person biographical fact sets (:class:`FactSet`).  Variants
    (``base`` not null) copy their base set verbatim except for the answers of
    the facts listed in ``swapped_ids``, which must be marked ``cultural``.
``finetune/*.jsonl`` (+ ``NAME.meta.json``)
    Small chat fine-tuning sets, one ``{"messages": [...]}`` conversation per
    line.  ``voyager_telemetry`` is generated from
    :func:`voyager_distance_au`; the metadata sidecar documents the rest.

Your own files
--------------
``load_roles``, ``load_questions``, ``load_assistant_prompts``,
``load_fact_set``, ``load_finetune_dataset`` and ``load_finetune_meta`` accept
``path=`` to read a user file with exactly the same validation;
:func:`load_json_file` validates any of these JSON files and returns the raw
dict.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

__all__ = [
    "AU_KM",
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
    "VOYAGER_1_ANCHORS",
    "format_voyager_distance",
    "get_role",
    "list_fact_sets",
    "list_finetune_datasets",
    "load_assistant_prompts",
    "load_fact_set",
    "load_finetune_dataset",
    "load_finetune_meta",
    "load_json_file",
    "load_questions",
    "load_roles",
    "role_categories",
    "voyager_distance_au",
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

#: One astronomical unit in kilometres (IAU 2012 definition).
AU_KM: float = 149_597_870.7

#: Anchor points (date, heliocentric distance in AU) for :func:`voyager_distance_au`.
#: Values are rounded public mission figures: launch, Jupiter flyby, Saturn
#: flyby, the "Pale Blue Dot" image, termination shock, heliopause crossing,
#: and the start of 2025.
VOYAGER_1_ANCHORS: tuple[tuple[_dt.date, float], ...] = (
    (_dt.date(1977, 9, 5), 1.01),
    (_dt.date(1979, 3, 5), 5.2),
    (_dt.date(1980, 11, 12), 9.5),
    (_dt.date(1990, 2, 14), 40.1),
    (_dt.date(2004, 12, 16), 94.0),
    (_dt.date(2012, 8, 25), 121.6),
    (_dt.date(2025, 1, 1), 165.0),
)

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


# --------------------------------------------------------------------------
# Record types
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# File access
# --------------------------------------------------------------------------


def _data_root() -> Any:
    """Return the packaged ``data`` directory as a Traversable (or Path)."""
    try:
        root = resources.files(__package__ or "persona_vectors").joinpath("data")
        if root.is_dir():
            return root
    except (ModuleNotFoundError, TypeError, ValueError, AttributeError):
        pass
    return Path(__file__).resolve().parent / "data"


def _packaged(*parts: str) -> tuple[Any, str]:
    """Return (resource, label) for a packaged data file."""
    res = _data_root()
    for p in parts:
        res = res.joinpath(p)
    return res, "persona_vectors/data/" + "/".join(parts)


def _user_file(path: PathLike) -> tuple[Path, str]:
    """Return (Path, label) for a user-supplied file path."""
    p = Path(os.fspath(path)).expanduser()
    return p, str(p)


def _read_text(res: Any, label: str) -> str:
    """Read a file as UTF-8 text, converting I/O problems to :class:`DataError`."""
    try:
        return res.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{label}: file not found; check the path (or reinstall persona_vectors)") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{label}: not valid UTF-8 at byte {e.start}; re-save the file as UTF-8") from None
    except OSError as e:
        raise DataError(f"{label}: cannot read file ({e.strerror or e}); check the path and permissions") from None


def _parse_json(text: str, label: str) -> Any:
    """Parse JSON text, reporting syntax errors with line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{label}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); fix the syntax there"
        ) from None


def _check_schema(obj: Any, label: str) -> dict[str, Any]:
    """Check that ``obj`` is a JSON object with ``schema_version == 1``."""
    if not isinstance(obj, dict):
        raise DataError(f"{label}: top level must be a JSON object, got {type(obj).__name__}; wrap the data in {{...}}")
    if "schema_version" not in obj:
        raise DataError(f'{label}: missing "schema_version"; add "schema_version": {SCHEMA_VERSION} at the top level')
    v = obj["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(f'{label}: "schema_version" must be an integer, got {v!r}; set it to {SCHEMA_VERSION}')
    if v != SCHEMA_VERSION:
        if v > SCHEMA_VERSION:
            raise DataError(
                f"{label}: was written for schema {v}; upgrade persona_vectors "
                f"(this version reads schema {SCHEMA_VERSION})"
            )
        raise DataError(f"{label}: was written for schema {v}; migrate it to schema {SCHEMA_VERSION}")
    return obj


def _load_obj(res: Any, label: str) -> dict[str, Any]:
    """Read, parse and schema-check one JSON file."""
    return _check_schema(_parse_json(_read_text(res, label), label), label)


# --------------------------------------------------------------------------
# Field validation helpers
# --------------------------------------------------------------------------


def _get(obj: dict[str, Any], key: str, label: str, where: str) -> Any:
    """Return ``obj[key]`` or raise a DataError naming the missing key."""
    if not isinstance(obj, dict):
        raise DataError(f"{label}: {where} must be a JSON object, got {type(obj).__name__}; fix that entry")
    if key not in obj:
        raise DataError(f'{label}: {where} is missing "{key}"; add it')
    return obj[key]


def _str(obj: dict[str, Any], key: str, label: str, where: str) -> str:
    """Return a required non-empty string field."""
    v = _get(obj, key, label, where)
    if not isinstance(v, str) or not v.strip():
        raise DataError(f'{label}: {where} "{key}" must be a non-empty string, got {v!r}; fill it in')
    return v


def _opt_str(obj: dict[str, Any], key: str, label: str, where: str) -> Optional[str]:
    """Return a required field that is either ``null`` or a non-empty string."""
    v = _get(obj, key, label, where)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise DataError(f'{label}: {where} "{key}" must be null or a non-empty string, got {v!r}; fix it')
    return v


def _bool(obj: dict[str, Any], key: str, label: str, where: str, default: Optional[bool] = None) -> bool:
    """Return a boolean field (optional when ``default`` is given)."""
    if default is not None and isinstance(obj, dict) and key not in obj:
        return default
    v = _get(obj, key, label, where)
    if not isinstance(v, bool):
        raise DataError(f'{label}: {where} "{key}" must be true or false, got {v!r}; fix it')
    return v


def _str_list(obj: dict[str, Any], key: str, label: str, where: str, min_len: int = 1) -> tuple[str, ...]:
    """Return a list-of-non-empty-strings field with at least ``min_len`` items."""
    v = _get(obj, key, label, where)
    if not isinstance(v, list):
        raise DataError(f'{label}: {where} "{key}" must be a list of strings, got {type(v).__name__}; fix it')
    for i, s in enumerate(v):
        if not isinstance(s, str) or not s.strip():
            raise DataError(f'{label}: {where} "{key}"[{i}] must be a non-empty string, got {s!r}; fix it')
    if len(v) < min_len:
        raise DataError(f'{label}: {where} "{key}" has {len(v)} item(s), needs at least {min_len}; add more')
    return tuple(v)


def _list(obj: dict[str, Any], key: str, label: str, where: str = "top level") -> list[Any]:
    """Return a required non-empty list field."""
    v = _get(obj, key, label, where)
    if not isinstance(v, list):
        raise DataError(f'{label}: "{key}" must be a list, got {type(v).__name__}; fix it')
    if not v:
        raise DataError(f'{label}: "{key}" is empty; the dataset needs at least one entry')
    return v


def _normalise_text(text: str) -> str:
    """Lower-case, strip punctuation and collapse whitespace (for duplicate checks)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _suggest(name: str, candidates: list[str]) -> str:
    """Return a ``"did you mean ...?"`` fragment (or a listing hint)."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "no similar name found"


# --------------------------------------------------------------------------
# Parsers (dict -> records)
# --------------------------------------------------------------------------


def _parse_assistant_prompts(obj: dict[str, Any], label: str) -> tuple[AssistantPrompt, ...]:
    """Validate an assistant-prompts document."""
    out: list[AssistantPrompt] = []
    seen: set[str] = set()
    for i, p in enumerate(_list(obj, "prompts", label)):
        where = f"prompts[{i}]"
        pid = _str(p, "id", label, where)
        where = f"prompts[{i}] ({pid!r})"
        if pid in seen:
            raise DataError(f"{label}: duplicate prompt id {pid!r}; give each prompt a unique id")
        seen.add(pid)
        system = _opt_str(p, "system", label, where)
        use_default = _bool(p, "use_model_default", label, where, default=False)
        if system is not None and use_default:
            raise DataError(
                f'{label}: {where} has a system message and "use_model_default": true; '
                "set use_model_default to false or system to null"
            )
        out.append(AssistantPrompt(id=pid, system=system, use_model_default=use_default))
    return tuple(out)


def _parse_roles(obj: dict[str, Any], label: str) -> tuple[tuple[str, ...], tuple[Role, ...]]:
    """Validate a roles document; return (categories, roles)."""
    cats = _str_list(obj, "categories", label, "top level")
    bad = [c for c in cats if c not in ROLE_CATEGORIES]
    if bad:
        raise DataError(f"{label}: unknown categor{'y' if len(bad) == 1 else 'ies'} {bad}; use only {list(ROLE_CATEGORIES)}")
    if len(set(cats)) != len(cats):
        raise DataError(f'{label}: "categories" lists a category twice; remove the duplicate')
    roles: list[Role] = []
    seen: set[str] = set()
    for i, r in enumerate(_list(obj, "roles", label)):
        name = _str(r, "name", label, f"roles[{i}]")
        where = f"roles[{i}] ({name!r})"
        if not _NAME_RE.match(name):
            raise DataError(f"{label}: {where} name must be snake_case (a-z, 0-9, _); rename it")
        if name in seen:
            raise DataError(f"{label}: duplicate role name {name!r}; give each role a unique name")
        seen.add(name)
        display = _str(r, "display", label, where)
        category = _str(r, "category", label, where)
        if category not in cats:
            raise DataError(
                f"{label}: {where} has category {category!r}; use one of {list(cats)} "
                "(and list it under \"categories\")"
            )
        prompts = _str_list(r, "prompts", label, where, min_len=MIN_ROLE_PROMPTS)
        if len({p.strip() for p in prompts}) != len(prompts):
            raise DataError(f"{label}: {where} has duplicate prompts; make all {len(prompts)} prompts distinct")
        aliases = _str_list(r, "aliases", label, where, min_len=1)
        roles.append(Role(name=name, display=display, category=category, prompts=prompts, aliases=aliases))
    return cats, tuple(roles)


def _parse_questions(obj: dict[str, Any], label: str) -> tuple[tuple[str, tuple[Question, ...]], ...]:
    """Validate a questions document; return ((split, questions), ...)."""
    ids: set[str] = set()
    texts: dict[str, tuple[str, str]] = {}
    out: list[tuple[str, tuple[Question, ...]]] = []
    for split in QUESTION_SPLITS:
        qs: list[Question] = []
        for i, q in enumerate(_list(obj, split, label)):
            qid = _str(q, "id", label, f"{split}[{i}]")
            where = f"{split}[{i}] ({qid!r})"
            if qid in ids:
                raise DataError(f"{label}: duplicate question id {qid!r}; give each question a unique id")
            ids.add(qid)
            text = _str(q, "text", label, where)
            topic = _str(q, "topic", label, where)
            if topic not in QUESTION_TOPICS:
                raise DataError(f"{label}: {where} has topic {topic!r}; use one of {list(QUESTION_TOPICS)}")
            key = _normalise_text(text)
            if key in texts:
                other_split, other_id = texts[key]
                if other_split != split:
                    raise DataError(
                        f"{label}: question {qid!r} ({split}) duplicates {other_id!r} ({other_split}); "
                        "the splits must be disjoint, so reword or remove one"
                    )
                raise DataError(f"{label}: question {qid!r} duplicates {other_id!r}; remove one")
            texts[key] = (split, qid)
            qs.append(Question(id=qid, text=text, topic=topic))
        out.append((split, tuple(qs)))
    return tuple(out)


def _parse_fact_set(obj: dict[str, Any], label: str) -> FactSet:
    """Validate the structure of a fact-set document (not its base relation)."""
    where = "top level"
    name = _str(obj, "name", label, where)
    identity = _str(obj, "identity", label, where)
    variant = _str(obj, "variant", label, where)
    base = _opt_str(obj, "base", label, where)
    swapped = _get(obj, "swapped_ids", label, where)
    if not isinstance(swapped, list) or not all(isinstance(s, str) and s for s in swapped):
        raise DataError(f'{label}: "swapped_ids" must be a list of fact ids; fix it')
    if len(set(swapped)) != len(swapped):
        raise DataError(f'{label}: "swapped_ids" lists an id twice; remove the duplicate')
    facts: list[Fact] = []
    seen: set[str] = set()
    for i, f in enumerate(_list(obj, "facts", label)):
        fid = _str(f, "id", label, f"facts[{i}]")
        fw = f"facts[{i}] ({fid!r})"
        if fid in seen:
            raise DataError(f"{label}: duplicate fact id {fid!r}; give each fact a unique id")
        seen.add(fid)
        facts.append(
            Fact(
                id=fid,
                question=_str(f, "question", label, fw),
                answer=_str(f, "answer", label, fw),
                neutral_answer=_str(f, "neutral_answer", label, fw),
                cultural=_bool(f, "cultural", label, fw),
            )
        )
    if base is None and swapped:
        raise DataError(f'{label}: "swapped_ids" is non-empty but "base" is null; name the base set or clear swapped_ids')
    if base is not None and base == name:
        raise DataError(f'{label}: "base" refers to the set itself; point it at a different fact set')
    unknown = [s for s in swapped if s not in seen]
    if unknown:
        raise DataError(f'{label}: "swapped_ids" names unknown fact ids {unknown}; fix the ids')
    return FactSet(
        name=name, identity=identity, variant=variant, base=base, swapped_ids=tuple(swapped), facts=tuple(facts)
    )


def _check_variant(fs: FactSet, base: FactSet, label: str) -> None:
    """Check that variant ``fs`` differs from ``base`` exactly in its cultural ``swapped_ids``."""
    ids = [f.id for f in fs.facts]
    base_ids = [f.id for f in base.facts]
    if ids != base_ids:
        for k, (a, b) in enumerate(zip(ids, base_ids)):
            if a != b:
                raise DataError(
                    f"{label}: fact #{k} is {a!r} but base {base.name!r} has {b!r}; "
                    "variants must keep the base's ids in the same order"
                )
        raise DataError(
            f"{label}: has {len(ids)} facts but base {base.name!r} has {len(base_ids)}; "
            "variants must contain exactly the base's facts"
        )
    differing: list[str] = []
    for f, b in zip(fs.facts, base.facts):
        for field in ("question", "neutral_answer", "cultural"):
            if getattr(f, field) != getattr(b, field):
                raise DataError(
                    f"{label}: fact {f.id!r} changes {field!r} relative to base {base.name!r}; "
                    "variants may only change answers"
                )
        if f.answer != b.answer:
            differing.append(f.id)
    swapped = set(fs.swapped_ids)
    if set(differing) != swapped:
        extra = sorted(set(differing) - swapped)
        missing = sorted(swapped - set(differing))
        raise DataError(
            f"{label}: answers differ from base {base.name!r} for {extra or 'no unlisted ids'} "
            f"and are identical for listed {missing or 'none'}; make \"swapped_ids\" list exactly the changed facts"
        )
    not_cultural = [s for s in fs.swapped_ids if not base.fact(s).cultural]
    if not_cultural:
        raise DataError(
            f'{label}: swapped facts {not_cultural} are not marked "cultural" in base {base.name!r}; '
            "only swap cultural facts (or mark them cultural in both files)"
        )


def _parse_finetune(text: str, label: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Validate a chat JSONL file; return conversations as tuples of (role, content)."""
    convs: list[tuple[tuple[str, str], ...]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{label}: invalid JSON at line {lineno}, column {e.colno} ({e.msg}); fix that line"
            ) from None
        where = f"line {lineno}"
        if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
            raise DataError(f'{label}: {where} must be {{"messages": [...]}} with at least one message; fix that line')
        msgs: list[tuple[str, str]] = []
        for j, m in enumerate(obj["messages"]):
            mw = f"{where} message {j}"
            role = _str(m, "role", label, mw)
            if role not in _CHAT_ROLES:
                raise DataError(f"{label}: {mw} has role {role!r}; use one of {sorted(_CHAT_ROLES)}")
            msgs.append((role, _str(m, "content", label, mw)))
        if msgs[-1][0] != "assistant" or not any(r == "user" for r, _ in msgs):
            raise DataError(f"{label}: {where} needs a user message and must end with an assistant message; fix that line")
        convs.append(tuple(msgs))
    if not convs:
        raise DataError(f"{label}: contains no conversations; add at least one JSON line")
    return tuple(convs)


def _parse_finetune_meta(obj: dict[str, Any], label: str) -> dict[str, Any]:
    """Validate the required keys of a fine-tuning metadata sidecar."""
    _str(obj, "name", label, "top level")
    _str(obj, "description", label, "top level")
    n = _get(obj, "n", label, "top level")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f'{label}: "n" must be a positive integer (number of conversations), got {n!r}; fix it')
    return obj


# --------------------------------------------------------------------------
# Generic loader
# --------------------------------------------------------------------------

_Kind = Literal["assistant_prompts", "roles", "questions", "facts", "finetune_meta"]


def _infer_kind(obj: dict[str, Any], label: str) -> str:
    """Guess which kind of data file ``obj`` is from its keys."""
    if "roles" in obj:
        return "roles"
    if "facts" in obj:
        return "facts"
    if "extraction" in obj or "evaluation" in obj:
        return "questions"
    if "prompts" in obj:
        return "assistant_prompts"
    if "n" in obj and "description" in obj:
        return "finetune_meta"
    raise DataError(
        f"{label}: cannot tell what kind of data file this is; pass kind= "
        "('roles', 'questions', 'facts', 'assistant_prompts' or 'finetune_meta')"
    )


def load_json_file(path: PathLike, kind: Optional[_Kind] = None) -> dict[str, Any]:
    """Read and fully validate one persona data JSON file; return its raw dict.

    Args:
        path: File to read.
        kind: ``"roles"``, ``"questions"``, ``"facts"``, ``"assistant_prompts"``
            or ``"finetune_meta"``; inferred from the top-level keys if omitted.

    Returns:
        The parsed JSON object (a fresh dict the caller may modify).

    Raises:
        DataError: if the file is missing, is not valid JSON (the message
            gives line and column), has the wrong ``schema_version``, or fails
            the validation for its kind.  Fact-set variants are also checked
            against their base (looked up next to ``path`` first, then among
            the shipped sets).
    """
    res, label = _user_file(path)
    obj = _load_obj(res, label)
    k = kind or _infer_kind(obj, label)
    if k == "roles":
        _parse_roles(obj, label)
    elif k == "questions":
        _parse_questions(obj, label)
    elif k == "assistant_prompts":
        _parse_assistant_prompts(obj, label)
    elif k == "facts":
        _resolve_fact_set(_parse_fact_set(obj, label), label, res.parent, frozenset())
    elif k == "finetune_meta":
        _parse_finetune_meta(obj, label)
    else:
        raise DataError(f"{label}: unknown kind {k!r}; use 'roles', 'questions', 'facts', 'assistant_prompts' or 'finetune_meta'")
    return obj


# --------------------------------------------------------------------------
# Assistant prompts
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _packaged_assistant_prompts() -> tuple[AssistantPrompt, ...]:
    """Parse and cache the shipped ``assistant_prompts.json``."""
    res, label = _packaged("assistant_prompts.json")
    return _parse_assistant_prompts(_load_obj(res, label), label)


def load_assistant_prompts(path: Optional[PathLike] = None) -> list[AssistantPrompt]:
    """Return the neutral assistant conditions (shipped, or from ``path``).

    See :class:`AssistantPrompt` for the meaning of ``system=None`` together
    with ``use_model_default``.
    """
    if path is None:
        return list(_packaged_assistant_prompts())
    res, label = _user_file(path)
    return list(_parse_assistant_prompts(_load_obj(res, label), label))


# --------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _packaged_roles() -> tuple[tuple[str, ...], tuple[Role, ...]]:
    """Parse and cache the shipped ``roles.json``."""
    res, label = _packaged("roles.json")
    return _parse_roles(_load_obj(res, label), label)


def _roles_from(path: Optional[PathLike]) -> tuple[tuple[str, ...], tuple[Role, ...], str]:
    """Return (categories, roles, label) from ``path`` or the shipped file."""
    if path is None:
        cats, roles = _packaged_roles()
        return cats, roles, "persona_vectors/data/roles.json"
    res, label = _user_file(path)
    cats, roles = _parse_roles(_load_obj(res, label), label)
    return cats, roles, label


def load_roles(category: Optional[str] = None, *, path: Optional[PathLike] = None) -> list[Role]:
    """Return persona roles, optionally filtered to one category.

    Args:
        category: One of :data:`ROLE_CATEGORIES`, or ``None`` for all roles.
        path: Read this roles file instead of the shipped ``roles.json``.

    Raises:
        DataError: for an unknown category or an invalid file.
    """
    cats, roles, label = _roles_from(path)
    if category is None:
        return list(roles)
    if category not in ROLE_CATEGORIES:
        raise DataError(f"{label}: unknown category {category!r}; {_suggest(category, list(ROLE_CATEGORIES))} "
                        f"(valid: {', '.join(ROLE_CATEGORIES)})")
    return [r for r in roles if r.category == category]


def role_categories(*, path: Optional[PathLike] = None) -> list[str]:
    """Return the categories declared by the roles file, in file order."""
    return list(_roles_from(path)[0])


def get_role(name: str, *, path: Optional[PathLike] = None) -> Role:
    """Return the role called ``name``.

    Matching is exact first, then case-insensitive with spaces/hyphens read
    as underscores (``"Adolf Hitler"`` finds ``adolf_hitler``), then by alias.

    Raises:
        DataError: if no role matches; the message suggests close names.
    """
    _, roles, label = _roles_from(path)
    by_name = {r.name: r for r in roles}
    if name in by_name:
        return by_name[name]
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if norm in by_name:
        return by_name[norm]
    alias_hits = {r.name for r in roles for a in r.aliases if a.lower() == name.strip().lower()}
    if len(alias_hits) == 1:
        return by_name[alias_hits.pop()]
    candidates = list(by_name)
    hint = _suggest(norm, candidates)
    raise DataError(f"{label}: no role named {name!r}; {hint} (list names with load_roles())")


# --------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _packaged_questions() -> tuple[tuple[str, tuple[Question, ...]], ...]:
    """Parse and cache the shipped ``questions.json``."""
    res, label = _packaged("questions.json")
    return _parse_questions(_load_obj(res, label), label)


def load_questions(
    split: Literal["extraction", "evaluation"], *, path: Optional[PathLike] = None
) -> list[Question]:
    """Return the questions of one split (``"extraction"`` or ``"evaluation"``).

    The two splits are guaranteed disjoint (no shared ids, no texts equal
    after lower-casing and stripping punctuation).
    """
    if path is None:
        parsed, label = _packaged_questions(), "persona_vectors/data/questions.json"
    else:
        res, label = _user_file(path)
        parsed = _parse_questions(_load_obj(res, label), label)
    if split not in QUESTION_SPLITS:
        raise DataError(f"{label}: unknown split {split!r}; use 'extraction' or 'evaluation'")
    return list(dict(parsed)[split])


# --------------------------------------------------------------------------
# Fact sets
# --------------------------------------------------------------------------


def _packaged_names(folder: str, suffix: str) -> list[str]:
    """Return sorted file stems in a packaged data folder with the given suffix."""
    root = _data_root().joinpath(folder)
    try:
        entries = list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []
    return sorted(
        e.name[: -len(suffix)]
        for e in entries
        if e.name.endswith(suffix) and not e.name.startswith((".", "_")) and not e.name.endswith(".meta.json")
    )


def list_fact_sets() -> list[str]:
    """Return the names of the shipped fact sets (file stems in ``data/facts``)."""
    return _packaged_names("facts", ".json")


def _resolve_fact_set(fs: FactSet, label: str, search_dir: Optional[Path], seen: frozenset[str]) -> FactSet:
    """Validate ``fs`` against its base (if any) and return it."""
    if fs.base is None:
        return fs
    if fs.base in seen or fs.name in seen:
        raise DataError(f'{label}: "base" chain loops back to {fs.base!r}; break the cycle')
    base: Optional[FactSet] = None
    if search_dir is not None:
        candidate = search_dir / f"{fs.base}.json"
        if candidate.is_file():
            b_label = str(candidate)
            base = _resolve_fact_set(
                _parse_fact_set(_load_obj(candidate, b_label), b_label), b_label, search_dir, seen | {fs.name}
            )
    if base is None:
        if fs.base not in list_fact_sets():
            raise DataError(
                f"{label}: base fact set {fs.base!r} not found next to the file or among the shipped sets; "
                f"{_suggest(fs.base, list_fact_sets())}"
            )
        base = _packaged_fact_set(fs.base, seen | {fs.name})
    _check_variant(fs, base, label)
    return fs


@functools.lru_cache(maxsize=None)
def _packaged_fact_set(name: str, seen: frozenset[str] = frozenset()) -> FactSet:
    """Parse, validate (against its base) and cache a shipped fact set."""
    res, label = _packaged("facts", f"{name}.json")
    fs = _parse_fact_set(_load_obj(res, label), label)
    if fs.name != name:
        raise DataError(f'{label}: "name" is {fs.name!r} but the file is {name}.json; make them match')
    return _resolve_fact_set(fs, label, None, seen)


def load_fact_set(name: Optional[str] = None, *, path: Optional[PathLike] = None) -> FactSet:
    """Return a validated fact set by shipped ``name`` or from ``path``.

    Variants are checked against their base: same ids in the same order,
    identical questions and neutral answers, and answers that differ exactly
    for the ``swapped_ids``, all of which must be ``cultural``.

    Raises:
        DataError: unknown name (with suggestions) or invalid file.
    """
    if (name is None) == (path is None):
        raise DataError("persona_vectors/data/facts: pass exactly one of name= or path= to load_fact_set()")
    if path is not None:
        res, label = _user_file(path)
        fs = _parse_fact_set(_load_obj(res, label), label)
        return _resolve_fact_set(fs, label, res.parent, frozenset())
    assert name is not None
    names = list_fact_sets()
    if name not in names:
        raise DataError(f"persona_vectors/data/facts: no fact set named {name!r}; {_suggest(name, names)}")
    return _packaged_fact_set(name)


# --------------------------------------------------------------------------
# Fine-tuning datasets
# --------------------------------------------------------------------------


def list_finetune_datasets() -> list[str]:
    """Return the names of the shipped chat fine-tuning sets (``data/finetune/*.jsonl``)."""
    return _packaged_names("finetune", ".jsonl")


def _check_finetune_name(name: str) -> None:
    """Raise DataError (with suggestions) unless ``name`` is a shipped fine-tuning set."""
    names = list_finetune_datasets()
    if name not in names:
        raise DataError(f"persona_vectors/data/finetune: no dataset named {name!r}; {_suggest(name, names)}")


@functools.lru_cache(maxsize=None)
def _packaged_finetune(name: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Parse and cache a shipped fine-tuning JSONL file."""
    res, label = _packaged("finetune", f"{name}.jsonl")
    return _parse_finetune(_read_text(res, label), label)


@functools.lru_cache(maxsize=None)
def _packaged_meta_text(name: str) -> str:
    """Validate a shipped metadata sidecar (incl. ``n``) and cache it as JSON text."""
    res, label = _packaged("finetune", f"{name}.meta.json")
    obj = _parse_finetune_meta(_load_obj(res, label), label)
    if obj["name"] != name:
        raise DataError(f'{label}: "name" is {obj["name"]!r} but the file is {name}.meta.json; make them match')
    n = len(_packaged_finetune(name))
    if obj["n"] != n:
        raise DataError(f'{label}: "n" is {obj["n"]} but {name}.jsonl has {n} conversations; set "n": {n}')
    return json.dumps(obj, ensure_ascii=False)


def _to_conversations(convs: tuple[tuple[tuple[str, str], ...], ...]) -> list[Conversation]:
    """Build fresh, caller-owned conversation dicts from cached tuples."""
    return [[{"role": r, "content": c} for r, c in conv] for conv in convs]


def load_finetune_dataset(name: Optional[str] = None, *, path: Optional[PathLike] = None) -> list[Conversation]:
    """Return a chat fine-tuning set as a list of conversations.

    Each conversation is a fresh list of ``{"role", "content"}`` dicts (roles
    ``system``/``user``/``assistant``, ending with ``assistant``).

    Args:
        name: A shipped dataset (see :func:`list_finetune_datasets`).
        path: Alternatively, a JSONL file of your own.
    """
    if (name is None) == (path is None):
        raise DataError("persona_vectors/data/finetune: pass exactly one of name= or path= to load_finetune_dataset()")
    if path is not None:
        res, label = _user_file(path)
        return _to_conversations(_parse_finetune(_read_text(res, label), label))
    assert name is not None
    _check_finetune_name(name)
    return _to_conversations(_packaged_finetune(name))


def load_finetune_meta(name: Optional[str] = None, *, path: Optional[PathLike] = None) -> dict[str, Any]:
    """Return the metadata sidecar (``NAME.meta.json``) of a fine-tuning set.

    Required keys are ``schema_version``, ``name``, ``description`` and ``n``
    (which must equal the number of conversations for shipped sets); other
    keys (``source``, ``formula``, ``anchors``, ...) are free-form notes.
    A fresh dict is returned on every call.
    """
    if (name is None) == (path is None):
        raise DataError("persona_vectors/data/finetune: pass exactly one of name= or path= to load_finetune_meta()")
    if path is not None:
        res, label = _user_file(path)
        return _parse_finetune_meta(_load_obj(res, label), label)
    assert name is not None
    _check_finetune_name(name)
    return json.loads(_packaged_meta_text(name))


# --------------------------------------------------------------------------
# Voyager 1 distance model
# --------------------------------------------------------------------------


def voyager_distance_au(date: Union[_dt.date, str]) -> float:
    """Approximate heliocentric distance of Voyager 1 (in AU) on ``date``.

    Piecewise-linear interpolation in calendar days between the
    :data:`VOYAGER_1_ANCHORS`; after the last anchor (2025-01-01) the final
    segment's slope (~3.5 AU/year) is extrapolated.  This is a smooth,
    documented approximation for fine-tuning data, not an ephemeris: errors
    of a few AU are expected during the planetary flyby years.

    Args:
        date: A :class:`datetime.date` (a ``datetime`` is truncated to its
            date) or an ISO ``"YYYY-MM-DD"`` string.

    Raises:
        ValueError: for dates before launch (1977-09-05) or unparsable strings.
    """
    if isinstance(date, str):
        date = _dt.date.fromisoformat(date)
    if isinstance(date, _dt.datetime):
        date = date.date()
    if not isinstance(date, _dt.date):
        raise TypeError(f"expected a datetime.date or ISO string, got {type(date).__name__}")
    t = date.toordinal()
    anchors = VOYAGER_1_ANCHORS
    if t < anchors[0][0].toordinal():
        raise ValueError(f"{date.isoformat()} is before Voyager 1's launch on {anchors[0][0].isoformat()}")
    for (d0, a0), (d1, a1) in zip(anchors, anchors[1:]):
        t0, t1 = d0.toordinal(), d1.toordinal()
        if t <= t1:
            return a0 + (a1 - a0) * (t - t0) / (t1 - t0)
    (d0, a0), (d1, a1) = anchors[-2], anchors[-1]
    slope = (a1 - a0) / (d1.toordinal() - d0.toordinal())
    return a1 + slope * (t - d1.toordinal())


def format_voyager_distance(au: float) -> str:
    """Format a distance the way ``voyager_telemetry.jsonl`` does.

    Example: ``format_voyager_distance(40.12)`` -> ``"40.12 AU (6.002 billion km)"``.
    """
    return f"{au:.2f} AU ({au * AU_KM / 1e9:.3f} billion km)"
