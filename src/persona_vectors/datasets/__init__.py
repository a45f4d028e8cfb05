"""Persona data shipped with :mod:`persona_vectors`, with validated loaders.

Everything in ``persona_vectors/data`` is plain JSON / JSONL that carries a
top-level ``"schema_version": 1``.  This package is the only supported way to
read it: every loader validates the file on first use and raises
:class:`DataError` (a :class:`ValueError`) with a one-line message that names
the offending file and says how to fix it.  Parsed results of packaged files
are cached with :func:`functools.lru_cache`; loaders hand out fresh lists (and
fresh dicts for conversations/metadata), and all record types are frozen
dataclasses holding tuples, so callers cannot corrupt the cache.

Shipped data
------------
``assistant_prompts.json``
    Neutral "be the assistant" conditions (see :class:`AssistantPrompt`).
``roles.json``
    ~140 persona archetypes in nine categories (see :data:`ROLE_CATEGORIES`),
    each with at least three second-person system prompts and a few short
    aliases that can be used as identity read-out candidates.
``questions.json``
    Open-ended questions in two disjoint splits: ``extraction`` (used to build
    persona directions) and ``evaluation`` (held out), each tagged with one of
    :data:`QUESTION_TOPICS`.
``facts/*.json``
    First-person biographical fact sets (:class:`FactSet`).  Variants
    (``base`` not null) copy their base set verbatim except for the answers of
    the facts listed in ``swapped_ids``, which must be marked ``cultural``.
``coauthors/coauthors_v1.json``
    Coauthor lists of well-known scientists in several fields, each coauthor
    with one joint work as evidence (:class:`Scientist`, :class:`Coauthor`;
    :func:`load_coauthors`).  Written from memory by an AI model; the file's
    ``sources`` says so and marks what was checked.
``dishes/dishes_v1.json``
    Dishes with their cuisine for the date-gradient experiment: a balanced
    read-out list (12 Israeli, 12 international) and a table that classifies
    sampled answers (:class:`Dish`; :func:`load_dishes`,
    :func:`classify_cuisine`).  Contested attributions are marked
    ``ambiguous`` with a note; written from memory by an AI model.
``finetune/*.jsonl`` (+ ``NAME.meta.json``)
    Small chat fine-tuning sets, one ``{"messages": [...]}`` conversation per
    line.  ``voyager_telemetry`` is generated from
    :func:`voyager_distance_au`; the metadata sidecar documents the rest.

Your own files
--------------
``load_roles``, ``load_questions``, ``load_assistant_prompts``,
``load_fact_set``, ``load_finetune_dataset`` and ``load_finetune_meta`` accept
``path=`` to read a user file with exactly the same validation;
:func:`load_json_file` validates any of these JSON files and returns the raw
dict.  :func:`load_coauthors` and :func:`load_dishes` take ``path=`` too.
"""

from __future__ import annotations

from .schema import (
    AssistantPrompt,
    Conversation,
    DataError,
    Fact,
    FactSet,
    MIN_ROLE_PROMPTS,
    PathLike,
    QUESTION_SPLITS,
    QUESTION_TOPICS,
    Question,
    ROLE_CATEGORIES,
    Role,
    SCHEMA_VERSION,
)
from ._reading import (
    _data_root,
)
from .catalogue import (
    get_role,
    load_assistant_prompts,
    load_questions,
    load_roles,
    role_categories,
)
from .coauthors import (
    Coauthor,
    MIN_COAUTHORS,
    Scientist,
    list_coauthor_versions,
    load_coauthors,
)
from .dishes import (
    Dish,
    classify_cuisine,
    classify_dish,
    list_dish_versions,
    load_dishes,
    read_out_candidates,
)
from .facts import (
    list_fact_sets,
    load_fact_set,
)
from .finetuning import (
    AU_KM,
    VOYAGER_1_ANCHORS,
    format_voyager_distance,
    list_finetune_datasets,
    load_finetune_dataset,
    load_finetune_meta,
    voyager_distance_au,
)
from .validate import (
    load_json_file,
)

__all__ = [
    "AU_KM",
    "AssistantPrompt",
    "Coauthor",
    "Conversation",
    "DataError",
    "Dish",
    "Fact",
    "FactSet",
    "MIN_COAUTHORS",
    "QUESTION_SPLITS",
    "QUESTION_TOPICS",
    "Question",
    "ROLE_CATEGORIES",
    "Role",
    "SCHEMA_VERSION",
    "Scientist",
    "VOYAGER_1_ANCHORS",
    "classify_cuisine",
    "classify_dish",
    "format_voyager_distance",
    "get_role",
    "list_coauthor_versions",
    "list_dish_versions",
    "list_fact_sets",
    "list_finetune_datasets",
    "load_assistant_prompts",
    "load_coauthors",
    "load_dishes",
    "load_fact_set",
    "load_finetune_dataset",
    "load_finetune_meta",
    "load_json_file",
    "load_questions",
    "load_roles",
    "read_out_candidates",
    "role_categories",
    "voyager_distance_au",
]
