"""The entry points: a named persona's vector (:func:`get_persona_vector`) and its held-out quality
(:func:`extract_persona`), each through the vector cache, with the route chosen from the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..aggregators import get_aggregator
from ..models import PersonaModel
from ..sites import Site
from ..vector import PersonaVector
from .catalogue import Budget, PersonaSpec, budget_for, resolve_persona
from .compute import Layers, ProgressFn, _progress_fn, _say, _sites
from .quality import PersonaQuality, persona_quality
from .registry import choose_route, get_route
from .store import CacheArg, VectorCache, _caches, _hash


@dataclass
class PersonaResult:
    """A persona vector and its held-out quality."""

    vector: PersonaVector
    quality: PersonaQuality
    cached: bool = False


def _choose_route(spec: PersonaSpec, route: Optional[str]) -> str:
    """The registered route to extract ``spec`` with (see :func:`.registry.choose_route`)."""
    return choose_route(spec, route)


def _vector_key(model: PersonaModel, spec: PersonaSpec, route: str, method: str, sites: tuple[Site, ...],
                budget: Budget) -> str:
    data, budget_part = get_route(route).cache_key_data(spec, budget)
    return VectorCache.key(route=route, persona=spec.name, method=method, sites=[str(s) for s in sites],
                           data=_hash(data), questions=budget_part, model=model.weights_key())


def get_persona_vector(
    model: PersonaModel,
    name: str,
    route: Optional[str] = None,
    *,
    method: str = "mean_diff",
    layers: Layers = "all",
    quick: bool = False,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PersonaVector:
    """The main entry point: a named persona's vector, from the disk cache when it has been built before.

    ``name``: a card persona (:data:`CARD_PERSONAS`), any catalogue role, or any shipped fact set.
    ``route``: a registered route (:mod:`.registry`): ``"prompt"`` (system prompts), ``"facts"``
    (teacher-forced fact set), or ``None`` (the persona's first route: prompt where a role exists). The ``assistant`` persona is the Assistant Axis
    over :data:`AXIS_PANEL`. ``quick`` selects the :data:`QUICK` budget instead of :data:`FULL`.
    """
    return _persona_vector(model, name, route, method=method, layers=layers, quick=quick, cache=cache,
                           progress=progress)[0]


def _persona_vector(
    model: PersonaModel,
    name: str,
    route: Optional[str],
    *,
    method: str,
    layers: Layers,
    quick: bool,
    cache: CacheArg,
    progress: Union[bool, ProgressFn],
) -> tuple[PersonaVector, str, bool]:
    """:func:`get_persona_vector`'s work: ``(vector, cache key, whether it came from the cache)``."""
    get_aggregator(method)
    spec = resolve_persona(name)
    r = _choose_route(spec, route)
    sites = _sites(model, layers)
    budget = budget_for(quick)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    key = _vector_key(model, spec, r, method, sites, budget)
    hit = caches.vectors.load(key, model)
    if hit is not None:
        _say(pf, f"{spec.name}: vector cache hit ({key})")
        return hit, key, True
    vec = get_route(r).build(model, spec, method=method, sites=sites, budget=budget, cache=cache, progress=progress)
    vec = vec.replace(extra={**dict(vec.provenance.extra), "cache_key": key, "quick": quick})
    caches.vectors.save(key, vec)
    return vec, key, False


def extract_persona(
    model: PersonaModel,
    name: str,
    route: Optional[str] = None,
    *,
    method: str = "mean_diff",
    layers: Layers = "all",
    quick: bool = False,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PersonaResult:
    """:func:`get_persona_vector` plus :func:`persona_quality` (both cached)."""
    spec = resolve_persona(name)
    r = _choose_route(spec, route)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    vec, key, was_cached = _persona_vector(model, name, r, method=method, layers=layers, quick=quick, cache=cache,
                                           progress=progress)
    qkey = f"{key}-q{budget_for(quick).n_eval_questions}"
    q_json = caches.vectors.load_json(qkey, "quality")
    if q_json is not None:
        return PersonaResult(vec, PersonaQuality.from_json(q_json), was_cached)
    _say(pf, f"{spec.name}: measuring held-out quality")
    q = persona_quality(model, spec.name, vec, r, quick=quick, cache=cache, progress=progress)
    caches.vectors.save_json(qkey, "quality", q.to_json())
    return PersonaResult(vec, q, was_cached)
