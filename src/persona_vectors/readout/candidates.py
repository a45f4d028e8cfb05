"""The shipped, versioned candidate files: balanced identity candidate sets and user-question controls.

:func:`load_candidate_set` reads ``data/identity/candidates_<name>.json`` (or a user file) into a validated
:class:`CandidateSet` (groups, held-back distractor groups, overlap checks); :func:`load_user_controls` reads
the control questions of :func:`~persona_vectors.readout.user_readout_with_controls`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "CandidateSet",
    "UserControls",
    "available_candidate_sets",
    "load_candidate_set",
    "load_user_controls",
]


# =============================================================================================== candidate sets
_CANDIDATE_SET_SCHEMA = "persona_vectors.identity_candidates/1"


_USER_CONTROLS_SCHEMA = "persona_vectors.user_controls/1"


def _identity_data_dir() -> Any:
    from ..datasets import _data_root

    return _data_root().joinpath("identity")


def _available(prefix: str) -> list[str]:
    try:
        names = [f.name for f in _identity_data_dir().iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n[len(prefix) + 1 : -5] for n in names if n.startswith(prefix + "_") and n.endswith(".json"))


def available_candidate_sets() -> list[str]:
    """Names of the shipped identity candidate sets (``data/identity/candidates_<name>.json``)."""
    return _available("candidates")


def _read_json_file(name: str | os.PathLike[str], kind: str) -> tuple[dict[str, Any], str]:
    """A shipped ``<kind>_<name>.json`` (by name) or a user file (a path ending in .json)."""
    from ..datasets import DataError

    text_name = os.fspath(name)
    if text_name.endswith(".json") or os.sep in text_name or "/" in text_name:
        path = Path(text_name)
        label = str(path)
        if not path.is_file():
            raise DataError(f"{label}: no such file; pass a shipped set name "
                            f"({', '.join(_available(kind)) or 'none shipped'}) or the path of a JSON file")
        raw = path.read_text(encoding="utf-8")
    else:
        res = _identity_data_dir().joinpath(f"{kind}_{text_name}.json")
        label = f"persona_vectors/data/identity/{kind}_{text_name}.json"
        if not res.is_file():
            what = {"candidates": "candidate set", "user_controls": "user-controls set"}.get(kind, kind)
            raise DataError(f"unknown {what} {text_name!r}; available: {', '.join(_available(kind)) or 'none'} "
                            "(or pass the path of a JSON file)")
        raw = res.read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError(f"{label}: not valid JSON ({err.msg} at line {err.lineno}); fix the file") from None
    if not isinstance(data, dict):
        raise DataError(f"{label}: the top level must be a JSON object; see candidates_v1.json for the layout")
    return data, label


def _string_list(value: Any, what: str, label: str, min_len: int = 1) -> tuple[str, ...]:
    from ..datasets import DataError

    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise DataError(f"{label}: {what} must be a list of strings; fix the file")
    bad = [x for x in value if not x.strip() or x != x.strip()]
    if bad:
        raise DataError(f"{label}: {what} has an empty entry or one with surrounding whitespace ({bad[0]!r}); "
                        "strip it")
    if len(value) < min_len:
        raise DataError(f"{label}: {what} needs at least {min_len} entries, got {len(value)}")
    return tuple(value)


def _overlap_errors(names: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(duplicates, (prefix, longer) pairs), compared case-insensitively."""
    folded = [n.casefold() for n in names]
    dups = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1})
    pairs = []
    for i, fa in enumerate(folded):
        for j, fb in enumerate(folded):
            if i != j and fa != fb and fb.startswith(fa):
                pairs.append((names[i], names[j]))
    return dups, pairs


