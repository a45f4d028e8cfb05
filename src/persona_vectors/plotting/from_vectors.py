"""A persona map built straight from role vectors, coloured by the catalogue, with sweep results overlaid.

:func:`map_from_vectors` fits the spaces and draws the map (:func:`catalogue_categories` colours roles by
category, :func:`assistant_axis` is the assistant-minus-mean-of-roles direction per layer);
:func:`overlay_results` adds a sweep's rows onto it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..space import PersonaSpace
from ..vector import PersonaVector
from .maps import DEFAULT_HIGHLIGHT, add_trajectory, persona_map

__all__ = [
    "assistant_axis",
    "catalogue_categories",
    "map_from_vectors",
    "overlay_results",
]


ASSISTANT_NAMES: tuple[str, ...] = ("ai_assistant", "assistant", "default_assistant")


def catalogue_categories(names: Iterable[str]) -> dict[str, str]:
    """Category of each name from the role catalogue (:func:`persona_vectors.datasets.get_role`).

    Assistant conditions (``ai_assistant`` etc.) get ``"assistant"``; unknown names get ``"other"``.
    """
    from ..datasets import DataError, get_role, load_assistant_prompts

    try:
        assistant_ids = {a.id for a in load_assistant_prompts()} | set(ASSISTANT_NAMES)
    except (DataError, OSError):  # pragma: no cover - shipped data is validated elsewhere
        assistant_ids = set(ASSISTANT_NAMES)
    out: dict[str, str] = {}
    for n in names:
        if n in assistant_ids:
            out[n] = "assistant"
            continue
        try:
            out[n] = get_role(n).category
        except DataError:
            out[n] = "other"
    return out


def assistant_axis(role_vectors: Mapping[str, PersonaVector], layers: Iterable[int]) -> dict[int, np.ndarray] | None:
    """``assistant − mean(other roles)`` per layer, when the vectors include an assistant (``ai_assistant``...)."""
    from ..sites import Site

    name = next((n for n in ASSISTANT_NAMES if n in role_vectors), None)
    if name is None:
        return None
    others = [v for n, v in role_vectors.items() if n != name]
    if not others:
        return None
    out = {}
    for L in layers:
        s = Site(L)
        a = role_vectors[name][s].double().numpy()
        m = np.mean([v[s].double().numpy() for v in others], axis=0)
        if np.linalg.norm(a - m) > 0:
            out[L] = a - m
    return out or None


def map_from_vectors(
    role_vectors: Mapping[str, PersonaVector],
    layers: Iterable[int] | None = None,
    *,
    dims: int = 2,
    categories: Mapping[str, str] | None = None,
    hover: Mapping[str, str] | None = None,
    axis: Any = "auto",
    n_components: int = 3,
    normalize: bool = False,
    highlight: Sequence[str] = DEFAULT_HIGHLIGHT,
    title: str = "Persona space",
) -> tuple[go.Figure, dict[int, PersonaSpace]]:
    """Fit a :class:`PersonaSpace` per layer (default: every common ``resid_post`` layer) and draw the map.

    ``categories`` default to the catalogue's; ``hover`` defaults to each vector's
    ``provenance.extra["sample_response"]``; ``axis="auto"`` uses :func:`assistant_axis` (None to omit).
    Returns ``(figure, {layer: space})``.
    """
    from ..space import common_sites

    if len(role_vectors) < 2:
        raise ValueError(f"A persona map needs at least 2 role vectors, got {len(role_vectors)}")
    common = [s.layer for s in common_sites(role_vectors.values()) if s.kind == "resid_post"]
    if not common:
        raise ValueError("The role vectors share no resid_post layer; re-extract them at common layers")
    if layers is None:
        chosen = common
    else:
        chosen = sorted({int(x) for x in layers})
        missing = [L for L in chosen if L not in common]
        if missing:
            raise ValueError(f"Layer(s) {missing} are not in every role vector (common layers: {common})")
    if not chosen:
        raise ValueError("No layers to map")
    names = list(role_vectors)
    cats = dict(categories) if categories is not None else catalogue_categories(names)
    if hover is None:
        hover = {}
        for n, v in role_vectors.items():
            extra = v.provenance.extra or {}
            sample = extra.get("sample_response") or extra.get("sample")
            if isinstance(sample, str):
                hover[n] = sample
    ax = assistant_axis(role_vectors, chosen) if isinstance(axis, str) and axis == "auto" else axis
    if isinstance(ax, PersonaVector):
        fp = next(iter(role_vectors.values())).provenance
        if ax.provenance.fingerprint != fp.fingerprint:
            from ..vector import VectorMismatchError

            raise VectorMismatchError(
                f"The axis vector comes from {ax.provenance.model_id} ({ax.provenance.fingerprint}) but the role "
                f"vectors from {fp.model_id} ({fp.fingerprint})")
        ax = {s.layer: ax[s].double().numpy() for s in ax.sites if s.kind == "resid_post" and s.layer in chosen}
    spaces: dict[int, PersonaSpace] = {}
    for L in chosen:
        anchor = ax.get(L) if isinstance(ax, Mapping) else ax
        spaces[L] = PersonaSpace(n_components=max(n_components, dims), normalize=normalize).fit(
            role_vectors, site=L, anchor=anchor)
    fig = persona_map(spaces, cats, hover, highlight=highlight, axis=ax, dims=dims, title=title)
    return fig, spaces


def overlay_results(fig: go.Figure, spaces: Mapping[int, PersonaSpace], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Draw sweep rows carrying ``mean_activation`` as trajectories (one per ``condition``) on a map.

    ``mean_activation`` may be ``{site or layer: [d]}`` or a plain ``[d]`` list (then the row's
    ``layer``/``site`` says where, or the map must have one layer). Points are labelled by ``alpha``
    (else ``t``/``step``/``label``). Returns notes about what was drawn or skipped (never raises on rows).
    """
    from ..sites import Site

    rows = [dict(r) for r in rows]
    notes: list[str] = []
    with_act = [r for r in rows if r.get("mean_activation") is not None]
    if not with_act:
        return [f"no trajectory: none of the {len(rows)} result rows has a mean_activation field; rerun the sweep "
                "with record_activations = true in its config (see examples/sweep.toml) into a new --out"]
    paths: dict[tuple[str, int], list[tuple[Any, str, np.ndarray]]] = {}
    skipped = 0
    for r in with_act:
        ma = r["mean_activation"]
        per_layer: dict[int, Any] = {}
        try:
            if isinstance(ma, Mapping):
                for k, v in ma.items():
                    s = Site.parse(k)
                    if s.kind == "resid_post":
                        per_layer[s.layer] = v
            else:
                where = r.get("site", r.get("layer"))
                if where is not None:
                    per_layer[Site.parse(where).layer] = ma
                elif len(spaces) == 1:
                    per_layer[next(iter(spaces))] = ma
        except (ValueError, TypeError):
            skipped += 1
            continue
        cond = str(r.get("condition", r.get("name", r.get("vector", "sweep"))))  # sweep rows: one path per vector
        key_val = next((r[k] for k in ("alpha", "t", "step", "label") if r.get(k) is not None), len(paths))
        label = f"α={key_val:g}" if "alpha" in r and isinstance(key_val, (int, float)) else str(key_val)
        used = False
        for L, v in per_layer.items():
            if L not in spaces:
                continue
            vec = np.asarray(v, dtype=np.float64).reshape(-1)
            if vec.shape[0] != spaces[L].components_.shape[1]:
                continue
            paths.setdefault((cond, L), []).append((key_val, label, vec))
            used = True
        if not used:
            skipped += 1
    if skipped:
        notes.append(f"skipped {skipped} result row(s) whose mean_activation matches no mapped layer/width")
    colors = ["#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    cond_index: dict[str, int] = {}
    for (cond, L), pts in paths.items():
        ci = cond_index.setdefault(cond, len(cond_index))
        try:
            pts = sorted(pts, key=lambda p: float(p[0]))
        except (TypeError, ValueError):
            pass
        add_trajectory(fig, spaces[L], [p[2] for p in pts], [p[1] for p in pts], name=cond,
                       color=colors[ci % len(colors)], layer=L)
        notes.append(f"trajectory {cond!r} at layer {L}: {len(pts)} point(s)")
    if not paths:
        notes.append("no trajectory drawn: no usable mean_activation rows")
    return notes
