"""Small chat finetuning sets with their metadata sidecars, and the Voyager 1 distance that generated one.

:func:`load_finetune_dataset` / :func:`load_finetune_meta` read ``finetune/NAME.jsonl`` and
``NAME.meta.json``; :func:`voyager_distance_au` interpolates public mission figures for the
``voyager_telemetry`` set.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from typing import Any, Optional, Union

from ._reading import _load_obj, _packaged, _packaged_names, _read_text, _suggest, _user_file
from .parse import _parse_finetune, _parse_finetune_meta
from .schema import Conversation, DataError, PathLike

__all__ = [
    "AU_KM",
    "VOYAGER_1_ANCHORS",
    "format_voyager_distance",
    "list_finetune_datasets",
    "load_finetune_dataset",
    "load_finetune_meta",
    "voyager_distance_au",
]


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
