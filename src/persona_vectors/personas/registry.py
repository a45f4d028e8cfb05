"""Extraction routes as registered objects: the :class:`Route` protocol, the values it speaks in
(:class:`PersonaSpec`, :class:`Budget`, :class:`PersonaQuality`) and the registry. The lowest room of the
package: it imports none of the others.

A route is one way to turn a persona into contrasting conversations and a vector: the system-prompt route
(the model answers under a role's system prompts vs the default-assistant prompts), the fact route
(teacher-forced first-person facts vs neutral answers) and the Assistant Axis ship registered
(:mod:`persona_vectors.personas.routes`). Adding a route is one class plus one :func:`register_route`;
:func:`~persona_vectors.personas.get_persona_vector`, :func:`~persona_vectors.personas.extract_persona`,
:func:`~persona_vectors.personas.persona_quality`, the catalogue's ``routes`` and the CLI's ``--route`` all
find it here.

>>> class Echo:                                                  # doctest: +SKIP
...     name, aliases = "echo", ()
...     def supports(self, spec): return spec.role is not None
...     def cache_key_data(self, spec, budget): return {"role": spec.role}, None
...     def build(self, model, spec, *, method, sites, budget, cache, progress): ...
...     def spec_from_provenance(self, name, extra): return None
...     def quality(self, model, name, vector, spec, *, n_eval_questions, cache, progress, data=None): ...
>>> register_route(Echo())                                       # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

from ..datasets import DataError
from ..sites import Site

if TYPE_CHECKING:
    from ..models import PersonaModel
    from ..vector import PersonaVector


# ------------------------------------------------------------------------------------------------ the values routes speak in


@dataclass(frozen=True)
class PersonaSpec:
    """What a persona name means: a role (system-prompt route), a fact set (fact route), or the axis.

    ``axis=True`` marks the AI-assistant persona, extracted as the Assistant Axis over :data:`AXIS_PANEL`.
    """

    name: str
    role: Optional[str] = None
    fact_set: Optional[str] = None
    axis: bool = False
    description: str = ""

    @property
    def routes(self) -> tuple[str, ...]:
        """Registered routes this persona supports, default first (built in: ``"prompt"``, ``"facts"``, ``"axis"``)."""
        return routes_for(self)


@dataclass(frozen=True)
class Budget:
    """How much data a persona extraction uses (questions per side, prompts per role, tokens per answer)."""

    n_questions: Optional[int]
    n_eval_questions: Optional[int]
    n_prompts: Optional[int] = None
    axis_prompts: int = 3
    max_new_tokens: int = 32


@dataclass
class PersonaQuality:
    """Held-out quality of a persona vector, per site, and the chosen site.

    ``auroc[site]``: AUROC of the projection separating held-out persona samples (positive) from baseline
    samples. ``rel_norm[site]``: direction norm / mean residual norm of the held-out baseline samples there.
    """

    name: str
    route: str
    layer: Site
    auroc: dict[Site, float]
    rel_norm: dict[Site, float]
    n_persona: int
    n_baseline: int
    heldout: str

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable dict (sites as strings, per-layer maps keyed by layer number)."""
        return {"name": self.name, "route": self.route, "layer": self.layer.layer, "site": str(self.layer),
                "auroc_at_layer": self.auroc[self.layer], "rel_norm_at_layer": self.rel_norm.get(self.layer),
                "auroc": {str(s.layer): v for s, v in self.auroc.items()},
                "rel_norm": {str(s.layer): v for s, v in self.rel_norm.items()},
                "n_persona": self.n_persona, "n_baseline": self.n_baseline, "heldout": self.heldout}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PersonaQuality":
        """Inverse of :meth:`to_json` (resid_post sites)."""
        return cls(d["name"], d["route"], Site(int(d["layer"])), {Site(int(k)): float(v) for k, v in d["auroc"].items()},
                   {Site(int(k)): float(v) for k, v in d["rel_norm"].items()}, int(d["n_persona"]),
                   int(d["n_baseline"]), d["heldout"])


