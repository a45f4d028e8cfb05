"""Plotly figure factories for persona maps and experiment charts.

Every function returns a :class:`plotly.graph_objects.Figure`; nothing is shown or written except by
:func:`write_html`, which writes one self-contained, offline HTML file (plotly.js inlined, no CDN, no MathJax).

- :func:`persona_map` — roles in persona space (2-D or 3-D), one trace per category (the legend filters),
  highlighted personas drawn larger and labelled, the assistant axis as a line through the origin, and a
  layer slider when several layers are given.
- :func:`trajectory` / :func:`add_trajectory` — a path (steering sweep, finetune checkpoints) on a map.
- :func:`cosine_heatmap`, :func:`variance_explained`, :func:`share_vs_alpha`, :func:`identity_vs_t`.

Every trace of a persona map carries ``meta={"layer": L, "kind": ...}``; the slider's steps are rebuilt
from it, so traces added later (e.g. by :func:`add_trajectory`) follow the slider.
"""

from __future__ import annotations

import html
import os
import re
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .space import PersonaSpace, role_matrix
from .vector import PersonaVector

__all__ = [
    "DEFAULT_HIGHLIGHT",
    "add_trajectory",
    "assistant_axis",
    "catalogue_categories",
    "category_colors",
    "cosine_heatmap",
    "identity_vs_t",
    "line_with_bands",
    "map_from_vectors",
    "overlay_results",
    "persona_map",
    "share_vs_alpha",
    "trajectory",
    "variance_explained",
    "write_html",
]

DEFAULT_HIGHLIGHT: tuple[str, ...] = ("adolf_hitler", "joseph_stalin", "voyager_1", "ai_assistant", "assistant")

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
)
_OTHER = "#9e9e9e"
_AXIS_COLOR = "#111111"


def category_colors(categories: Iterable[str]) -> dict[str, str]:
    """A stable colour per category (sorted order; ``other`` is grey)."""
    cats = sorted(set(categories) - {"other"})
    out = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(cats)}
    out["other"] = _OTHER
    return out


def _hover_text(text: str | None, width: int = 60, limit: int = 320) -> str:
    if not text:
        return ""
    t = " ".join(str(text).split())
    if len(t) > limit:
        t = t[: limit - 1].rstrip() + "…"
    return "<br>".join(html.escape(line) for line in textwrap.wrap(t, width))


def _pc_label(space: PersonaSpace, i: int) -> str:
    return f"PC{i + 1} ({100 * space.explained_variance_ratio_[i]:.1f}%)"


def _as_spaces(space_by_layer: Mapping[int, PersonaSpace] | PersonaSpace) -> dict[int, PersonaSpace]:
    if isinstance(space_by_layer, PersonaSpace):
        layer = space_by_layer.site_.layer if getattr(space_by_layer, "site_", None) is not None else 0
        spaces = {layer: space_by_layer}
    else:
        spaces = {int(k): v for k, v in dict(space_by_layer).items()}
    if not spaces:
        raise ValueError("persona_map needs at least one fitted PersonaSpace")
    for layer, sp in spaces.items():
        if not hasattr(sp, "components_"):
            raise ValueError(f"The PersonaSpace for layer {layer} is not fitted: call .fit(role_vectors) first")
    return dict(sorted(spaces.items()))


def _axis_for_layer(axis: Any, layer: int, space: PersonaSpace) -> np.ndarray | None:
    """The axis direction for ``layer``: from a dict, a PersonaVector (at ``space.site_``) or a single array."""
    if axis is None:
        return None
    if isinstance(axis, Mapping):
        if layer not in axis:
            return None
        v = axis[layer]
    else:
        v = axis
    if isinstance(v, PersonaVector):
        from .sites import Site

        site = space.site_ if space.site_ is not None else Site(layer)
        if site not in v:
            return None
        return np.asarray(v[site].double().numpy())
    from .space import _to_numpy

    a = _to_numpy(v).reshape(-1)
    return a


