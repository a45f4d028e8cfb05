"""Reading a data file, shipped or the user's, into a schema-checked JSON object, and the field checks parsers use.

Every problem becomes a one-line :class:`~persona_vectors.datasets.schema.DataError` naming the file and the
fix; the packaged ``data`` directory is found through :mod:`importlib.resources`.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .schema import DataError, PathLike, SCHEMA_VERSION

def _data_root() -> Any:
    """Return the packaged ``data`` directory as a Traversable (or Path)."""
    try:
        root = resources.files("persona_vectors").joinpath("data")
        if root.is_dir():
            return root
    except (ModuleNotFoundError, TypeError, ValueError, AttributeError):
        pass
    return Path(__file__).resolve().parent.parent / "data"


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


T = TypeVar("T")


def versions_in(folder: str) -> list[str]:
    """The versions shipped as ``data/<folder>/<folder>_<version>.json`` (e.g. ``["v1"]``)."""
    return [n[len(folder) + 1 :] for n in _packaged_names(folder, ".json") if n.startswith(f"{folder}_")]


@functools.lru_cache(maxsize=None)
def _packaged_version(folder: str, version: str, parse: Callable[[dict[str, Any], str], tuple[T, ...]]) -> tuple[T, ...]:
    """Parse, validate and cache one shipped version; its ``"version"`` field must match the file name."""
    res, label = _packaged(folder, f"{folder}_{version}.json")
    obj = _load_obj(res, label)
    items = parse(obj, label)
    if obj["version"] != version:
        raise DataError(f'{label}: "version" is {obj["version"]!r} but the file is {folder}_{version}.json; '
                        "make them match")
    return items


def load_versioned(folder: str, what: str, version: str, path: Optional[PathLike],
                   parse: Callable[[dict[str, Any], str], tuple[T, ...]]) -> list[T]:
    """The items of the user file at ``path``, else of the shipped ``version`` (cached), parsed by ``parse(obj,
    label)``; an unknown version is a :class:`DataError` naming ``what`` and the closest shipped version."""
    if path is not None:
        res, label = _user_file(path)
        return list(parse(_load_obj(res, label), label))
    versions = versions_in(folder)
    if version not in versions:
        raise DataError(f"persona_vectors/data/{folder}: no {what} version {version!r}; {_suggest(version, versions)}")
    return list(_packaged_version(folder, version, parse))
