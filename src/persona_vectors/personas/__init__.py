"""Named personas: extraction routes, the Assistant Axis, held-out quality, and a disk cache.

Three ways to get a persona direction out of the residual stream, all returning :class:`PersonaVector`:

- **System-prompt route** (Persona Vectors style): the model answers the *extraction* questions under each
  of a role's system prompts and under every default-assistant prompt; its own response tokens are
  recorded; the vector is persona minus default (:func:`role_contrast`, :func:`role_vector`).
- **Fact-conditioned route**: teacher-force a fact set's first-person answers and, as the control, the
  matched neutral answers to the same questions (no generation, fast); persona minus neutral
  (:func:`fact_vector`). A fixed 25 % of the facts is held out for quality (:func:`fact_split`).
- **Assistant Axis**: mean over the default-assistant prompts minus the mean over roles of each role's
  mean (:func:`role_means`, :func:`assistant_axis`).

Quality (:func:`persona_quality`) is measured on data the vector never saw: the *evaluation* question
split for the prompt routes, the held-out facts for the fact route. It reports per-layer AUROC
(:func:`~persona_vectors.extract.separation_auroc`), the direction's norm relative to the mean residual
norm (:func:`~persona_vectors.extract.relative_norms`), and the layer :func:`~persona_vectors.extract.pick_layer`
chooses.

Everything expensive is cached on disk under the library's one cache root (``$PERSONA_VECTORS_CACHE``;
:func:`persona_vectors.models.cache_dir`), per model weights, at three levels, so repeated and overlapping
runs are instant:

- ``generations/<fp>.jsonl`` — the model's greedy reply per (system prompt, question, max_new_tokens);
- ``activations/<fp>/<sites>/`` — per-conversation response-token statistics (mean, norm sum, token
  count) at a site set: roles sharing the default side, fact-set variants sharing 84 of 92 answers and
  subsets of earlier question/prompt selections all hit this cache;
- ``vectors/<fp>/<key>/`` (:class:`VectorCache`) — finished vectors (``PersonaVector.save``) and their
  quality reports, keyed by route, persona, method, sites, data hash, questions, budget and library version.

Progress: every entry point takes ``progress=``. ``True`` (the default) shows tqdm bars on stderr for
the answers being generated and the conversations being recorded (nothing when everything is cached);
``False`` is silent; a callable receives one-line stage messages instead (``"generate batch 2/5 …"``).

>>> model = load_model()                                              # doctest: +SKIP
>>> vec = get_persona_vector(model, "hitler", route="facts")          # doctest: +SKIP
>>> res = extract_persona(model, "voyager", quick=True)               # doctest: +SKIP
>>> res.quality.layer, res.quality.auroc[res.quality.layer]           # doctest: +SKIP

The package's rooms, in import order (each imports only those above it): :mod:`.registry` (the
:class:`Route` protocol and registry), :mod:`.catalogue` (names, prompts, questions, budgets, fact
splits), :mod:`.store` (the disk caches, on :mod:`persona_vectors._infra`), :mod:`.compute` (generation
and recording through the caches, progress), :mod:`.quality`, :mod:`.routes` (the three built-in
routes, registered), :mod:`.prompt_only` (the generation-free ``prompt_only`` route: role vectors read from the
prompt, no answers generated) and :mod:`.api` (the entry points). Adding a route is one class with the
:class:`Route` methods plus one :func:`register_route` call.
"""

from __future__ import annotations

from .registry import Route, get_route, register_route, route_names, unregister_route  # isort: skip
from .catalogue import (
    AXIS_PANEL,
    CARD_PERSONAS,
    FULL,
    QUICK,
    Budget,
    PersonaSpec,
    default_system_prompts,
    evaluation_questions,
    extraction_questions,
    fact_conversations,
    fact_split,
    known_persona_names,
    list_personas,
    resolve_persona,
    system_for,
)
from .store import ActivationStore, GenerationCache, VectorCache
from .quality import PersonaQuality, persona_quality
from .routes import (
    AxisRoute,
    FactRoute,
    PromptRoute,
    RoleMeans,
    assistant_axis,
    fact_contrast,
    fact_vector,
    missing_answers,
    role_contrast,
    role_means,
    role_vector,
)
from .prompt_only import PromptOnlyRoute, prompt_only_role_means, prompt_only_role_vector
from .api import PersonaResult, extract_persona, get_persona_vector

# Not in __all__, but reachable here as they were from the single module before the split (the CLI, tests and
# experiments use some of them; ``_record_rows`` is the name tests patch).
from .catalogue import COLOURS, budget_for  # noqa: F401
from .store import CACHE_FORMAT, CacheArg, Rows, _WARNED_UNWRITABLE, cache_root, clear_memory_caches  # noqa: F401
from .compute import Layers, ProgressFn, _record_rows, log  # noqa: F401
from .api import _choose_route  # noqa: F401

__all__ = [
    "AXIS_PANEL",
    "ActivationStore",
    "AxisRoute",
    "Budget",
    "CARD_PERSONAS",
    "FULL",
    "FactRoute",
    "GenerationCache",
    "PersonaQuality",
    "PersonaResult",
    "PersonaSpec",
    "PromptOnlyRoute",
    "PromptRoute",
    "QUICK",
    "RoleMeans",
    "Route",
    "VectorCache",
    "assistant_axis",
    "default_system_prompts",
    "evaluation_questions",
    "extract_persona",
    "extraction_questions",
    "fact_contrast",
    "fact_conversations",
    "fact_split",
    "fact_vector",
    "get_persona_vector",
    "get_route",
    "known_persona_names",
    "list_personas",
    "persona_quality",
    "missing_answers",
    "prompt_only_role_means",
    "prompt_only_role_vector",
    "register_route",
    "resolve_persona",
    "role_contrast",
    "role_means",
    "role_vector",
    "route_names",
    "system_for",
    "unregister_route",
]