def _visible_masks(fig: go.Figure) -> tuple[list[int], dict[int, list[bool]]]:
    layers: list[int] = []
    for tr in fig.data:
        meta = tr.meta if isinstance(tr.meta, dict) else None
        if meta and "layer" in meta and meta["layer"] not in layers:
            layers.append(meta["layer"])
    masks = {}
    for L in layers:
        mask = []
        for tr in fig.data:
            meta = tr.meta if isinstance(tr.meta, dict) else None
            mask.append(True if not meta or "layer" not in meta else meta["layer"] == L)
        masks[L] = mask
    return layers, masks


def _sync_slider(fig: go.Figure) -> None:
    """Recompute the slider steps' visibility masks from the traces' ``meta["layer"]``."""
    layers, masks = _visible_masks(fig)
    if not fig.layout.sliders:
        return
    slider = fig.layout.sliders[0]
    steps = []
    for st in slider.steps:
        L = int(st.value)
        args = list(st.args)
        args[0] = {"visible": masks.get(L, [False] * len(fig.data))}
        steps.append(dict(label=st.label, value=st.value, method=st.method, args=args))
    fig.layout.sliders[0].steps = steps
    active = int(fig.layout.sliders[0].steps[slider.active or 0].value)
    for tr, vis in zip(fig.data, masks.get(active, [])):
        tr.visible = vis