# ------------------------------------------------------------------------------------------------ the protocol and the registry


@runtime_checkable
class Route(Protocol):
    """One extraction route.

    - ``name``: what users pass as ``route=`` / ``--route``; recorded as the vector's ``provenance.route``.
    - ``aliases``: other route names this route answers for the personas it supports (the Assistant Axis
      answers ``"prompt"`` for the ``assistant`` persona).
    - :meth:`supports`: whether a persona can be extracted this way (the catalogue lists the routes of each).
    - :meth:`cache_key_data`: ``(data, budget part)`` the finished vector is keyed on in the vector cache —
      everything that determines it besides route, persona, method, sites and model.
    - :meth:`build`: the conversations and the vector (through :mod:`persona_vectors.extract`, with the
      disk caches of :mod:`persona_vectors.personas.store` injected).
    - :meth:`spec_from_provenance`: the persona a vector of this route was built from, read from its
      ``provenance.extra`` (None: resolve the name instead).
    - :meth:`quality`: held-out quality, on data the vector never saw (``data``: an override of the data
      the route reads, e.g. a user's :class:`~persona_vectors.datasets.FactSet`).
    """

    name: str
    aliases: tuple[str, ...]

    def supports(self, spec: PersonaSpec) -> bool: ...

    def cache_key_data(self, spec: PersonaSpec, budget: Budget) -> tuple[Any, Any]: ...

    def build(self, model: "PersonaModel", spec: PersonaSpec, *, method: str, sites: tuple[Site, ...],
              budget: Budget, cache: Any, progress: Any) -> "PersonaVector": ...

    def spec_from_provenance(self, name: str, extra: dict[str, Any]) -> Optional[PersonaSpec]: ...

    def quality(self, model: "PersonaModel", name: str, vector: "PersonaVector", spec: PersonaSpec, *,
                n_eval_questions: int, cache: Any, progress: Any, data: Any = None) -> PersonaQuality: ...


_ROUTES: dict[str, Route] = {}


def register_route(route: Route) -> Route:
    """Register (or replace) a route under ``route.name``; returns it. Registration order is the order in
    which a persona's routes are listed, so the first registered route a persona supports is its default."""
    if not isinstance(route, Route):
        raise TypeError(f"{route!r} is not a Route: it needs name, aliases, supports, cache_key_data, build, "
                        "spec_from_provenance and quality")
    _ROUTES[route.name] = route
    return route


def unregister_route(name: str) -> None:
    """Remove a registered route (a no-op for an unknown name)."""
    _ROUTES.pop(name, None)


def route_names() -> tuple[str, ...]:
    """The registered routes' names, in registration order."""
    return tuple(_ROUTES)


def _spelled(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def get_route(name: str) -> Route:
    """The registered route ``name``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return _ROUTES[name]
    except (KeyError, TypeError):
        raise ValueError(f"route must be {_spelled(route_names())}, got {name!r}") from None


def routes_for(spec: PersonaSpec) -> tuple[str, ...]:
    """Names of the registered routes that support ``spec``, in registration order."""
    return tuple(r.name for r in _ROUTES.values() if r.supports(spec))


def choose_route(spec: PersonaSpec, route: Optional[str]) -> str:
    """The route to extract ``spec`` with: its first route for ``None``/``"auto"``, else the registered
    route ``route`` names (directly or as an alias) that supports it."""
    supported = routes_for(spec)
    if route in (None, "auto"):
        return supported[0]
    get_route(route)  # type: ignore[arg-type]
    for r in _ROUTES.values():
        if r.supports(spec) and route in (r.name, *r.aliases):
            return r.name
    raise DataError(
        f"persona {spec.name!r} has no {route} route (it supports: {', '.join(supported)}); "
        f"pass route={supported[0]!r} (CLI: --route {supported[0]})"
    )
