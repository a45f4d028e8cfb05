"""Held-out quality of a persona vector: per-site AUROC on data the vector never saw, the direction's norm
relative to the residual norm, and the site :func:`~persona_vectors.extract.pick_layer` chooses. Which data is
held out is the route's business (:meth:`Route.quality <persona_vectors.personas.registry.Route.quality>`);
:class:`~persona_vectors.personas.registry.PersonaQuality`, the value it returns, lives with the route contract."""

from __future__ import annotations

from typing import Optional, Union

from ..datasets import FactSet
from ..extract import pick_layer, relative_norms, separation_auroc
from ..models import PersonaModel
from ..record import Recording
from ..vector import PersonaVector
from .catalogue import budget_for, resolve_persona
from .compute import ProgressFn
from .registry import PersonaQuality, PersonaSpec, get_route
from .store import CacheArg


def _quality_from(name: str, route: str, vec: PersonaVector, pos: Recording, neg: Recording,
                  heldout: str) -> PersonaQuality:
    au = separation_auroc(vec, pos, neg)
    rn = relative_norms(vec, neg)
    return PersonaQuality(name, route, pick_layer(au, rn), au, rn, pos.n_conversations, neg.n_conversations, heldout)


def persona_quality(
    model: PersonaModel,
    name: str,
    vector: PersonaVector,
    route: Optional[str] = None,
    *,
    n_eval_questions: Optional[int] = None,
    quick: bool = False,
    fact_set: Union[str, FactSet, None] = None,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PersonaQuality:
    """Held-out AUROC and relative norm per site of ``vector``, and the site :func:`pick_layer` chooses.

    The route (:mod:`.registry`) holds its data out:

    - ``facts``: the held-out 25 % of the fact set (:func:`fact_split`), persona answers vs neutral answers.
    - ``prompt``: fresh answers to the *evaluation* questions (never used for building) under the role's
      prompts vs under the default-assistant prompts (the prompt counts recorded in the vector's provenance).
    - ``axis``: default-prompt answers (positive) vs the axis roles' answers to the evaluation questions.

    ``n_eval_questions`` defaults to the budget's (:data:`QUICK`/:data:`FULL`). ``route`` defaults to the
    vector's provenance route; ``fact_set`` overrides the fact set (e.g. a user file's :class:`FactSet`).
    """
    extra = dict(vector.provenance.extra)
    route = route or vector.provenance.route
    spec: Optional[PersonaSpec] = None
    if fact_set is not None:
        spec = PersonaSpec(name, None, extra.get("fact_set"))
    elif route:
        spec = get_route(route).spec_from_provenance(name, extra)
    if spec is None:
        spec = resolve_persona(name)
    route = route or spec.routes[0]
    n_ev = n_eval_questions if n_eval_questions is not None else budget_for(quick).n_eval_questions
    return get_route(route).quality(model, name, vector, spec, n_eval_questions=n_ev, cache=cache, progress=progress,
                                    data=fact_set)
