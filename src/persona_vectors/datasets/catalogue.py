"""The persona catalogue and the question sets: assistant prompts, roles by category, questions by split.

:func:`load_assistant_prompts`, :func:`load_roles` / :func:`get_role` (alias lookup with suggestions) /
:func:`role_categories`, and :func:`load_questions` (extraction and evaluation splits, disjoint), each
cached for the shipped file and accepting ``path=`` for a user file.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, Optional

from ._reading import _load_obj, _packaged, _suggest, _user_file
from .parse import _parse_assistant_prompts, _parse_questions, _parse_roles
from .schema import AssistantPrompt, DataError, PathLike, QUESTION_SPLITS, Question, ROLE_CATEGORIES, Role

__all__ = [
    "get_role",
    "load_assistant_prompts",
    "load_questions",
    "load_roles",
    "role_categories",
]


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
