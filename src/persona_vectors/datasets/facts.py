"""First-person biographical fact sets and their variants.

:func:`list_fact_sets` and :func:`load_fact_set` (shipped by name or a user file); a variant copies its base
set except for the swapped, culturally marked facts, and is resolved against it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from ._reading import _load_obj, _packaged, _packaged_names, _suggest, _user_file
from .parse import _check_variant, _parse_fact_set
from .schema import DataError, FactSet, PathLike

__all__ = [
    "list_fact_sets",
    "load_fact_set",
]


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
