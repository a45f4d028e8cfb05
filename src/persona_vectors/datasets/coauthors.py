"""Coauthor lists of well-known scientists, for the coauthor-identification experiment: :func:`load_coauthors`.

``data/coauthors/coauthors_<version>.json`` lists scientists (name, field, name variants), each with at least
:data:`MIN_COAUTHORS` coauthors; every coauthor carries one joint work (title and year) as evidence, whether that
evidence is ``certain``, whether the name ``gives_away`` the target (same surname, or a widely known eponym such as
"Erdős–Rényi"), a ``note`` and what it was ``checked`` against.  The file's ``sources`` says how the entries were
made (written from memory by an AI model; check before relying on them).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Optional

from ._reading import (
    _bool,
    _get,
    _list,
    _normalise_text,
    _opt_str,
    _str,
    _str_list,
    _suggest,
    load_versioned,
    versions_in,
)
from .schema import DataError, PathLike

__all__ = [
    "Coauthor",
    "MIN_COAUTHORS",
    "Scientist",
    "list_coauthor_versions",
    "load_coauthors",
]


#: Fewest coauthors a scientist may have.
MIN_COAUTHORS: int = 10


@dataclass(frozen=True)
class Coauthor:
    """One coauthor of a scientist, with one joint work as evidence.

    Attributes:
        name: The coauthor's name as usually written.
        work: Title of a joint paper, book or patent (``None`` only when ``certain`` is false).
        year: Its publication year (``None`` only when ``certain`` is false).
        certain: Whether the joint work's title and year are known with confidence.
        gives_away: Whether the name itself points at the target (same surname, or a widely known eponym).
        note: Why the entry is uncertain or gives the target away; ``None`` otherwise.
        checked: What the entry was checked against (a page or citation), or ``None`` if unchecked.
    """

    name: str
    work: Optional[str]
    year: Optional[int]
    certain: bool
    gives_away: bool
    note: Optional[str]
    checked: Optional[str]


@dataclass(frozen=True)
class Scientist:
    """A well-known scientist and their coauthors.

    Attributes:
        name: Full name, e.g. ``"Richard Feynman"``.
        field: One of the file's ``fields``, e.g. ``"physics"``.
        name_variants: Ways the name is written (``"Feynman"``, ``"R. P. Feynman"``), the full name included.
        coauthors: At least :data:`MIN_COAUTHORS` distinct coauthors.
    """

    name: str
    field: str
    name_variants: tuple[str, ...]
    coauthors: tuple[Coauthor, ...]


def _fold(name: str) -> str:
    """Normalise a personal name for comparisons: accents dropped, lower case, punctuation and spacing collapsed."""
    decomposed = unicodedata.normalize("NFKD", name)
    return _normalise_text("".join(c for c in decomposed if not unicodedata.combining(c)))


def _opt_year(obj: dict[str, Any], label: str, where: str) -> Optional[int]:
    """Return a required field that is ``null`` or a plausible publication year."""
    v = _get(obj, "year", label, where)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1600 <= v <= 2100:
        raise DataError(f'{label}: {where} "year" must be null or a year between 1600 and 2100, got {v!r}; fix it')
    return v


def _parse_coauthor(obj: Any, label: str, where: str) -> Coauthor:
    """Validate one coauthor entry."""
    name = _str(obj, "name", label, where)
    where = f"{where} ({name!r})"
    work = _opt_str(obj, "work", label, where)
    year = _opt_year(obj, label, where)
    certain = _bool(obj, "certain", label, where)
    gives_away = _bool(obj, "gives_away", label, where)
    note = _opt_str(obj, "note", label, where)
    checked = _opt_str(obj, "checked", label, where)
    if certain and (work is None or year is None):
        raise DataError(
            f'{label}: {where} is "certain": true but has no "work" title and "year"; '
            'give the joint work or set "certain": false with a "note"'
        )
    if not certain and note is None:
        raise DataError(f'{label}: {where} is "certain": false without a "note"; say in "note" why it is uncertain')
    return Coauthor(name=name, work=work, year=year, certain=certain, gives_away=gives_away, note=note, checked=checked)


def _parse_scientist(obj: Any, fields: tuple[str, ...], label: str, index: int) -> Scientist:
    """Validate one scientist entry and its coauthors."""
    name = _str(obj, "name", label, f"scientist {index}")
    where = f"scientist {index} ({name!r})"
    field = _str(obj, "field", label, where)
    if field not in fields:
        raise DataError(
            f'{label}: {where} has "field" {field!r}, which is not in the top-level "fields" {list(fields)}; '
            f"{_suggest(field, list(fields))}"
        )
    variants = _str_list(obj, "name_variants", label, where)
    if _fold(name) not in {_fold(v) for v in variants}:
        variants = (name,) + variants
    raw = _get(obj, "coauthors", label, where)
    if not isinstance(raw, list):
        raise DataError(f'{label}: {where} "coauthors" must be a list, got {type(raw).__name__}; fix it')
    if len(raw) < MIN_COAUTHORS:
        raise DataError(
            f"{label}: {where} has {len(raw)} coauthor(s), needs at least {MIN_COAUTHORS}; add more or drop the scientist"
        )
    own = {_fold(v): v for v in variants}
    seen: dict[str, int] = {}
    coauthors = []
    for j, c in enumerate(raw):
        co = _parse_coauthor(c, label, f"{where} coauthor {j}")
        key = _fold(co.name)
        if key in own:
            raise DataError(
                f"{label}: {where} coauthor {j} ({co.name!r}) is the scientist's own name variant {own[key]!r}; remove it"
            )
        if key in seen:
            raise DataError(
                f"{label}: {where} lists coauthor {co.name!r} twice (entries {seen[key]} and {j}); keep one"
            )
        seen[key] = j
        coauthors.append(co)
    return Scientist(name=name, field=field, name_variants=variants, coauthors=tuple(coauthors))


def _parse_coauthors(obj: dict[str, Any], label: str) -> tuple[Scientist, ...]:
    """Validate a whole coauthor file (already schema-checked) and return its scientists."""
    for key in ("version", "description", "sources"):
        _get(obj, key, label, "top level")
    _str(obj, "version", label, "top level")
    _str(obj, "description", label, "top level")
    if not isinstance(obj["sources"], (dict, str)) or not obj["sources"]:
        raise DataError(f'{label}: "sources" must be a non-empty object or string; say what the entries are based on')
    fields = _str_list(obj, "fields", label, "top level")
    scientists = []
    seen: dict[str, int] = {}
    for i, s in enumerate(_list(obj, "scientists", label)):
        sc = _parse_scientist(s, fields, label, i)
        key = _fold(sc.name)
        if key in seen:
            raise DataError(f"{label}: scientist {i} ({sc.name!r}) duplicates scientist {seen[key]}; keep one")
        seen[key] = i
        scientists.append(sc)
    return tuple(scientists)


def list_coauthor_versions() -> list[str]:
    """Return the shipped coauthor dataset versions (``"v1"`` for ``data/coauthors/coauthors_v1.json``)."""
    return versions_in("coauthors")


def load_coauthors(version: str = "v1", *, path: Optional[PathLike] = None) -> list[Scientist]:
    """Return the validated scientists of a shipped coauthor dataset, or of the file at ``path``.

    Every scientist has a ``field`` from the file's ``fields``, name variants (the full name included) and at
    least :data:`MIN_COAUTHORS` distinct coauthors, none equal to one of the scientist's own name variants
    (compared without accents, case or punctuation).  A coauthor marked ``certain`` names a joint work and year;
    one that is not carries a ``note`` saying why.

    Raises:
        DataError: (a :class:`ValueError`) unknown version, or an invalid file; the message names the file,
            the scientist and the problem.
    """
    return load_versioned("coauthors", "coauthor dataset", version, path, _parse_coauthors)