@dataclass(frozen=True)
class CandidateSet:
    """A balanced, versioned identity candidate set: named groups of equal size, plus held-back distractors.

    ``groups`` (in file order) are what :func:`group_readout` scores; ``distractors`` are extra groups of
    the same size that the robustness check adds one at a time. ``counts_as[d]`` names the group whose kind
    distractor ``d`` is (its mass then counts toward that group: more candidates of a rival kind, the
    situation where an unbalanced list changes the answer); a distractor without it is a group of its own. ``questions`` and ``prefix`` are the set's
    default read-out prompts ("Who are you?" → "I am ..."). ``token_lengths`` records each candidate's
    scored token count under the tokenizer named in the file (for documentation; checked by the tests).
    Validation (see :meth:`validate`): at least two groups, every group and distractor group the same size
    (at least two), no empty or whitespace-padded names, no duplicates and no candidate a string prefix of
    another (case-insensitive, across groups and distractors), and recorded token lengths within
    ``max_token_spread`` of each other inside every group.
    """

    name: str
    groups: dict[str, tuple[str, ...]]
    distractors: dict[str, tuple[str, ...]]
    questions: tuple[str, ...] = ("Who are you?",)
    counts_as: dict[str, str] | None = None
    prefix: str = "I am"
    token_lengths: dict[str, int] | None = None
    max_token_spread: int = 1
    description: str = ""
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_groups(cls, groups: Mapping[str, Sequence[str]], distractors: Mapping[str, Sequence[str]] | None = None,
                    *, counts_as: Mapping[str, str] | None = None, name: str = "custom",
                    questions: Sequence[str] = ("Who are you?",), prefix: str = "I am",
                    token_lengths: Mapping[str, int] | None = None, max_token_spread: int = 1) -> "CandidateSet":
        """A validated set from in-memory groups (e.g. ``{"ai": [...], "human": [...]}``)."""
        return cls(name, {str(g): tuple(c) for g, c in groups.items()},
                   {str(g): tuple(c) for g, c in (distractors or {}).items()}, tuple(questions),
                   None if counts_as is None else dict(counts_as), prefix=prefix,
                   token_lengths=None if token_lengths is None else dict(token_lengths),
                   max_token_spread=max_token_spread)

    def validate(self) -> None:
        """Raise :class:`~persona_vectors.datasets.DataError` (a ValueError) naming the first problem found."""
        from ..datasets import DataError

        label = self.source
        if not isinstance(self.groups, Mapping) or len(self.groups) < 2:
            raise DataError(f"{label}: a candidate set needs at least two groups")
        for g, cs in list(self.groups.items()) + list(self.distractors.items()):
            _string_list(list(cs), f"group {g!r}", label, min_len=2)
        clash = sorted(set(self.groups) & set(self.distractors))
        if clash:
            raise DataError(f"{label}: {clash[0]!r} is both a group and a distractor group; rename one")
        for d, g in (self.counts_as or {}).items():
            if d not in self.distractors:
                raise DataError(f"{label}: counts_as names {d!r}, which is not a distractor group")
            if g not in self.groups:
                raise DataError(f"{label}: distractor group {d!r} counts as {g!r}, which is not a group "
                                f"({', '.join(self.groups)})")
        sizes = {g: len(cs) for g, cs in list(self.groups.items()) + list(self.distractors.items())}
        if len(set(sizes.values())) > 1:
            n = len(next(iter(self.groups.values())))
            shown = ", ".join(f"{g}={k}" for g, k in sizes.items())
            raise DataError(f"{label}: group sizes differ ({shown}); every group and distractor group needs the same "
                            f"number of candidates (e.g. {n}) so no group wins by having more members")
        every = [c for cs in list(self.groups.values()) + list(self.distractors.values()) for c in cs]
        dups, pairs = _overlap_errors(every)
        if dups:
            raise DataError(f"{label}: duplicate candidate(s) {dups} (case-insensitive); list each candidate once")
        if pairs:
            a, b = pairs[0]
            raise DataError(f"{label}: candidate {a!r} is a string prefix of {b!r} (their answers share those tokens, "
                            f"so one's score is contained in the other's); rename one of them")
        _string_list(list(self.questions), "questions", label)
        if not isinstance(self.prefix, str) or not self.prefix.strip():
            raise DataError(f"{label}: prefix must be a non-empty string such as 'I am'")
        if self.token_lengths is not None:
            missing = [c for c in every if c not in self.token_lengths]
            extra = [c for c in self.token_lengths if c not in every]
            if missing or extra:
                raise DataError(f"{label}: token_lengths must list exactly the candidates "
                                f"({'missing ' + repr(missing[0]) if missing else 'unknown ' + repr(extra[0])})")
            for g, cs in list(self.groups.items()) + list(self.distractors.items()):
                ls = [int(self.token_lengths[c]) for c in cs]
                if max(ls) - min(ls) > self.max_token_spread:
                    shown = ", ".join(f"{c}={n}" for c, n in zip(cs, ls))
                    raise DataError(f"{label}: group {g!r} mixes token lengths {min(ls)}..{max(ls)} ({shown}), more "
                                    f"than max_token_spread={self.max_token_spread}; pick names of similar length")

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(self.groups)

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every group candidate, group by group in file order (distractors excluded)."""
        return tuple(c for cs in self.groups.values() for c in cs)

    @property
    def group_size(self) -> int:
        return len(next(iter(self.groups.values())))

    def scored_as(self, distractor: str) -> str:
        """The group a distractor group's mass counts toward (itself when it has no ``counts_as``)."""
        return (self.counts_as or {}).get(distractor, distractor)

    def group_of(self, candidate: str) -> str:
        """The group (or distractor group) a candidate belongs to (KeyError if none)."""
        for g, cs in list(self.groups.items()) + list(self.distractors.items()):
            if candidate in cs:
                return g
        raise KeyError(f"{candidate!r} is not in candidate set {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The file layout (``schema``, ``name``, ``groups``, ``distractors``, ...)."""
        d: dict[str, Any] = {"schema": _CANDIDATE_SET_SCHEMA, "name": self.name, "description": self.description,
                             "prefix": self.prefix, "questions": list(self.questions),
                             "max_token_spread": self.max_token_spread,
                             "groups": {g: list(c) for g, c in self.groups.items()},
                             "distractors": {g: ({"candidates": list(c), "counts_as": self.counts_as[g]}
                                                 if self.counts_as and g in self.counts_as else list(c))
                                             for g, c in self.distractors.items()}}
        if self.token_lengths is not None:
            d["token_lengths"] = {"counts": dict(self.token_lengths)}
        return d


def load_candidate_set(name: str | os.PathLike[str] = "v1") -> CandidateSet:
    """Load and validate an identity candidate set: a shipped name (``"v1"``) or the path of a JSON file.

    File layout (``data/identity/candidates_v1.json``)::

        {"schema": "persona_vectors.identity_candidates/1", "name": "v1", "description": "...",
         "prefix": "I am", "questions": ["Who are you?", ...], "max_token_spread": 1,
         "groups": {"ai": ["an AI assistant", ...], "human": [...], ...},
         "distractors": {"nature_cosmic_extra": {"counts_as": "nature_cosmic", "candidates": [...]}, ...},
         "token_lengths": {"tokenizer": "...", "prefix": "I am", "counts": {"an AI assistant": 3, ...}}}

    Errors (:class:`~persona_vectors.datasets.DataError`, one line naming the file and the fix): unknown
    name, invalid JSON, unequal group sizes, duplicates, a candidate that is a string prefix of another,
    a group whose recorded token lengths spread more than ``max_token_spread``.
    """
    from ..datasets import DataError

    data, label = _read_json_file(name, "candidates")
    schema = data.get("schema", _CANDIDATE_SET_SCHEMA)
    if schema != _CANDIDATE_SET_SCHEMA:
        raise DataError(f"{label}: schema {schema!r} is not {_CANDIDATE_SET_SCHEMA!r}")
    groups = data.get("groups")
    if not isinstance(groups, dict):
        raise DataError(f"{label}: 'groups' must be an object mapping group names to candidate lists")
    raw_distractors = data.get("distractors", {})
    if not isinstance(raw_distractors, dict):
        raise DataError(f"{label}: 'distractors' must be an object mapping group names to candidate lists")
    distractors: dict[str, Any] = {}
    counts_as: dict[str, str] = {}
    for d, v in raw_distractors.items():
        if isinstance(v, dict):
            if not isinstance(v.get("counts_as", ""), str):
                raise DataError(f"{label}: distractors[{d!r}].counts_as must be a group name")
            if v.get("counts_as"):
                counts_as[d] = v["counts_as"]
            v = v.get("candidates")
        distractors[d] = v
    tl = data.get("token_lengths")
    counts = None
    if tl is not None:
        counts = tl.get("counts") if isinstance(tl, dict) else None
        if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
            raise DataError(f"{label}: 'token_lengths.counts' must map candidates to integer token counts")
    questions = data.get("questions", ["Who are you?"])
    prefix = data.get("prefix", "I am")
    spread = data.get("max_token_spread", 1)
    if not isinstance(spread, int) or spread < 0:
        raise DataError(f"{label}: 'max_token_spread' must be a non-negative integer")
    for what, v in (("groups", groups), ("distractors", distractors)):
        for g, cs in v.items():
            _string_list(cs, f"{what}[{g!r}]", label)
    _string_list(questions, "questions", label)
    return CandidateSet(str(data.get("name", name)), {g: tuple(c) for g, c in groups.items()},
                        {g: tuple(c) for g, c in distractors.items()}, tuple(questions), counts_as or None,
                        prefix=str(prefix), token_lengths=counts, max_token_spread=spread,
                        description=str(data.get("description", "")), source=label)


def _as_candidate_set(candidate_set: "CandidateSet | Mapping[str, Sequence[str]] | str | os.PathLike[str]") -> CandidateSet:
    if isinstance(candidate_set, CandidateSet):
        return candidate_set
    if isinstance(candidate_set, Mapping):
        return CandidateSet.from_groups(candidate_set)
    return load_candidate_set(candidate_set)


# =============================================================================================== user-question controls
@dataclass(frozen=True)
class UserControls:
    """Questions for :func:`user_readout_with_controls`: ``user`` (about the user) and ``controls`` by kind
    (``non_self``: a named person unrelated to the conversation; ``third_person``: a third party), each a
    tuple of ``(question, answer prefix)``; ``candidates`` is the default candidate list."""

    name: str
    user: tuple[tuple[str, str], ...]
    controls: dict[str, tuple[tuple[str, str], ...]]
    candidates: tuple[str, ...]
    description: str = ""
    source: str = "<memory>"

    def items(self) -> list[tuple[str, str, str]]:
        """Every ``(kind, question, prefix)``: the user questions first, then each control kind."""
        return [("user", q, p) for q, p in self.user] + [(k, q, p) for k, qs in self.controls.items() for q, p in qs]


def load_user_controls(name: str | os.PathLike[str] = "v1") -> UserControls:
    """Load the user read-out questions and controls (``data/identity/user_controls_v1.json`` or a path).

    Layout: ``{"schema": "persona_vectors.user_controls/1", "name": "v1", "user": [{"question", "prefix"}, ...],
    "controls": {"non_self": [...], "third_person": [...]}, "candidates": [...]}``.
    """
    from ..datasets import DataError

    data, label = _read_json_file(name, "user_controls")
    schema = data.get("schema", _USER_CONTROLS_SCHEMA)
    if schema != _USER_CONTROLS_SCHEMA:
        raise DataError(f"{label}: schema {schema!r} is not {_USER_CONTROLS_SCHEMA!r}")

    def pairs(v: Any, what: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(v, list) or not v:
            raise DataError(f"{label}: {what} must be a non-empty list of {{'question', 'prefix'}} objects")
        out = []
        for it in v:
            if not (isinstance(it, dict) and isinstance(it.get("question"), str) and isinstance(it.get("prefix"), str)
                    and it["question"].strip() and it["prefix"].strip()):
                raise DataError(f"{label}: every entry of {what} needs a non-empty 'question' and 'prefix', got {it!r}")
            out.append((it["question"], it["prefix"]))
        return tuple(out)

    controls = data.get("controls")
    if not isinstance(controls, dict) or not controls:
        raise DataError(f"{label}: 'controls' must map control kinds (e.g. 'non_self') to question lists")
    if "user" in controls:
        raise DataError(f"{label}: 'user' is reserved for the user questions; rename that control kind")
    cands = _string_list(data.get("candidates"), "candidates", label, min_len=2)
    dups, pre = _overlap_errors(cands)
    if dups or pre:
        what = f"duplicate {dups[0]!r}" if dups else f"{pre[0][0]!r} is a string prefix of {pre[0][1]!r}"
        raise DataError(f"{label}: candidates: {what}; fix the list")
    return UserControls(str(data.get("name", name)), pairs(data.get("user"), "'user'"),
                        {k: pairs(v, f"controls[{k!r}]") for k, v in controls.items()}, cands,
                        str(data.get("description", "")), label)