def persona_map(
    space_by_layer: Mapping[int, PersonaSpace] | PersonaSpace,
    categories: Mapping[str, str] | None = None,
    hover: Mapping[str, str] | None = None,
    highlight: Sequence[str] = DEFAULT_HIGHLIGHT,
    axis: Any = None,
    dims: int = 2,
    *,
    title: str = "Persona space",
    layer: int | None = None,
    axis_name: str = "assistant axis",
    display: Mapping[str, str] | None = None,
) -> go.Figure:
    """Scatter of roles in persona space, coloured by category, with a layer slider for several layers.

    Args:
        space_by_layer: ``{layer: fitted PersonaSpace}`` or one fitted space.
        categories: role name → category (missing names → ``"other"``). One trace per category per layer.
        hover: role name → a sample response, shown in the hover label (escaped, wrapped, truncated).
        highlight: role names drawn with larger outlined markers and a text label.
        axis: the assistant axis: ``{layer: vector}``, a PersonaVector, or one vector (single layer). Drawn as
            a line through the origin along its projection onto the plotted components (2-D: with an arrow).
        dims: 2 or 3.
        layer: the initially shown layer (default: the first).
        display: role name → pretty name for labels/hover (default: the name itself).
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    spaces = _as_spaces(space_by_layer)
    for L, sp in spaces.items():
        if sp.n_components_ < dims:
            raise ValueError(f"The space for layer {L} has {sp.n_components_} components; dims={dims} needs {dims}")
    categories = dict(categories or {})
    hover = dict(hover or {})
    display = dict(display or {})
    hi = set(highlight or ())
    all_cats = sorted({categories.get(n, "other") for sp in spaces.values() for n in sp.names_})
    colors = category_colors(all_cats)
    layers = list(spaces)
    start = layers[0] if layer is None else int(layer)
    if start not in spaces:
        raise ValueError(f"layer={start} is not among the map's layers {layers}")

    fig = go.Figure()
    layout_updates: dict[int, dict[str, Any]] = {}
    for L, sp in spaces.items():
        coords = sp.coords_[:, :dims]
        names = sp.names_
        cat_of = [categories.get(n, "other") for n in names]
        for cat in all_cats:
            idx = [i for i, c in enumerate(cat_of) if c == cat]
            idx.sort(key=lambda i: names[i] in hi)  # highlighted last: the legend shows a plain marker
            if not idx:
                continue
            pts = coords[idx]
            nm = [names[i] for i in idx]
            is_hi = [n in hi for n in nm]
            custom = [[display.get(n, n), cat, _hover_text(hover.get(n))] for n in nm]
            marker = dict(
                color=colors[cat],
                size=[15 if h else 8 for h in is_hi],
                line=dict(color=["#000000" if h else "rgba(255,255,255,0.9)" for h in is_hi],
                          width=[2.5 if h else 0.8 for h in is_hi]),
                opacity=0.9,
            )
            text = [display.get(n, n) if h else "" for n, h in zip(nm, is_hi)]
            hovertemplate = ("<b>%{customdata[0]}</b><br>category: %{customdata[1]}<br>"
                             "%{customdata[2]}<extra></extra>")
            common = dict(name=cat, legendgroup=cat, customdata=custom, hovertemplate=hovertemplate,
                          text=text, mode="markers+text" if any(is_hi) else "markers",
                          meta={"layer": L, "kind": "roles", "names": nm}, visible=(L == start))
            if dims == 2:
                fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], marker=marker, textposition="top center",
                                         textfont=dict(size=12, color="#111"), **common))
            else:
                marker3 = dict(marker, size=[9 if h else 4 for h in is_hi])
                marker3["line"] = dict(color="#000000", width=1)
                fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], marker=marker3,
                                           textfont=dict(size=11, color="#111"), **common))

        annotations: list[dict[str, Any]] = []
        a = _axis_for_layer(axis, L, sp)
        if a is not None:
            proj = sp.project_axis(a)[:dims]
            pn = float(np.linalg.norm(proj))
            cos1 = float(sp.axis_alignment(a)[0])
            if pn > 1e-6:
                u = proj / pn
                radius = float(np.max(np.linalg.norm(coords, axis=1))) or 1.0
                end = u * radius * 1.05
                label = f"{axis_name} (cos with PC1 = {cos1:+.2f})"
                line = dict(color=_AXIS_COLOR, width=2, dash="dash")
                common = dict(name=axis_name, legendgroup="__axis__", hoverinfo="skip", showlegend=True,
                              meta={"layer": L, "kind": "axis"}, visible=(L == start))
                if dims == 2:
                    fig.add_trace(go.Scatter(x=[-end[0], end[0]], y=[-end[1], end[1]], mode="lines", line=line,
                                             **common))
                    annotations.append(dict(x=end[0], y=end[1], ax=0, ay=0, xref="x", yref="y", axref="x",
                                            ayref="y", showarrow=True, arrowhead=3, arrowsize=1.5, arrowwidth=2,
                                            arrowcolor=_AXIS_COLOR, text=""))
                    annotations.append(dict(x=end[0], y=end[1], xref="x", yref="y", showarrow=False, text=label,
                                            font=dict(size=12, color=_AXIS_COLOR), xanchor="left", yanchor="bottom",
                                            bgcolor="rgba(255,255,255,0.7)"))
                else:
                    fig.add_trace(go.Scatter3d(x=[-end[0], end[0]], y=[-end[1], end[1]], z=[-end[2], end[2]],
                                               mode="lines+text", text=["", label], line=dict(color=_AXIS_COLOR, width=5),
                                               **common))
        site = f"{sp.site_}" if sp.site_ is not None else f"layer {L}"
        upd: dict[str, Any] = {"title.text": f"{title} — {site} ({len(sp.names_)} roles)"}
        if dims == 2:
            upd.update({"xaxis.title.text": _pc_label(sp, 0), "yaxis.title.text": _pc_label(sp, 1),
                        "xaxis.autorange": True, "yaxis.autorange": True, "annotations": annotations})
        else:
            upd.update({"scene.xaxis.title.text": _pc_label(sp, 0), "scene.yaxis.title.text": _pc_label(sp, 1),
                        "scene.zaxis.title.text": _pc_label(sp, 2)})
        layout_updates[L] = upd

    fig.update_layout(
        template="plotly_white",
        hovermode="closest",
        legend=dict(title=dict(text="category (click to filter)"), itemsizing="constant"),
        margin=dict(l=60, r=20, t=70, b=90 if len(layers) > 1 else 50),
        height=720,
        meta={"persona_map": {"layers": layers, "dims": dims}},
    )
    s0 = layout_updates[start]
    if dims == 2:
        fig.update_layout(title=dict(text=s0["title.text"]), xaxis=dict(title=dict(text=s0["xaxis.title.text"]),
                          zeroline=True), yaxis=dict(title=dict(text=s0["yaxis.title.text"]), zeroline=True),
                          annotations=s0["annotations"])
    else:
        fig.update_layout(title=dict(text=s0["title.text"]), scene=dict(
            xaxis=dict(title=dict(text=s0["scene.xaxis.title.text"])),
            yaxis=dict(title=dict(text=s0["scene.yaxis.title.text"])),
            zaxis=dict(title=dict(text=s0["scene.zaxis.title.text"]))))
    if len(layers) > 1:
        _, masks = _visible_masks(fig)
        steps = [dict(label=str(L), value=str(L), method="update", args=[{"visible": masks[L]}, layout_updates[L]])
                 for L in layers]
        fig.update_layout(sliders=[dict(active=layers.index(start), steps=steps, currentvalue=dict(prefix="layer: "),
                                        pad=dict(t=40), x=0.02, len=0.96)])
    return fig


def _trajectory_coords(space: PersonaSpace, points: Any, labels: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(points, Mapping):
        labels = [str(k) for k in points] if labels is None else list(labels)
        coords = np.stack([np.atleast_1d(space.transform(v)) for v in points.values()])
    else:
        pts = list(points) if not hasattr(points, "shape") or np.ndim(points) != 2 else points
        coords = np.stack([np.atleast_1d(space.transform(v)) for v in pts])
        labels = [str(i) for i in range(len(coords))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(coords):
        raise ValueError(f"{len(labels)} labels for {len(coords)} trajectory points")
    return coords, list(labels)


def trajectory(
    space: PersonaSpace,
    points: Mapping[str, Any] | Sequence[Any] | np.ndarray,
    labels: Sequence[str] | None = None,
    name: str = "trajectory",
    *,
    dims: int = 2,
    color: str = "#000000",
    layer: int | None = None,
) -> go.Scatter | go.Scatter3d:
    """A path trace: ``points`` (``{label: vector [d]}`` or a list/array of vectors) projected into ``space``."""
    coords, labels = _trajectory_coords(space, points, labels)
    if coords.shape[1] < dims:
        raise ValueError(f"The space has {coords.shape[1]} components; dims={dims}")
    L = layer if layer is not None else (space.site_.layer if space.site_ is not None else 0)
    custom = [[name, lab] for lab in labels]
    common = dict(name=name, mode="lines+markers+text", text=labels, customdata=custom,
                  hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra></extra>",
                  meta={"layer": L, "kind": "trajectory"})
    if dims == 2:
        return go.Scatter(x=coords[:, 0], y=coords[:, 1], line=dict(color=color, width=2.5),
                          marker=dict(symbol="diamond", size=9, color=color), textposition="bottom right",
                          textfont=dict(size=10, color=color), **common)
    return go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], line=dict(color=color, width=5),
                        marker=dict(symbol="diamond", size=4, color=color), **common)


def add_trajectory(
    fig: go.Figure,
    space: PersonaSpace,
    points: Mapping[str, Any] | Sequence[Any] | np.ndarray,
    labels: Sequence[str] | None = None,
    name: str = "trajectory",
    *,
    color: str = "#000000",
    layer: int | None = None,
) -> go.Figure:
    """Add a :func:`trajectory` to a :func:`persona_map` figure (in place; returns ``fig``).

    ``space`` must be the space of the map's layer the points belong to; the trace follows the layer slider.
    """
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    dims = int(meta.get("persona_map", {}).get("dims", 3 if any(isinstance(t, go.Scatter3d) for t in fig.data) else 2))
    tr = trajectory(space, points, labels, name, dims=dims, color=color, layer=layer)
    fig.add_trace(tr)
    if fig.layout.sliders:
        _sync_slider(fig)
    return fig


def cosine_heatmap(
    vectors: Mapping[str, PersonaVector],
    site: Any = None,
    *,
    categories: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Pairwise cosine similarity of the vectors at ``site`` (sorted by category when given)."""
    names, X = role_matrix(vectors, site)
    if categories:
        order = sorted(range(len(names)), key=lambda i: (categories.get(names[i], "other"), names[i]))
        names = [names[i] for i in order]
        X = X[order]
    n = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(n == 0):
        raise ValueError("A zero vector has no cosine similarity; drop it")
    U = X / n
    C = np.clip(U @ U.T, -1.0, 1.0)
    from .space import _resolve_site

    s = _resolve_site(vectors, site)
    fig = go.Figure(go.Heatmap(z=C, x=names, y=names, zmin=-1, zmax=1, zmid=0, colorscale="RdBu_r",
                               colorbar=dict(title=dict(text="cos")),
                               hovertemplate="%{y} · %{x}<br>cos = %{z:.3f}<extra></extra>"))
    side = max(420, min(1400, 16 * len(names) + 200))
    fig.update_layout(template="plotly_white", title=dict(text=title or f"Cosine similarity at {s}"),
                      width=side + 80, height=side, yaxis=dict(autorange="reversed"))
    return fig


