"""Parsers from validated JSON objects to records, one per kind of file.

Each parser checks the fields of its kind: assistant prompts, roles, questions, fact sets and their variants
(:func:`_check_variant`), finetune conversations and metadata.
"""

from __future__ import annotations

import json
from typing import Any

from ._reading import _bool, _get, _list, _normalise_text, _opt_str, _str, _str_list
from .schema import AssistantPrompt, DataError, Fact, FactSet, MIN_ROLE_PROMPTS, QUESTION_SPLITS, QUESTION_TOPICS, Question, ROLE_CATEGORIES, Role, _CHAT_ROLES, _NAME_RE

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
