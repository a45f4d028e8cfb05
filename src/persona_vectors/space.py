"""Persona space: PCA over many role vectors at one site, scikit-learn style.

>>> space = PersonaSpace(n_components=3).fit(role_vectors, site=14)      # doctest: +SKIP
>>> space.coords_[:, :2]                  # each role's position on PC1/PC2       # doctest: +SKIP
>>> space.transform(steered_mean_activation)                                     # doctest: +SKIP
>>> space.axis_alignment(assistant_axis)  # |cos| of the assistant axis with each PC  # doctest: +SKIP

Conventions
-----------
- ``fit`` takes a mapping ``name -> PersonaVector`` (read at ``site``; the one site if the vectors have a
  single common site) or an array ``[n_roles, d_model]`` with optional ``names``.
- ``normalize=True`` L2-normalizes every row (training rows and anything passed to ``transform``) first, so
  the map shows directions only, not magnitudes.
- ``center=True`` (default) is ordinary PCA around the role mean ``mean_``. ``center=False`` finds the
  principal directions of the raw second moment ``X^T X`` (``mean_`` is zero; ``explained_variance_ratio_``
  is then a share of ``||X||_F^2``); it is computed with the same :class:`sklearn.decomposition.PCA` run on
  the symmetrized data ``[X; -X]``, whose mean is exactly zero.
- **Sign convention** (PCA signs are arbitrary; these make them reproducible): each component is flipped so
  that its largest-magnitude loading is positive (ties: the lowest coordinate index). If ``fit`` gets an
  ``anchor`` direction (e.g. the assistant axis), PC1 is instead oriented so that the anchor projects
  positively on it (unless the anchor is orthogonal to PC1 to 1e-8, when the loading rule applies).
  The same data therefore always gives the same signs, whichever solver path or row order is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .sites import Site
from .vector import PersonaVector, VectorMismatchError

__all__ = ["PersonaSpace", "role_matrix", "common_sites", "load_role_vectors", "synthetic_role_vectors"]


def _to_numpy(x: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", dtype=torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return np.asarray(x, dtype=np.float64)


def common_sites(vectors: Iterable[PersonaVector]) -> tuple[Site, ...]:
    """Sites present in every vector (sorted)."""
    vecs = list(vectors)
    if not vecs:
        return ()
    common = set(vecs[0].sites)
    for v in vecs[1:]:
        common &= set(v.sites)
    return tuple(sorted(common))


def _check_same_model(vectors: Mapping[str, PersonaVector]) -> None:
    items = list(vectors.items())
    name0, v0 = items[0]
    for name, v in items[1:]:
        if v.provenance.fingerprint != v0.provenance.fingerprint:
            raise VectorMismatchError(
                f"Role vectors come from different models: {name0!r} from {v0.provenance.model_id} "
                f"({v0.provenance.fingerprint}) but {name!r} from {v.provenance.model_id} ({v.provenance.fingerprint}); "
                "build a persona space from vectors of one model"
            )
        if v.d_model != v0.d_model:
            raise VectorMismatchError(f"Role vectors have different widths ({v0.d_model} vs {v.d_model})")


def _resolve_site(vectors: Mapping[str, PersonaVector], site: Site | int | str | None) -> Site:
    sites = common_sites(vectors.values())
    if site is None:
        if len(sites) == 1:
            return sites[0]
        if not sites:
            raise ValueError("The role vectors share no site; re-extract them at a common layer")
        raise ValueError(
            f"The role vectors share {len(sites)} sites ({', '.join(map(str, sites[:6]))}"
            f"{', ...' if len(sites) > 6 else ''}); pass site=... to choose one"
        )
    s = Site.parse(site)
    if s not in sites:
        missing = [n for n, v in vectors.items() if s not in v]
        raise KeyError(f"Site {s} is missing from {len(missing)} role vector(s) (e.g. {missing[0]!r}); "
                       f"common sites: {', '.join(map(str, sites)) or 'none'}")
    return s


def role_matrix(role_vectors: Mapping[str, PersonaVector], site: Site | int | str | None = None) -> tuple[list[str], np.ndarray]:
    """Stack the role vectors' directions at ``site`` into ``(names, X [n_roles, d_model])`` (float64).

    ``site=None`` works when the vectors share exactly one site. Vectors from different models
    (fingerprints) raise :class:`~persona_vectors.vector.VectorMismatchError`.
    """
    if not role_vectors:
        raise ValueError("No role vectors given: pass a mapping name -> PersonaVector with at least two roles")
    for name, v in role_vectors.items():
        if not isinstance(v, PersonaVector):
            raise TypeError(f"role_vectors[{name!r}] is a {type(v).__name__}, not a PersonaVector")
    _check_same_model(role_vectors)
    s = _resolve_site(role_vectors, site)
    names = [str(n) for n in role_vectors]
    X = np.stack([_to_numpy(v[s]) for v in role_vectors.values()])
    return names, X


def _unit_rows(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise ValueError("Cannot L2-normalize a zero vector (normalize=True); drop the zero role vector")
    return X / n


class PersonaSpace(BaseEstimator):
    """PCA of role vectors ("persona space"); see the module docstring for conventions.

    Parameters
    ----------
    n_components : int, default 3
        Number of principal components (clamped to ``min(n_roles, d_model)``; the value used is
        ``n_components_``).
    center : bool, default True
        Subtract the role mean before PCA (``False``: uncentered second-moment directions).
    normalize : bool, default False
        L2-normalize each role vector (and each transformed input) first.

    Attributes (after ``fit``)
    --------------------------
    components_ : ndarray [n_components_, d_model]   unit principal axes, sign-fixed
    explained_variance_ratio_ : ndarray [n_components_]
    mean_ : ndarray [d_model]                         (zeros when ``center=False``)
    names_ : list[str]                                role names, row order of ``coords_``
    site_ : Site | None                               site the vectors were read at (None for arrays)
    coords_ : ndarray [n_roles, n_components_]        training roles in PC coordinates
    n_components_ : int
    model_id_, fingerprint_ : str | None              provenance of the fitted vectors (None for arrays)
    """

    def __init__(self, n_components: int = 3, center: bool = True, normalize: bool = False) -> None:
        self.n_components = n_components
        self.center = center
        self.normalize = normalize

    # ------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        vectors: Mapping[str, PersonaVector] | np.ndarray | Any,
        names: Sequence[str] | None = None,
        site: Site | int | str | None = None,
        anchor: Any = None,
    ) -> "PersonaSpace":
        """Fit on a mapping ``name -> PersonaVector`` (at ``site``) or an array ``[n, d]``; returns self.

        ``anchor`` (array/tensor ``[d]`` or a PersonaVector read at the same site) orients PC1 so the anchor
        projects positively on it.
        """
        from sklearn.decomposition import PCA

        model_id = fingerprint = None
        if isinstance(vectors, Mapping):
            role_names, X = role_matrix(vectors, site)
            s: Site | None = _resolve_site(vectors, site)
            first = next(iter(vectors.values()))
            model_id, fingerprint = first.provenance.model_id, first.provenance.fingerprint
            if names is not None:
                raise ValueError("names= is only for array input; a mapping already names its rows")
        else:
            X = _to_numpy(vectors)
            if X.ndim != 2:
                raise ValueError(f"fit expects a mapping of PersonaVectors or an array [n_roles, d_model], got shape {X.shape}")
            role_names = [str(n) for n in names] if names is not None else [f"role_{i}" for i in range(len(X))]
            if len(role_names) != len(X):
                raise ValueError(f"{len(role_names)} names for {len(X)} rows")
            s = Site.parse(site) if site is not None else None
        if len(set(role_names)) != len(role_names):
            raise ValueError("Role names must be unique")
        if not isinstance(self.n_components, (int, np.integer)) or isinstance(self.n_components, bool) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {self.n_components!r}")
        n, d = X.shape
        if n < 2:
            raise ValueError(f"A persona space needs at least 2 roles, got {n}")
        if not np.all(np.isfinite(X)):
            raise ValueError("Role vectors contain NaN or inf")
        if self.normalize:
            X = _unit_rows(X)
        k = int(min(self.n_components, n, d))

        if self.center:
            pca = PCA(n_components=k, svd_solver="full")
            pca.fit(X)
            mean = pca.mean_.copy()
        else:
            pca = PCA(n_components=k, svd_solver="full")
            pca.fit(np.concatenate([X, -X]))
            mean = np.zeros(d)
        comps = np.array(pca.components_, dtype=np.float64)
        comps /= np.linalg.norm(comps, axis=1, keepdims=True)

        # deterministic signs
        for i in range(k):
            sign = 0.0
            if i == 0 and anchor is not None:
                a = self._as_rows(anchor, s, d, check_model=(fingerprint, model_id))[0]
                an = np.linalg.norm(a)
                if an > 0:
                    dot = float(comps[0] @ a) / an
                    if abs(dot) > 1e-8:
                        sign = np.sign(dot)
            if sign == 0.0:
                j = int(np.argmax(np.abs(comps[i])))
                sign = 1.0 if comps[i, j] >= 0 else -1.0
            comps[i] *= sign

        self.components_ = comps
        self.explained_variance_ratio_ = np.array(pca.explained_variance_ratio_, dtype=np.float64)
        self.explained_variance_ = np.array(pca.explained_variance_, dtype=np.float64)
        self.mean_ = mean
        self.names_ = list(role_names)
        self.site_ = s
        self.n_components_ = k
        self.n_features_in_ = d
        self.model_id_ = model_id
        self.fingerprint_ = fingerprint
        self.coords_ = (X - mean) @ comps.T
        return self

    def fit_transform(self, vectors: Any, names: Sequence[str] | None = None, site: Site | int | str | None = None,
                      anchor: Any = None) -> np.ndarray:
        """``fit(...)`` then the training roles' coordinates (``coords_``)."""
        return self.fit(vectors, names=names, site=site, anchor=anchor).coords_.copy()

    # ------------------------------------------------------------------------------------------ transform
    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise NotFittedError("This PersonaSpace is not fitted yet: call fit(role_vectors) first")

    def _as_rows(self, X: Any, site: Site | None, d: int, check_model: tuple[str | None, str | None] = (None, None)) -> np.ndarray:
        fingerprint, model_id = check_model
        if isinstance(X, PersonaVector):
            if fingerprint is not None and X.provenance.fingerprint != fingerprint:
                raise VectorMismatchError(
                    f"Vector {X!r} comes from {X.provenance.model_id} ({X.provenance.fingerprint}), but this space "
                    f"was fitted on {model_id} ({fingerprint})"
                )
            if site is None:
                if len(X) != 1:
                    raise ValueError("This space was fitted on an array (no site): pass an array, or a one-site vector")
                rows = _to_numpy(X.directions)
            else:
                rows = _to_numpy(X[site])[None, :]
        else:
            rows = _to_numpy(X)
            if rows.ndim == 1:
                rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != d:
            raise ValueError(f"Expected vectors of width {d}, got shape {tuple(rows.shape)}")
        return rows

    def transform(self, X: Any) -> np.ndarray:
        """Coordinates of ``X`` in the fitted space.

        ``X``: array/tensor ``[n, d]`` → ``[n, k]``; a 1-D ``[d]`` array/tensor or a PersonaVector (read at
        ``site_``) → ``[k]``; a mapping ``name -> any of those`` → ``[n, k]`` in the mapping's order.
        Inputs get the same ``normalize``/centering as the training roles.
        """
        self._check_fitted()
        d = self.components_.shape[1]
        chk = (self.fingerprint_, self.model_id_)
        if isinstance(X, Mapping):
            if not X:
                return np.zeros((0, self.n_components_))
            rows = np.concatenate([self._as_rows(v, self.site_, d, chk) for v in X.values()])
            single = False
        else:
            single = True if isinstance(X, PersonaVector) else _to_numpy(X).ndim == 1
            rows = self._as_rows(X, self.site_, d, chk)
        if not np.all(np.isfinite(rows)):
            raise ValueError("Input contains NaN or inf")
        if self.normalize:
            rows = _unit_rows(rows)
        out = (rows - self.mean_) @ self.components_.T
        return out[0] if single and len(out) == 1 else out

    def inverse_transform(self, coords: Any) -> np.ndarray:
        """Map PC coordinates back to the residual stream (``mean_ + coords @ components_``)."""
        self._check_fitted()
        c = _to_numpy(coords)
        return self.mean_ + c @ self.components_

    # ------------------------------------------------------------------------------------------ analysis
    def axis_alignment(self, axis_vector: Any) -> np.ndarray:
        """Cosine between ``axis_vector`` (array/tensor ``[d]`` or PersonaVector at ``site_``) and each component."""
        self._check_fitted()
        a = self._as_rows(axis_vector, self.site_, self.components_.shape[1], (self.fingerprint_, self.model_id_))
        if len(a) != 1:
            raise ValueError("axis_alignment takes one direction")
        a = a[0]
        n = np.linalg.norm(a)
        if n == 0:
            raise ValueError("The axis vector is zero")
        return self.components_ @ a / n

    def project_axis(self, axis_vector: Any) -> np.ndarray:
        """The direction ``axis_vector`` expressed in component coordinates (unit input; no centering)."""
        self._check_fitted()
        a = self._as_rows(axis_vector, self.site_, self.components_.shape[1], (self.fingerprint_, self.model_id_))[0]
        n = np.linalg.norm(a)
        if n == 0:
            raise ValueError("The axis vector is zero")
        return self.components_ @ (a / n)

    def extremes(self, k: int = 5, component: int = 0) -> dict[str, list[tuple[str, float]]]:
        """Roles at each end of a component: ``{"low": [(name, coord), ...], "high": [...]}``, most extreme first."""
        self._check_fitted()
        if not 0 <= component < self.n_components_:
            raise ValueError(f"component must be in [0, {self.n_components_}), got {component}")
        c = self.coords_[:, component]
        order = np.argsort(c, kind="stable")
        k = max(0, min(int(k), len(c)))
        low = [(self.names_[i], float(c[i])) for i in order[:k]]
        high = [(self.names_[i], float(c[i])) for i in order[::-1][:k]]
        return {"low": low, "high": high}


