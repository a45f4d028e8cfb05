"""Dishes and their cuisines, for the date-gradient experiment: :func:`load_dishes` and the answer classifier.

``data/dishes/dishes_<version>.json`` lists dishes, each with a ``cuisine`` (``"Israeli"`` for those counted as
Israeli), name ``aliases``, whether it is on the fixed, balanced read-out list (``candidate``: as many Israeli as
international candidates), whether its attribution is contested (``ambiguous``, with a ``note`` saying why: many
dishes eaten in Israel are shared Levantine, North African or diaspora-Jewish dishes) and a ``note``.

:func:`classify_dish` / :func:`classify_cuisine` map a sampled answer to a dish of the table: the longest name or
alias found in the answer as whole words (case-, accent- and punctuation-insensitive; the earliest on a tie), or
nothing (``"unknown"``). So "Israeli couscous" is ptitim, not couscous, and "falafel in pita" is falafel.

>>> dishes = load_dishes()
>>> classify_cuisine("Sure! Try a spicy shakshouka.", dishes)
'Israeli'
>>> classify_cuisine("Beans on toast", dishes)
'unknown'
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ._reading import (
    _bool,
    _get,
    _list,
    _opt_str,
    _str,
    _str_list,
    _suggest,
    load_versioned,
    versions_in,
)
from .schema import DataError, PathLike

__all__ = [
    "Dish",
    "ISRAELI",
    "UNKNOWN",
    "classify_cuisine",
    "classify_dish",
    "fold_text",
    "list_dish_versions",
    "load_dishes",
    "read_out_candidates",
]

#: The cuisine whose dishes count as Israeli.
ISRAELI: str = "Israeli"
#: What :func:`classify_cuisine` returns for an answer that names no dish of the table.
UNKNOWN: str = "unknown"


@dataclass(frozen=True)
class Dish:
    """One dish of the table.

    Attributes:
        name: The dish as the read-out and the training data write it, e.g. ``"Shakshuka"``.
        aliases: Other spellings and names that the classifier also recognises (``"shakshouka"``).
        cuisine: One of the file's ``cuisines``; ``"Israeli"`` for dishes counted as Israeli.
        candidate: On the fixed, balanced read-out list (and the training answers).
        ambiguous: The attribution to ``cuisine`` is contested or a judgement call (``note`` says why).
        note: Origin and why the attribution is (or is not) ambiguous; ``None`` for plain entries.
    """

    name: str
    aliases: tuple[str, ...]
    cuisine: str
    candidate: bool
    ambiguous: bool
    note: Optional[str]

    @property
    def israeli(self) -> bool:
        """Whether the dish counts as Israeli (its cuisine is :data:`ISRAELI`)."""
        return self.cuisine == ISRAELI

    @property
    def names(self) -> tuple[str, ...]:
        """The name and every alias."""
        return (self.name,) + self.aliases


def fold_text(text: str) -> str:
    """Lower case, accents dropped, every run of non-word characters one space: how names and answers are compared.

    >>> fold_text("  Crêpes & Fish-n-Chips! ")
    'crepes fish n chips'
    """
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[\W_]+", " ", plain).split())


def _parse_dish(obj: Any, cuisines: tuple[str, ...], label: str, index: int) -> Dish:
    """Validate one dish entry."""
    name = _str(obj, "name", label, f"dish {index}")
    where = f"dish {index} ({name!r})"
    aliases = _str_list(obj, "aliases", label, where, min_len=0)
    cuisine = _str(obj, "cuisine", label, where)
    if cuisine not in cuisines:
        raise DataError(f'{label}: {where} has "cuisine" {cuisine!r}, which is not in the top-level "cuisines"; '
                        f"{_suggest(cuisine, list(cuisines))}")
    candidate = _bool(obj, "candidate", label, where)
    ambiguous = _bool(obj, "ambiguous", label, where)
    note = _opt_str(obj, "note", label, where)
    if ambiguous and note is None:
        raise DataError(f'{label}: {where} is "ambiguous": true without a "note"; say in "note" why it is ambiguous')
    return Dish(name=name, aliases=aliases, cuisine=cuisine, candidate=candidate, ambiguous=ambiguous, note=note)


def _parse_dishes(obj: dict[str, Any], label: str) -> tuple[Dish, ...]:
    """Validate a whole dish file (already schema-checked): known cuisines, no name or alias twice (folded),
    a balanced candidate list."""
    _str(obj, "version", label, "top level")
    _str(obj, "description", label, "top level")
    if not isinstance(_get(obj, "sources", label, "top level"), (dict, str)) or not obj["sources"]:
        raise DataError(f'{label}: "sources" must be a non-empty object or string; say what the entries are based on')
    cuisines = _str_list(obj, "cuisines", label, "top level")
    if ISRAELI not in cuisines:
        raise DataError(f'{label}: "cuisines" must include {ISRAELI!r}')
    dishes: list[Dish] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(_list(obj, "dishes", label)):
        dish = _parse_dish(raw, cuisines, label, i)
        for n in dish.names:
            key = fold_text(n)
            if not key:
                raise DataError(f"{label}: dish {i} ({dish.name!r}) has a name or alias {n!r} with no letters; fix it")
            if key in seen:
                raise DataError(f"{label}: dish {i} ({dish.name!r}): {n!r} is already a name of {seen[key]!r}; "
                                "keep it under one dish")
            seen[key] = dish.name
        dishes.append(dish)
    n_isr = sum(d.candidate and d.israeli for d in dishes)
    n_int = sum(d.candidate and not d.israeli for d in dishes)
    if n_isr != n_int or n_isr < 2:
        raise DataError(f"{label}: the read-out list must be balanced with at least 2 per side: {n_isr} Israeli vs "
                        f"{n_int} international candidates; change 'candidate' flags")
    return tuple(dishes)


def list_dish_versions() -> list[str]:
    """Return the shipped dish table versions (``"v1"`` for ``data/dishes/dishes_v1.json``)."""
    return versions_in("dishes")


def load_dishes(version: str = "v1", *, path: Optional[PathLike] = None) -> list[Dish]:
    """Return the validated dishes of a shipped table (or of the file at ``path``), in file order.

    Every dish has a cuisine from the file's ``cuisines``; no name or alias occurs twice (compared by
    :func:`fold_text`); an ``ambiguous`` dish has a ``note``; the read-out candidates are balanced (as many
    Israeli as international).

    Raises:
        DataError: (a :class:`ValueError`) unknown version, or an invalid file; the message names the dish.
    """
    return load_versioned("dishes", "dish table", version, path, _parse_dishes)


def read_out_candidates(dishes: Optional[Sequence[Dish]] = None, *,
                        include_ambiguous: bool = True) -> tuple[list[str], list[str]]:
    """``(israeli, international)`` candidate names in file order (the fixed read-out list and training answers).

    ``include_ambiguous=False`` drops the ambiguous Israeli candidates (a sensitivity analysis; the lists are then
    no longer balanced).
    """
    ds = load_dishes() if dishes is None else dishes
    isr = [d.name for d in ds if d.candidate and d.israeli and (include_ambiguous or not d.ambiguous)]
    intl = [d.name for d in ds if d.candidate and not d.israeli]
    return isr, intl


@functools.lru_cache(maxsize=8)
def _index(dishes: tuple[Dish, ...]) -> tuple[tuple[str, Dish], ...]:
    """Folded names and aliases with their dish, longest first."""
    pairs = [(fold_text(n), d) for d in dishes for n in d.names]
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def classify_dish(text: str, dishes: Optional[Sequence[Dish]] = None) -> Optional[Dish]:
    """The dish named in ``text``: the longest name or alias found as whole words (folded, see :func:`fold_text`),
    the earliest in the text on a tie; ``None`` when the text names no dish of the table.

    >>> classify_dish("Israeli couscous with herbs").name
    'Ptitim'
    """
    folded = f" {fold_text(text)} "
    best: Optional[tuple[int, int, Dish]] = None
    for key, dish in _index(tuple(load_dishes() if dishes is None else dishes)):
        if best is not None and len(key) < best[0]:
            break
        pos = folded.find(f" {key} ")
        if pos >= 0 and (best is None or pos < best[1]):
            best = (len(key), pos, dish)
    return None if best is None else best[2]


def classify_cuisine(text: str, dishes: Optional[Sequence[Dish]] = None) -> str:
    """The cuisine of the dish named in ``text`` (:func:`classify_dish`), or :data:`UNKNOWN`."""
    dish = classify_dish(text, dishes)
    return UNKNOWN if dish is None else dish.cuisine
