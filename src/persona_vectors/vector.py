"""PersonaVector: an immutable set of per-site directions with provenance, and its arithmetic.

Values, not mutation: ``a + b``, ``a - b``, ``k * a``, ``a.normalized()``, ``a.to("cuda")`` return new
vectors and never touch their operands. Mixing vectors of different models (fingerprints) or different
sites raises. Provenance (model id and weight fingerprint, sites, method, positions, sample count, dataset
hash, library version) travels with the tensor and into the saved file.

>>> v = PersonaVector.load("runs/pirate")              # doctest: +SKIP
>>> (v - w).normalized().cosine(u)[Site(14)]           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from . import _vector_file
from ._vector_file import SCHEMA_VERSION
from .sites import Site, as_sites


def library_version() -> str:
    """Installed version of persona_vectors."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("persona-vectors")
    except PackageNotFoundError:
        return "0+unknown"


class VectorMismatchError(ValueError):
    """Two vectors (or a vector and a model) do not belong together."""


@dataclass(frozen=True)
class Provenance:
    """Where a vector came from. Saved next to the tensor; a file name is not provenance."""

    model_id: str
    fingerprint: str
    d_model: int
    name: str = ""
    method: str = "mean_diff"
    positions: str = "response"
    n_samples: int = 0
    dataset_hash: str = ""
    route: str = ""
    expression: str = ""
    library_version: str = field(default_factory=library_version)
    schema_version: int = SCHEMA_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable dict."""
        d = dataclasses.asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Provenance":
        """Inverse of :meth:`to_json` (unknown keys go to ``extra``).

        Raises ``ValueError`` naming the field when ``d`` is not a mapping, lacks ``model_id``,
        ``fingerprint`` or ``d_model``, or holds a value of the wrong type (e.g. ``d_model: "abc"``).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"provenance must be a mapping, got {type(d).__name__}")
        missing = [k for k in _PROVENANCE_REQUIRED if k not in d]
        if missing:
            raise ValueError(f"provenance lacks {', '.join(repr(k) for k in missing)}")
        for name, want in _PROVENANCE_TYPES.items():
            if name in d and not _has_type(d[name], want):
                raise ValueError(f"provenance field {name!r} must be {want}, got {_short(d[name])}")
        if d.get("d_model") is not None and d["d_model"] <= 0:
            raise ValueError(f"provenance field 'd_model' must be positive, got {d['d_model']}")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        extra = dict(kw.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kw, extra=extra)


_PROVENANCE_REQUIRED = ("model_id", "fingerprint", "d_model")
_PROVENANCE_TYPES = {
    "model_id": "a string", "fingerprint": "a string", "d_model": "an integer", "name": "a string",
    "method": "a string", "positions": "a string", "n_samples": "an integer", "dataset_hash": "a string",
    "route": "a string", "expression": "a string", "library_version": "a string", "schema_version": "an integer",
    "extra": "an object (mapping) or null",
}


def _has_type(value: Any, want: str) -> bool:
    if want == "a string":
        return isinstance(value, str)
    if want == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return value is None or isinstance(value, Mapping)


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


