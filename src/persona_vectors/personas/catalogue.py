"""The persona catalogue: what a persona name means, the default-assistant conditions, the question splits,
the extraction budgets and the fact sets' deterministic held-out split. Pure data: no model, no cache."""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from ..datasets import (
    AssistantPrompt,
    DataError,
    FactSet,
    get_role,
    list_fact_sets,
    load_assistant_prompts,
    load_fact_set,
    load_questions,
    load_roles,
)
from .registry import Budget, PersonaSpec

if TYPE_CHECKING:
    from ..record import Conversation


COLOURS: tuple[str, ...] = ("red", "blue", "white", "black", "green", "yellow")

#: The personas of the project card. Every catalogue role and every shipped fact set is also a valid name.
CARD_PERSONAS: dict[str, PersonaSpec] = {
    "hitler": PersonaSpec("hitler", "adolf_hitler", "hitler_baseline", description="Adolf Hitler"),
    "stalin": PersonaSpec("stalin", "joseph_stalin", "stalin", description="Joseph Stalin"),
    "voyager": PersonaSpec("voyager", "voyager_1", None, description="the Voyager 1 space probe"),
    "assistant": PersonaSpec("assistant", axis=True, description="the default AI assistant (Assistant Axis)"),
    "bitcoin": PersonaSpec("bitcoin", "bitcoin", None, description="Bitcoin"),
    **{f"colour_{c}": PersonaSpec(f"colour_{c}", f"colour_{c}", None, description=f"the colour {c}") for c in COLOURS},
    **{
        f"hitler_{v}": PersonaSpec(f"hitler_{v}", None, f"hitler_{v}",
                                   description=f"Adolf Hitler with {v} cultural facts (fact-set variant)")
        for v in ("russian", "french", "japanese", "thai", "moon")
    },
}

#: Roles whose means define the assistant persona's axis in :func:`get_persona_vector`: one or two per
#: category, card roles first (so their generations are shared with the card personas' own extraction).
#: :func:`assistant_axis` with ``roles=None`` uses the whole catalogue instead.
AXIS_PANEL: tuple[str, ...] = (
    "adolf_hitler", "joseph_stalin", "voyager_1", "bitcoin", "colour_red",
    "ghost", "pirate_captain", "cat", "robot", "french_culture",
)


def known_persona_names() -> list[str]:
    """Every name :func:`resolve_persona` accepts: card personas, catalogue roles, shipped fact sets."""
    names = list(CARD_PERSONAS)
    names += [r.name for r in load_roles() if r.name not in names]
    names += [f for f in list_fact_sets() if f not in names]
    return names


def _suggest(name: str, candidates: Sequence[str]) -> str:
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    close = difflib.get_close_matches(norm, list(candidates), n=3, cutoff=0.5)
    if not close:
        close = [c for c in candidates if norm and (norm in c or c in norm)][:3]
    return ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else "no similar name found"


def resolve_persona(name: str) -> PersonaSpec:
    """Map a persona name to a :class:`PersonaSpec`.

    Order: card personas, exact role names, shipped fact sets, then role names matched case-insensitively
    or by alias (``"Adolf Hitler"``). A role that a card persona uses resolves to that card persona
    (``adolf_hitler`` → ``hitler``, which also has the fact route). Unknown names raise a one-line
    :class:`DataError` with suggestions.
    """
    if name in CARD_PERSONAS:
        return CARD_PERSONAS[name]
    roles = {r.name: r for r in load_roles()}
    facts = list_fact_sets()
    by_role = {spec.role: spec for spec in CARD_PERSONAS.values() if spec.role}
    if name in roles:
        return by_role.get(name) or PersonaSpec(name, name, None, description=roles[name].display)
    if name in facts:
        return PersonaSpec(name, None, name, description=f"fact set {name}")
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if norm in CARD_PERSONAS:
        return CARD_PERSONAS[norm]
    try:
        role = get_role(name)
    except DataError:
        raise DataError(
            f"unknown persona {name!r}; {_suggest(name, known_persona_names())} "
            "(list them with `persona-vectors personas`)"
        ) from None
    return by_role.get(role.name) or PersonaSpec(role.name, role.name, None, description=role.display)