# ---------------------------------------------------------------------------------------------- helpers
def load_role_vectors(directory: str | Path) -> dict[str, PersonaVector]:
    """Load every saved PersonaVector under ``directory`` (one sub-directory per role; its name is the role).

    Sub-directories that are not saved vectors are skipped; an empty result raises. All vectors must come
    from one model.
    """
    from .io import META_FILE, load_vector

    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"No directory {root}: pass --vectors DIR holding one saved vector per role")
    out: dict[str, PersonaVector] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (sub / META_FILE).is_file():
            continue
        out[sub.name] = load_vector(sub)
    if not out:
        raise ValueError(f"{root} holds no saved role vectors (expected sub-directories with {META_FILE})")
    if len(out) < 2:
        raise ValueError(f"{root} holds only one role vector; a persona map needs at least two")
    _check_same_model(out)
    return out


def synthetic_role_vectors(
    names: Sequence[str] | None = None,
    categories: Mapping[str, str] | None = None,
    *,
    layers: Sequence[int] = (4, 8, 12),
    d_model: int = 64,
    seed: int = 0,
    model_id: str = "synthetic",
    include_assistant: bool = False,
) -> dict[str, PersonaVector]:
    """Clearly-fake role vectors with category structure, for demos and tests (no model needed).

    Each category gets a random centre per layer; roles scatter around it; ``ai_assistant``-like roles sit
    near a shared "assistant" direction (``include_assistant=True`` adds an ``ai_assistant`` vector on it).
    Provenance says ``model_id='synthetic'`` and method ``synthetic``.
    """
    import torch

    from .vector import Provenance

    if names is None:
        from .datasets import load_roles

        roles = load_roles()
        names = [r.name for r in roles]
        categories = {r.name: r.category for r in roles}
    categories = dict(categories or {})
    rng = np.random.default_rng(seed)
    cats = sorted({categories.get(n, "other") for n in names})
    assistant = rng.normal(size=(len(layers), d_model))
    centres = {c: rng.normal(size=(len(layers), d_model)) * 1.5 for c in cats}
    prov_base = dict(model_id=model_id, fingerprint=f"synthetic-{seed}", d_model=d_model, method="synthetic")
    out: dict[str, PersonaVector] = {}
    for n in names:
        c = categories.get(n, "other")
        rows = centres[c] + rng.normal(size=(len(layers), d_model)) * 0.7
        # layers drift: deeper layers separate categories more
        scale = np.linspace(0.6, 1.4, len(layers))[:, None]
        rows = rows * scale + (0.8 if c in ("ai_robot",) else -0.3) * assistant
        out[n] = PersonaVector([Site(L) for L in layers], torch.tensor(rows, dtype=torch.float32),
                               Provenance(name=n, **prov_base))  # type: ignore[arg-type]
    if include_assistant:
        rows = 2.0 * assistant + rng.normal(size=(len(layers), d_model)) * 0.3
        out["ai_assistant"] = PersonaVector([Site(L) for L in layers], torch.tensor(rows, dtype=torch.float32),
                                            Provenance(name="ai_assistant", **prov_base))  # type: ignore[arg-type]
    return out