def variance_explained(space: PersonaSpace | Mapping[int, PersonaSpace], *, title: str = "Variance explained") -> go.Figure:
    """One space: bars per component plus the cumulative line. ``{layer: space}``: one line per component."""
    fig = go.Figure()
    if isinstance(space, PersonaSpace):
        r = space.explained_variance_ratio_
        xs = [f"PC{i + 1}" for i in range(len(r))]
        fig.add_trace(go.Bar(x=xs, y=r, name="per component", hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs, y=np.cumsum(r), name="cumulative", mode="lines+markers",
                                 hovertemplate="≤%{x}: %{y:.1%}<extra></extra>"))
        fig.update_layout(xaxis_title="component")
    else:
        spaces = _as_spaces(space)
        layers = list(spaces)
        k = max(sp.n_components_ for sp in spaces.values())
        for i in range(k):
            ys = [sp.explained_variance_ratio_[i] if i < sp.n_components_ else None for sp in spaces.values()]
            fig.add_trace(go.Scatter(x=layers, y=ys, name=f"PC{i + 1}", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=layers, y=[float(np.sum(sp.explained_variance_ratio_)) for sp in spaces.values()],
                                 name=f"PC1..{k} cumulative", mode="lines+markers", line=dict(dash="dash", color="#333")))
        fig.update_layout(xaxis_title="layer")
    fig.update_layout(template="plotly_white", title=dict(text=title), yaxis=dict(title=dict(text="share of variance"),
                      tickformat=".0%", rangemode="tozero"))
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def line_with_bands(
    rows: Iterable[Mapping[str, Any]],
    x: str,
    y: str,
    *,
    lo: str = "lo",
    hi: str = "hi",
    group: str = "condition",
    controls: Iterable[str] | None = None,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    percent: bool = False,
) -> go.Figure:
    """Generic lines (one per ``group`` value) with shaded ``[lo, hi]`` bands.

    Control groups (``controls``; default: names containing "control", "random" or "baseline") are drawn
    grey and dashed; a control with a single row (or no ``x``) becomes a horizontal band across the plot.
    """
    data = [dict(r) for r in rows]
    if not data:
        raise ValueError("No rows to plot")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in data:
        if y not in r:
            raise KeyError(f"Row {r} has no {y!r} field")
        groups.setdefault(str(r.get(group, y)), []).append(r)
    if controls is None:
        ctrl = {g for g in groups if re.search(r"control|random|baseline", g, re.I)}
    else:
        ctrl = set(controls)
    fig = go.Figure()
    ci = 0
    hlines: list[tuple[str, dict[str, Any]]] = []
    for g, rs in groups.items():
        is_ctrl = g in ctrl
        if is_ctrl and (len(rs) == 1 or all(r.get(x) is None for r in rs)):
            hlines.append((g, rs[0]))
            continue
        rs = sorted((r for r in rs if r.get(x) is not None), key=lambda r: float(r[x]))
        xs = [float(r[x]) for r in rs]
        ys = [float(r[y]) for r in rs]
        color = "#7f7f7f" if is_ctrl else _PALETTE[ci % len(_PALETTE)]
        if not is_ctrl:
            ci += 1
        if all(lo in r and hi in r and r[lo] is not None and r[hi] is not None for r in rs):
            los = [float(r[lo]) for r in rs]
            his = [float(r[hi]) for r in rs]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=his + los[::-1], fill="toself", fillcolor=_rgba(color, 0.18),
                                     line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=g,
                                     name=f"{g} interval"))
        fig.add_trace(go.Scatter(x=xs, y=ys, name=g, legendgroup=g, mode="lines+markers",
                                 line=dict(color=color, dash="dash" if is_ctrl else "solid", width=2),
                                 marker=dict(size=6, color=color)))
    for g, r in hlines:
        v = float(r[y])
        if r.get(lo) is not None and r.get(hi) is not None:
            fig.add_hrect(y0=float(r[lo]), y1=float(r[hi]), fillcolor="rgba(127,127,127,0.15)", line_width=0)
        fig.add_hline(y=v, line=dict(color="#7f7f7f", dash="dot", width=2),
                      annotation_text=g, annotation_position="top left")
    fig.update_layout(template="plotly_white", title=dict(text=title), hovermode="x unified",
                      xaxis=dict(title=dict(text=xlabel or x)),
                      yaxis=dict(title=dict(text=ylabel or y), tickformat=".0%" if percent else None))
    return fig