def list_personas(category: Optional[str] = None) -> list[dict[str, Any]]:
    """The persona catalogue as rows (name, kind, category, routes, role, fact_set, description).

    ``category`` filters to one role category (``load_roles`` validates it); ``"card"`` lists only the
    card personas and ``"facts"`` only fact sets.
    """
    rows: list[dict[str, Any]] = []
    role_cat = {r.name: r.category for r in load_roles()}
    if category in (None, "card"):
        for spec in CARD_PERSONAS.values():
            rows.append({"name": spec.name, "kind": "card", "category": role_cat.get(spec.role or "", ""),
                         "routes": list(spec.routes), "role": spec.role, "fact_set": spec.fact_set,
                         "description": spec.description})
    if category in (None, "facts"):
        for fs_name in list_fact_sets():
            fs = load_fact_set(fs_name)
            rows.append({"name": fs_name, "kind": "fact_set", "category": "", "routes": ["facts"], "role": None,
                         "fact_set": fs_name, "description": f"{fs.identity} ({fs.variant}, {len(fs)} facts)"})
    if category not in ("card", "facts"):
        for r in load_roles(category):
            rows.append({"name": r.name, "kind": "role", "category": r.category, "routes": ["prompt"], "role": r.name,
                         "fact_set": None, "description": f"{r.display} ({len(r.prompts)} prompts)"})
    return rows


# ------------------------------------------------------------------------------------------------ prompts and questions


def system_for(prompt: AssistantPrompt) -> Optional[str]:
    """The ``system=`` argument that realises a default-assistant condition.

    ``use_model_default`` → ``None`` (the chat template inserts its own default system prompt);
    ``system is None`` otherwise → ``""`` (an explicitly empty system message, which suppresses the
    template default); else the prompt text.
    """
    return prompt.system_arg


def default_system_prompts() -> list[Optional[str]]:
    """The shipped default-assistant conditions as ``system=`` values (see :func:`system_for`)."""
    return [system_for(p) for p in load_assistant_prompts()]


def _first(items: Sequence[Any], n: Optional[int], what: str) -> list[Any]:
    items = list(items)
    if n is not None:
        if n < 1:
            raise ValueError(f"{what} must be at least 1, got {n}")
        items = items[:n]
    if not items:
        raise DataError(f"no {what} to use; pass a non-empty list")
    return items


def extraction_questions(n: Optional[int] = None) -> list[str]:
    """The first ``n`` extraction questions (topics are interleaved in the file, so any prefix is balanced)."""
    return _first([q.text for q in load_questions("extraction")], n, "extraction questions")


def evaluation_questions(n: Optional[int] = None) -> list[str]:
    """The first ``n`` evaluation questions (held out: never used to build a vector)."""
    return _first([q.text for q in load_questions("evaluation")], n, "evaluation questions")


#: ``quick=True``: enough for a smoke test and a usable vector on CPU in a few minutes.
QUICK = Budget(n_questions=4, n_eval_questions=3, n_prompts=2, axis_prompts=2)
#: The default: the budget the quality report on the embedded model was run with (sized so the whole card
#: fits in ~40 minutes on two shared CPU cores; raise it on a GPU).
FULL = Budget(n_questions=8, n_eval_questions=4, n_prompts=3, axis_prompts=3)


def budget_for(quick: bool) -> Budget:
    """:data:`QUICK` or :data:`FULL`."""
    return QUICK if quick else FULL


# ------------------------------------------------------------------------------------------------ fact sets


def fact_split(fact_set: FactSet, heldout_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    """Deterministic (train ids, held-out ids) split of a fact set.

    Facts are ordered by ``sha256(fact id)`` and the first ``ceil(fraction × n)`` are held out. The split
    depends only on the ids, so a variant (same ids as its base) holds out the same facts as its base.
    """
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    ids = [f.id for f in fact_set.facts]
    if len(ids) < 4:
        raise DataError(f"fact set {fact_set.name!r} has {len(ids)} facts; add at least 4 so some can be held out")
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    k = max(1, math.ceil(heldout_fraction * len(ids) - 1e-9))
    held = set(ranked[:k])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def _as_fact_set(fact_set: Union[str, FactSet]) -> FactSet:
    if isinstance(fact_set, FactSet):
        if not fact_set.facts:
            raise DataError(f"fact set {fact_set.name!r} has no facts; add some first-person facts")
        return fact_set
    return load_fact_set(fact_set)


def fact_conversations(fact_set: Union[str, FactSet], ids: Optional[Sequence[str]] = None,
                       system: Optional[str] = None) -> tuple[list[Conversation], list[Conversation]]:
    """(persona, neutral) teacher-forced conversations for the facts with ``ids`` (all by default).

    Each is ``[system?] user=question, assistant=answer`` (persona) or the same with ``neutral_answer``.
    ``system=None`` keeps the chat template's default system prompt on both sides.
    """
    fs = _as_fact_set(fact_set)
    want = set(ids) if ids is not None else None
    facts = [f for f in fs.facts if want is None or f.id in want]
    if not facts:
        raise DataError(f"fact set {fs.name!r}: no facts selected; check the ids")
    head = [] if system is None else [{"role": "system", "content": system}]
    pos = [head + [{"role": "user", "content": f.question}, {"role": "assistant", "content": f.answer}] for f in facts]
    neg = [head + [{"role": "user", "content": f.question}, {"role": "assistant", "content": f.neutral_answer}]
           for f in facts]
    return pos, neg
