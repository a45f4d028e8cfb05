"""Vectors by name, and a request's ``steering`` items turned into checked steering specs.

Vectors come only from the served directory (``--vectors DIR``: one saved vector per sub-directory, named by
the sub-directory) or the persona catalogue (:func:`persona_vectors.personas.known_persona_names`). A request
names a vector; a path is refused before anything touches the file system. Catalogue vectors are read from
the library's disk cache; ``assistant_axis`` is the Assistant Axis (:data:`AXIS_NAME`: the default assistant's
mean minus the mean over every catalogue role, 3 extraction questions × 1 prompt per role, as the experiments
build it; computed on first use from the cached role answers, minutes on CPU the first time); with
``catalogue="build"`` a missing one is built on first use (minutes to hours
on CPU), with ``"cached"`` (default) the request gets a 400 saying how to build it, with ``"off"`` the
catalogue is not served.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from ..sites import Site
from ..vector import PersonaVector
from .schema import NAME_RE, RequestError, SteeringItem

log = logging.getLogger(__name__)

CatalogueMode = Literal["cached", "build", "off"]
AXIS_NAME = "assistant_axis"
"""The built-in direction: the Assistant Axis (default assistant minus the mean of every catalogue role's mean)."""


@dataclass(frozen=True)
class ResolvedSpec:
    """One steering item, resolved: the vector, its sites and every setting as the library takes them."""

    name: str
    vector: PersonaVector
    alpha: float
    sites: tuple[Site, ...]
    relative: bool
    operator: str
    threshold: Optional[float]
    cap: str
    positions: str

    def group_key(self) -> tuple[Any, ...]:
        """Requests whose specs share this key can run as rows of one batch (per-row vector and alpha)."""
        return (self.operator, tuple(str(s) for s in self.sites), self.relative, self.threshold, self.cap,
                self.positions)

    def to_json(self) -> dict[str, Any]:
        """The spec as echoed in a response."""
        return {"vector": self.name, "alpha": self.alpha, "layers": [s.layer for s in self.sites],
                "relative": self.relative, "operator": self.operator, "threshold": self.threshold,
                "cap": self.cap, "positions": self.positions}


@dataclass
class VectorRegistry:
    """The vectors a server may use, by name (thread-safe; catalogue vectors are loaded lazily)."""

    model: Any
    directory: Optional[Path] = None
    catalogue: CatalogueMode = "cached"
    allow_other_model: bool = False
    default_layer: Optional[int] = None
    served: dict[str, PersonaVector] = field(default_factory=dict)
    _catalogue_hits: dict[str, PersonaVector] = field(default_factory=dict)
    _thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _built: Optional[dict[str, bool]] = None
    _names: Optional[list[str]] = None

    def __post_init__(self) -> None:
        if self.default_layer is None:
            self.default_layer = self.model.n_layers // 2
        if self.directory is not None:
            self.load_directory(self.directory)

    def load_directory(self, directory: Path) -> None:
        """Load every saved vector under ``directory`` (sub-directory name = vector name); skip unusable ones."""
        from ..io import load_vector

        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"--vectors {root}: not a directory; pass a directory of saved vectors")
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if not NAME_RE.match(sub.name):
                continue
            try:
                self.served[sub.name] = load_vector(sub, self.model, allow_other_model=self.allow_other_model)
            except (ValueError, OSError) as err:
                log.warning("skipping %s: %s", sub, err)

    # ------------------------------------------------------------------------------------------ lookup
    def catalogue_names(self) -> list[str]:
        """Persona names the catalogue offers, :data:`AXIS_NAME` first (empty when the catalogue is off)."""
        if self.catalogue == "off":
            return []
        if self._names is None:
            from ..personas import known_persona_names

            self._names = [AXIS_NAME] + [n for n in known_persona_names() if n != AXIS_NAME]
        return self._names

    def _catalogue_cached(self, name: str) -> Optional[PersonaVector]:
        """The catalogue vector from the disk cache (default route, all layers; the full budget, else the quick
        one), or None."""
        try:
            from ..personas.api import _choose_route, _vector_key
            from ..personas.catalogue import budget_for, resolve_persona
            from ..personas.compute import _sites
            from ..personas.store import _caches

            spec = resolve_persona(name)
            route, sites, caches = _choose_route(spec, None), _sites(self.model, "all"), _caches(self.model, True)
            for quick in (False, True):
                key = _vector_key(self.model, spec, route, "mean_diff", sites, budget_for(quick))
                vec = caches.vectors.load(key, self.model)
                if vec is not None:
                    return vec
        except Exception as err:  # noqa: BLE001  # a broken cache entry is "not cached"
            log.warning("catalogue lookup of %s failed: %s", name, err)
        return None

    def assistant_axis(self) -> PersonaVector:
        """The Assistant Axis at every layer from :func:`~persona_vectors.personas.role_means` (disk-cached)."""
        from ..datasets import load_roles
        from ..personas import role_means

        log.info("computing %s from the catalogue's role means (cached answers; minutes the first time)", AXIS_NAME)
        rm = role_means(self.model, [r.name for r in load_roles()], n_questions=3, n_prompts=1, layers="all",
                        max_new_tokens=32, progress=False)
        return rm.axis(AXIS_NAME)

    def catalogue_built(self) -> dict[str, bool]:
        """``{catalogue name: whether its vector is on disk}`` (looked up once; later builds are added)."""
        with self._lock:
            known = self._built
        if known is None:
            known = {n: n == AXIS_NAME or self._catalogue_cached(n) is not None for n in self.catalogue_names()}
            with self._lock:
                self._built = known
        with self._lock:
            return {**known, **{n: True for n in self._catalogue_hits}}

    def get(self, name: str, *, build: Optional[Callable[[Callable[[], Any]], Any]] = None) -> PersonaVector:
        """The vector called ``name``; :class:`RequestError` (field ``steering.vector``) if it is not served.

        ``build`` runs a slow catalogue build on the model's worker (only with ``catalogue="build"``).
        """
        if name in self.served:
            return self.served[name]
        with self._lock:
            if name in self._catalogue_hits:
                return self._catalogue_hits[name]
        if name == AXIS_NAME and self.catalogue != "off":
            if build is None:
                raise RequestError("steering.vector", f"{AXIS_NAME} is computed on the model's worker: internal error")
            vec = build(self.assistant_axis)
            with self._lock:
                self._catalogue_hits[name] = vec
            return vec
        if self.catalogue == "off" or name not in self.catalogue_names():
            known = sorted(self.served) + (["catalogue personas (GET /v1/steering/vectors)"] if self.catalogue != "off" else [])
            raise RequestError("steering.vector", f"unknown vector {name!r}: use one of {', '.join(known) or 'none'}")
        vec = self._catalogue_cached(name)
        if vec is None and self.catalogue == "build" and build is not None:
            from ..personas import get_persona_vector

            vec = build(lambda: get_persona_vector(self.model, name, progress=False))
        if vec is None:
            raise RequestError("steering.vector", f"catalogue persona {name!r} is not built for this model yet: run "
                               f"`persona-vectors personas {name}` once (cached on disk), or start the server "
                               "with --catalogue build")
        with self._lock:
            self._catalogue_hits[name] = vec
        return vec

    def listing(self) -> list[dict[str, Any]]:
        """``GET /v1/steering/vectors``: served vectors with sites and provenance, then catalogue names."""
        out: list[dict[str, Any]] = []
        for name, v in sorted(self.served.items()):
            p = v.provenance
            out.append({"name": name, "source": "directory", "layers": list(v.layers), "model_id": p.model_id,
                        "method": p.method, "route": p.route, "n_samples": p.n_samples, "positions": p.positions,
                        "provenance_name": p.name, "built": True})
        built = self.catalogue_built() if self.catalogue != "off" else {}
        for name in self.catalogue_names():
            if name not in self.served:
                out.append({"name": name, "source": "catalogue", "built": built.get(name, False)})
        return out

    # ------------------------------------------------------------------------------------------ resolve
    def sites_for(self, item: SteeringItem, vec: PersonaVector) -> tuple[Site, ...]:
        """The layers to steer: as given, else the vector's only layer, else the server's default layer."""
        n = self.model.n_layers
        if item.layers is not None:
            if not item.layers:
                raise RequestError("steering.layers", "is empty: give at least one layer, e.g. [%d]" % self.default_layer)
            bad = [x for x in item.layers if not 0 <= x < n]
            if bad:
                raise RequestError("steering.layers", f"layer {bad[0]} is out of range: this model has layers 0..{n - 1}")
            sites = tuple(dict.fromkeys(Site(x) for x in item.layers))
        elif len(vec.sites) == 1:
            sites = tuple(vec.sites)
        else:
            sites = (Site(int(self.default_layer)),)  # type: ignore[arg-type]
        missing = [s for s in sites if s not in vec.sites]
        if missing:
            raise RequestError("steering.layers", f"vector {item.vector!r} has no direction at layer "
                               f"{missing[0].layer}: use one of {list(vec.layers)}")
        return sites

    def auto_threshold(self, name: str, vec: PersonaVector, site: Site, run: Callable[[Callable[[], Any]], Any]) -> float:
        """The cap threshold ``'auto'``: :func:`persona_vectors.steer.projection_threshold` (cached per vector/layer)."""
        key = (name, str(site))
        with self._lock:
            if key in self._thresholds:
                return self._thresholds[key]
        from ..steer import projection_threshold

        value = float(run(lambda: projection_threshold(self.model, vec, site, n_questions=2, max_new_tokens=16)))
        with self._lock:
            self._thresholds[key] = value
        return value

    def resolve(self, item: SteeringItem, run: Callable[[Callable[[], Any]], Any]) -> ResolvedSpec:
        """Check one item with the library's :meth:`SteerSpec.validate` and resolve its vector and layers."""
        from ..operators import SteerSpecError
        from ..steer import SteerSpec

        vec = self.get(item.vector, build=run if self.catalogue == "build" or item.vector == AXIS_NAME else None)
        sites = self.sites_for(item, vec)
        threshold: Any = item.threshold
        try:
            SteerSpec(None, item.alpha, layers=[s.layer for s in sites], positions=item.positions,
                      operator=item.operator, relative=item.relative,
                      threshold=None if threshold == "auto" else threshold, cap=item.cap).validate()
        except SteerSpecError as err:
            if not (threshold == "auto" and err.field == "threshold"):
                fix = f"must be one of {', '.join(err.choices)}, got {err.value!r}" if err.choices else err.reason
                raise RequestError(f"steering.{err.field}", fix) from err
        if threshold is not None and item.operator != "cap":
            raise RequestError("steering.threshold", f"only applies to operator 'cap', not {item.operator!r}: drop it")
        if threshold == "auto":
            if len(sites) != 1:
                raise RequestError("steering.threshold", "'auto' needs exactly one layer: pass layers=[L]")
            threshold = self.auto_threshold(item.vector, vec, sites[0], run)
        if threshold is not None and not math.isfinite(float(threshold)):
            raise RequestError("steering.threshold", "must be finite")
        return ResolvedSpec(item.vector, vec, float(item.alpha), sites, bool(item.relative), item.operator,
                            None if threshold is None else float(threshold), item.cap, item.positions)