def share_vs_alpha(
    rows: Iterable[Mapping[str, Any]],
    label: str = "share",
    *,
    controls: Iterable[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Share (with ``lo``/``hi`` interval) vs steering strength ``alpha``, one line per ``condition``."""
    return line_with_bands(rows, "alpha", "share", controls=controls, title=title or f"{label} vs α",
                           xlabel="steering strength α", ylabel=label, percent=True)


def identity_vs_t(
    rows: Iterable[Mapping[str, Any]],
    *,
    y: str | None = None,
    label: str = "identity",
    controls: Iterable[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """A quantity (``identity``/``share``/``value`` field, or ``y=``) vs ``t`` (step, checkpoint, interpolation)."""
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("No rows to plot")
    if y is None:
        y = next((k for k in ("identity", "share", "value", "score") if k in rows[0]), None)
        if y is None:
            raise KeyError("Rows need an 'identity', 'share', 'value' or 'score' field (or pass y=)")
    vals = [float(r[y]) for r in rows if r.get(y) is not None]
    percent = bool(vals) and all(0.0 <= v <= 1.0 for v in vals) and y in ("share", "identity")
    return line_with_bands(rows, "t", y, controls=controls, title=title or f"{label} vs t", xlabel="t",
                           ylabel=label, percent=percent)


ASSISTANT_NAMES: tuple[str, ...] = ("ai_assistant", "assistant", "default_assistant")


def catalogue_categories(names: Iterable[str]) -> dict[str, str]:
    """Category of each name from the role catalogue (:func:`persona_vectors.datasets.get_role`).

    Assistant conditions (``ai_assistant`` etc.) get ``"assistant"``; unknown names get ``"other"``.
    """
    from .datasets import DataError, get_role, load_assistant_prompts

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
    from .sites import Site

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
    from .space import common_sites

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
            from .vector import VectorMismatchError

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
    from .sites import Site

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


_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//", re.I)


def write_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as one self-contained offline HTML file (atomic: temp file + ``os.replace``).

    plotly.js is inlined (``include_plotlyjs=True``), MathJax is off, the plotly logo link is hidden; the
    result is checked to load no remote script.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = fig.to_html(include_plotlyjs=True, full_html=True, include_mathjax=False,
                       config={"displaylogo": False, "responsive": True})
    if _REMOTE_SCRIPT.search(text):
        raise RuntimeError("The generated HTML would load a remote script; refusing to write it")
    from ._infra.files import atomic_file

    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