class PersonaVector:
    """Directions in the residual stream, one per :class:`Site`, with :class:`Provenance`.

    ``directions`` is a float tensor ``[n_sites, d_model]`` aligned with ``sites`` (sorted).
    """

    __slots__ = ("_sites", "_dirs", "_prov")

    def __init__(self, sites: Iterable[Site | int | str], directions: torch.Tensor, provenance: Provenance) -> None:
        sites_t = tuple(Site.parse(s) for s in sites)
        if len(set(sites_t)) != len(sites_t):
            raise ValueError("Duplicate sites in PersonaVector")
        if directions.ndim != 2 or directions.shape[0] != len(sites_t):
            raise ValueError(f"directions must be [n_sites={len(sites_t)}, d_model], got {tuple(directions.shape)}")
        if directions.shape[1] != provenance.d_model:
            raise ValueError(f"directions have d_model={directions.shape[1]}, provenance says {provenance.d_model}")
        if not torch.isfinite(directions).all():
            raise ValueError("PersonaVector directions contain NaN or inf")
        order = sorted(range(len(sites_t)), key=lambda i: sites_t[i])
        object.__setattr__(self, "_sites", tuple(sites_t[i] for i in order))
        d = directions.detach()[order].clone()
        d.requires_grad_(False)
        object.__setattr__(self, "_dirs", d)
        object.__setattr__(self, "_prov", provenance)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PersonaVector is immutable: arithmetic and .replace() return new vectors")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle through the constructor (immutable slots have no settable state): vectors travel to other
        processes, e.g. the Ray actors of a sweep."""
        return (type(self), (self._sites, self._dirs, self._prov))

    # ------------------------------------------------------------------------------------------ accessors
    @classmethod
    def from_dict(cls, directions: Mapping[Site | int, torch.Tensor], provenance: Provenance) -> "PersonaVector":
        """Build from a ``{site: tensor}`` mapping."""
        sites = [Site.parse(s) for s in directions]
        return cls(sites, torch.stack([directions[s] for s in directions]).float(), provenance)

    @property
    def sites(self) -> tuple[Site, ...]:
        """Sites, sorted."""
        return self._sites

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers of the sites."""
        return tuple(s.layer for s in self._sites)

    @property
    def directions(self) -> torch.Tensor:
        """A copy of the ``[n_sites, d_model]`` tensor."""
        return self._dirs.clone()

    @property
    def provenance(self) -> Provenance:
        """The vector's provenance."""
        return self._prov

    @property
    def d_model(self) -> int:
        """Residual width."""
        return self._dirs.shape[1]

    def _index(self, site: Site | int | str) -> int:
        s = Site.parse(site)
        try:
            return self._sites.index(s)
        except ValueError:
            raise KeyError(f"{s} is not in this vector (sites: {', '.join(map(str, self._sites))})") from None

    def __getitem__(self, site: Site | int | str) -> torch.Tensor:
        return self._dirs[self._index(site)].clone()

    def __contains__(self, site: object) -> bool:
        try:
            return Site.parse(site) in self._sites  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return False

    def __len__(self) -> int:
        return len(self._sites)

    def items(self) -> list[tuple[Site, torch.Tensor]]:
        """(site, direction) pairs."""
        return [(s, self._dirs[i].clone()) for i, s in enumerate(self._sites)]

    def replace(self, **changes: Any) -> "PersonaVector":
        """Copy with provenance fields changed (e.g. ``name=``)."""
        return PersonaVector(self._sites, self._dirs, dataclasses.replace(self._prov, **changes))

    def at(self, sites: Iterable[Site | int | str] | Site | int | str) -> "PersonaVector":
        """Restrict to a subset of sites."""
        want = as_sites(sites)
        idx = [self._index(s) for s in want]
        return PersonaVector(want, self._dirs[idx], self._prov)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "PersonaVector":
        """Copy on another device/dtype."""
        return PersonaVector(self._sites, self._dirs.to(device=device, dtype=dtype), self._prov)

    def __repr__(self) -> str:
        p = self._prov
        layers = f"{self._sites[0]}..{self._sites[-1]}" if len(self) > 3 else ",".join(map(str, self._sites))
        return f"PersonaVector({p.name or p.expression or 'unnamed'!r}, sites={layers}, model={p.fingerprint}, method={p.method})"

    # ------------------------------------------------------------------------------------------ arithmetic
    def check_compatible(self, other: "PersonaVector") -> None:
        """Raise :class:`VectorMismatchError` unless ``other`` has the same model and sites."""
        a, b = self._prov, other._prov
        if a.fingerprint != b.fingerprint:
            raise VectorMismatchError(
                f"Vectors come from different models ({a.model_id} {a.fingerprint} vs {b.model_id} {b.fingerprint}); "
                "extract both on the same model"
            )
        if self._sites != other._sites:
            raise VectorMismatchError(
                f"Vectors have different sites ({[str(s) for s in self._sites]} vs {[str(s) for s in other._sites]}); "
                "use .at(sites) to align them"
            )

    def _combine(self, other: "PersonaVector", op: str) -> "PersonaVector":
        if not isinstance(other, PersonaVector):
            return NotImplemented  # type: ignore[return-value]
        self.check_compatible(other)
        d = self._dirs + other._dirs if op == "+" else self._dirs - other._dirs.to(self._dirs.dtype)
        expr = f"({self._label()} {op} {other._label()})"
        return PersonaVector(self._sites, d, dataclasses.replace(self._prov, name="", expression=expr, method="arithmetic"))

    def _label(self) -> str:
        return self._prov.name or self._prov.expression or "v"

    def __add__(self, other: "PersonaVector") -> "PersonaVector":
        return self._combine(other, "+")

    def __sub__(self, other: "PersonaVector") -> "PersonaVector":
        return self._combine(other, "-")

    def __mul__(self, k: float) -> "PersonaVector":
        if isinstance(k, torch.Tensor):
            k = float(k)
        if not isinstance(k, (int, float)):
            return NotImplemented  # type: ignore[return-value]
        return PersonaVector(self._sites, self._dirs * k,
                             dataclasses.replace(self._prov, name="", expression=f"{k:g}*{self._label()}", method="arithmetic"))

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> "PersonaVector":
        return self * (1.0 / k)

    def __neg__(self) -> "PersonaVector":
        return self * -1.0

    def norms(self) -> dict[Site, float]:
        """L2 norm of each site's direction."""
        return {s: float(n) for s, n in zip(self._sites, self._dirs.norm(dim=-1))}

    def normalized(self) -> "PersonaVector":
        """Unit-norm direction at every site."""
        n = self._dirs.norm(dim=-1, keepdim=True)
        if (n == 0).any():
            raise ValueError("Cannot normalize a zero direction")
        return PersonaVector(self._sites, self._dirs / n,
                             dataclasses.replace(self._prov, expression=f"unit({self._label()})"))

    def cosine(self, other: "PersonaVector") -> dict[Site, float]:
        """Cosine similarity with ``other`` per site."""
        self.check_compatible(other)
        c = torch.nn.functional.cosine_similarity(self._dirs.double(), other._dirs.double(), dim=-1)
        return {s: float(x) for s, x in zip(self._sites, c)}

    def project(self, activations: torch.Tensor, site: Site | int | str) -> torch.Tensor:
        """Scalar projection of activations ``[..., d_model]`` onto the unit direction at ``site``."""
        u = self[site]
        u = u / u.norm()
        if activations.shape[-1] != self.d_model:
            raise ValueError(f"activations have width {activations.shape[-1]}, vector has d_model={self.d_model}")
        return activations.to(u.dtype) @ u.to(activations.device)

    @staticmethod
    def interpolate(a: "PersonaVector", b: "PersonaVector", t: float) -> "PersonaVector":
        """``(1 - t) * a + t * b``."""
        return (1.0 - t) * a + t * b

    # ------------------------------------------------------------------------------------------ io
    def save(self, directory: str | Path, overwrite: bool | None = None) -> Path:
        """Write ``vector.safetensors`` + ``vector.json`` atomically into ``directory``; returns the directory.

        Never deletes a file it did not write. By default (``overwrite=None``) a new or empty directory is
        used and a previous vector there is replaced (its two files only); a non-empty directory holding no
        saved vector is refused unless ``overwrite=True`` (which writes the two files alongside the others);
        ``overwrite=False`` refuses any non-empty directory. See :func:`persona_vectors.io.save_vector`.
        """
        return _vector_file.save_vector(self, directory, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path, model: Any = None, *, allow_other_model: bool = False) -> "PersonaVector":
        """Load a saved vector, verifying integrity and (if ``model`` is given) the weight fingerprint.

        Raises :class:`~persona_vectors.io.VectorFileError` for a missing, damaged, unsafe (pickle) or
        inconsistent vector, and :class:`VectorMismatchError` when ``model`` is given and the vector belongs
        to another model (``allow_other_model=True`` accepts another fingerprint of the same architecture).
        """
        vec = _vector_file.read_vector(directory, build=cls, provenance_from_json=Provenance.from_json)
        if model is not None:
            check_vector_model(vec, model, allow_other_model=allow_other_model)
        return vec


def check_vector_model(vec: PersonaVector, model: Any, *, allow_other_model: bool = False) -> None:
    """Raise unless ``vec`` was extracted on ``model`` (same d_model always; same fingerprint unless overridden)."""
    info = model.info
    if vec.d_model != info.d_model:
        raise VectorMismatchError(
            f"Vector has d_model={vec.d_model} but model {info.model_id} has d_model={info.d_model}: "
            "it belongs to another architecture"
        )
    for s in vec.sites:
        if s.layer >= info.n_layers:
            raise VectorMismatchError(f"Vector site {s} is out of range for a model with {info.n_layers} layers")
    if vec.provenance.fingerprint != info.fingerprint and not allow_other_model:
        raise VectorMismatchError(
            f"Vector was extracted on {vec.provenance.model_id} (fingerprint {vec.provenance.fingerprint}), "
            f"not on the given model {info.model_id} ({info.fingerprint}); pass allow_other_model=True to use it anyway"
        )
