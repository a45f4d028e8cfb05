"""Validate any data file, of any kind, the way the loaders do: :func:`load_json_file`.

The kind (roles, questions, facts, assistant prompts, finetune metadata) is given or inferred from the
top-level keys; fact-set variants are checked against their base (next to the file first, then among the
shipped sets).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from ._reading import _load_obj, _user_file
from .facts import _resolve_fact_set
from .parse import _parse_assistant_prompts, _parse_fact_set, _parse_finetune_meta, _parse_questions, _parse_roles
from .schema import DataError, PathLike

__all__ = [
    "load_json_file",
]


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
